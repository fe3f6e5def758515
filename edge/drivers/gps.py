"""GPS tracker: NMEA 0183 over a serial line (firmware_notes/nmea-gnss.md).

Positions are personal data: they are never logged at INFO, and their precision is cut to
``position_decimals`` before they leave the driver.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from typing import Any, ClassVar

from typing_extensions import override

from edge.config import GpsDevice
from edge.drivers._codecs import nmea
from edge.drivers._mqtt_device import DeviceBroker, next_report, parse_json, pick
from edge.drivers._serial import SerialPort
from edge.drivers.base import AlarmChange, DeviceState, Driver, Reading, Sink
from edge.drivers.gps_rules import Change, GpsRules
from edge.errors import DeviceError, DeviceUnavailableError

JSON_DEFAULTS = {"lat": "lat", "lon": "lon", "speed_kmh": "speed_kmh",
                 "course_deg": "course_deg", "time": "time"}
SILENCE_S = 5.0  # a receiver talks at least once a second; silence this long is an outage


class GpsDriver(Driver[GpsDevice]):
    """Read NMEA lines; report thinned positions and the tracker's alarms."""

    kind: ClassVar[str] = "gps"

    def __init__(self, config: GpsDevice, port: SerialPort | None = None, *,
                 broker: DeviceBroker | None = None) -> None:
        super().__init__(config, config.name)
        self._port = port
        self._broker = broker
        self._json_map = {**JSON_DEFAULTS, **config.json_map}
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

    async def _on_fix(self, fix: nmea.Fix, sink: Sink) -> None:
        now = time.monotonic()
        if self.config.transport == "serial" and fix.source != "json":
            # only the gateway's own receiver is a time source: a remote tracker's JSON is
            # whatever the tracker (or anyone who can publish) says (issue 19 #3); the
            # clock still checks plausibility and drift (edge/clock.py)
            sink.gnss_time(int(fix.utc.timestamp() * 1e9))
        await self._alarms(self.rules.on_fix(fix, now), sink)
        if not self.rules.due(fix, now):
            return
        digits = self.config.position_decimals
        values = {"lat": round(fix.lat, digits), "lon": round(fix.lon, digits),
                  "speed_kmh": fix.speed_kmh, "course_deg": fix.course_deg,
                  "mode": fix.mode, "fix_utc": fix.utc.isoformat()}
        self.stats.polls_ok += 1
        self.stats.last_ok_mono = now
        self.stats.last_values = {"mode": fix.mode}  # no raw position in status
        await sink.reading(Reading(self.name, values, time.time_ns(), time.monotonic_ns()))

    def fix_from_json(self, doc: dict[str, Any]) -> nmea.Fix:
        """Map a tracker's JSON (``json_map``) to a fix; raise ValueError when unusable."""
        m = self._json_map
        lat, lon = pick(doc, m["lat"]), pick(doc, m["lon"])
        if not isinstance(lat, int | float) or not isinstance(lon, int | float) or \
                isinstance(lat, bool) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"no usable position in {sorted(doc)}")
        if abs(lat) < 1e-6 and abs(lon) < 1e-6:
            raise ValueError("0,0 fake fix")
        stamp = pick(doc, m["time"])
        if isinstance(stamp, str):
            when = dt.datetime.fromisoformat(stamp)
        elif isinstance(stamp, int | float):  # epoch seconds, or milliseconds
            when = dt.datetime.fromtimestamp(stamp / 1000 if stamp > 1e11 else stamp, dt.UTC)
        else:
            when = dt.datetime.now(dt.UTC)
        if when.tzinfo is None:
            raise ValueError("time without a zone")
        speed, course = pick(doc, m["speed_kmh"]), pick(doc, m["course_deg"])
        return nmea.Fix(when.astimezone(dt.UTC), float(lat), float(lon),
                        float(speed) if isinstance(speed, int | float) else None,
                        float(course) if isinstance(course, int | float) else None, 2, "json")

    async def _run_mqtt(self, sink: Sink) -> None:
        assert self._broker is not None
        assert self.config.topic is not None
        link = await self._broker.connect(self.name, [self.config.topic])
        try:
            while True:
                item = await next_report(link, self.name, SILENCE_S * 60)
                if item is None:
                    continue  # a parked vehicle may stay silent; its alarms tick on reports
                await self._alarms(self.rules.on_tick(time.monotonic()), sink)
                try:
                    fix = self.fix_from_json(parse_json(self.name, item))
                except (DeviceError, ValueError):
                    self.rejected += 1
                    self.stats.parse_errors += 1
                    continue
                await self._on_fix(fix, sink)
        finally:
            await link.close()

    @override
    async def run(self, sink: Sink) -> None:
        if self.config.transport == "mqtt":
            await self._run_mqtt(sink)
            return
        assert self._port is not None
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
                if fix is not None:
                    await self._on_fix(fix, sink)
        finally:
            await self._port.close()
