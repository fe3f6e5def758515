"""GPS tracker: NMEA 0183 over a serial line (firmware_notes/nmea-gnss.md).

Positions are personal data: they are never logged at INFO, and their precision is cut to
``position_decimals`` before they leave the driver.
"""

from __future__ import annotations

import asyncio
import time
from typing import ClassVar

from typing_extensions import override

from edge.config import GpsDevice
from edge.drivers._codecs import nmea
from edge.drivers._serial import SerialPort
from edge.drivers.base import AlarmChange, DeviceState, Driver, Reading, Sink
from edge.drivers.gps_rules import Change, GpsRules
from edge.errors import DeviceUnavailableError

SILENCE_S = 5.0  # a receiver talks at least once a second; silence this long is an outage


class GpsDriver(Driver[GpsDevice]):
    """Read NMEA lines; report thinned positions and the tracker's alarms."""

    kind: ClassVar[str] = "gps"

    def __init__(self, config: GpsDevice, port: SerialPort) -> None:
        super().__init__(config, config.name)
        self._port = port
        self._tracker = nmea.NmeaTracker()
        self.rules = GpsRules(config)
        self.rejected = 0

    def handle_line(self, line: str) -> nmea.Fix | None:
        """Parse one line; count rejects; return a fix when one completes (no I/O)."""
        try:
            return self._tracker.feed(nmea.parse_sentence(line))
        except ValueError:
            self.rejected += 1
            self.stats.parse_errors += 1
            return None

    async def _alarms(self, changes: list[Change], sink: Sink) -> None:
        for c in changes:
            await sink.alarm(AlarmChange(self.name, c.kind, c.state, prio=1, severity=2,
                                         value=c.value, threshold=c.threshold, unit=c.unit))

    @override
    async def run(self, sink: Sink) -> None:
        reader, _writer = await self._port.open(self.name)
        try:
            while True:
                try:
                    async with asyncio.timeout(SILENCE_S):
                        raw = await reader.readuntil(b"\n")
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError) as exc:
                    if self.stats.state is not DeviceState.OFFLINE:
                        self.stats.state = DeviceState.OFFLINE
                        await sink.state(self.name, DeviceState.OFFLINE, f"silent: {exc!r}")
                    raise DeviceUnavailableError(self.name, "receiver silent") from exc
                except asyncio.LimitOverrunError:
                    await reader.read(65536)  # a runaway line without newline: discard
                    self.stats.parse_errors += 1
                    continue
                if self.stats.state is not DeviceState.ONLINE:
                    self.stats.state = DeviceState.ONLINE
                    await sink.state(self.name, DeviceState.ONLINE, "receiving")
                now = time.monotonic()
                await self._alarms(self.rules.on_tick(now), sink)
                fix = self.handle_line(raw.decode("ascii", "replace"))
                if fix is None:
                    continue
                sink.gnss_time(int(fix.utc.timestamp() * 1e9))
                await self._alarms(self.rules.on_fix(fix, now), sink)
                if not self.rules.due(fix, now):
                    continue
                digits = self.config.position_decimals
                values = {"lat": round(fix.lat, digits), "lon": round(fix.lon, digits),
                          "speed_kmh": fix.speed_kmh, "course_deg": fix.course_deg,
                          "mode": fix.mode, "fix_utc": fix.utc.isoformat()}
                self.stats.polls_ok += 1
                self.stats.last_ok_mono = now
                self.stats.last_values = {"mode": fix.mode}  # no raw position in status
                await sink.reading(Reading(self.name, values, time.time_ns(),
                                           time.monotonic_ns()))
        finally:
            await self._port.close()
