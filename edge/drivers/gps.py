"""GPS tracker: NMEA 0183 over a serial line (firmware_notes/nmea-gnss.md).

Positions are personal data: they are never logged at INFO, and their precision is cut to
``position_decimals`` before they leave the driver.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import ClassVar

from typing_extensions import override

from edge.config import GpsDevice
from edge.drivers._codecs import nmea
from edge.drivers._serial import SerialPort
from edge.drivers.base import DeviceState, Driver, Reading, Sink
from edge.errors import DeviceUnavailableError

SILENCE_S = 5.0  # a receiver talks at least once a second; silence this long is an outage
EARTH_M = 6_371_000.0


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(math.sqrt(a))


class GpsDriver(Driver[GpsDevice]):
    """Read NMEA lines; report a position when moved or after ``max_interval_s``."""

    kind: ClassVar[str] = "gps"

    def __init__(self, config: GpsDevice, port: SerialPort) -> None:
        super().__init__(config, config.name)
        self._port = port
        self._tracker = nmea.NmeaTracker()
        self._last: tuple[float, float, float] | None = None  # lat, lon, monotonic
        self.rejected = 0

    def _due(self, fix: nmea.Fix) -> bool:
        now = time.monotonic()
        if self._last is None:
            return True
        lat, lon, at = self._last
        moved = distance_m(lat, lon, fix.lat, fix.lon)
        return moved >= self.config.min_distance_m or now - at >= self.config.max_interval_s

    def handle_line(self, line: str) -> nmea.Fix | None:
        """Parse one line; count rejects; return a fix when one completes (no I/O)."""
        try:
            return self._tracker.feed(nmea.parse_sentence(line))
        except ValueError:
            self.rejected += 1
            self.stats.parse_errors += 1
            return None

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
                fix = self.handle_line(raw.decode("ascii", "replace"))
                if fix is None or not self._due(fix):
                    continue
                self._last = (fix.lat, fix.lon, time.monotonic())
                digits = self.config.position_decimals
                values = {"lat": round(fix.lat, digits), "lon": round(fix.lon, digits),
                          "speed_kmh": fix.speed_kmh, "course_deg": fix.course_deg,
                          "mode": fix.mode, "fix_utc": fix.utc.isoformat()}
                self.stats.polls_ok += 1
                self.stats.last_values = {"mode": fix.mode}  # no raw position in status
                await sink.reading(Reading(self.name, values, time.time_ns(),
                                           time.monotonic_ns()))
        finally:
            await self._port.close()
