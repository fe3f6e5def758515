"""GPS trackers: NMEA 0183 over a serial line, or JSON reports over MQTT.

A receiver on the gateway's serial port (firmware_notes/nmea-gnss.md) or a remote tracker
publishing on the southbound broker, one driver class each.

Positions are personal data: they are never logged at INFO, and their precision is cut to
``position_decimals`` before they leave the driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from edge.aux_writes import AuxWrites
from edge.drivers._codecs import json_doc, nmea
from edge.drivers._mqtt_device import DeviceBroker, next_report, parse_json, pick
from edge.drivers.base import AlarmChange, DeviceState, Driver, Reading, Sink, StateDocs, override
from edge.drivers.gps_rules import ALARMS, Change, GpsRules
from edge.drivers.kind import NO_BROKER, Kind, required
from edge.drivers.probe_trace import MAX_RECORDS, WireRecord
from edge.drivers.probe_trace import current as current_probe
from edge.errors import ConfigError, DeviceError, DeviceUnavailableError, StoreCorruptError
from edge.kinds.gps import GpsDevice
from edge.transports.serial import SerialPort

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.drivers.coverage import CoverageTracker
    from edge.drivers.transport_pool import Transports

JSON_DEFAULTS = {"lat": "lat", "lon": "lon", "speed_kmh": "speed_kmh",
                 "course_deg": "course_deg", "time": "time"}
# 2000-01-01 .. 2100-01-01: a tracker's epoch outside it is garbage (and 1e300 would overflow)
TRACKER_EPOCH_S = (946_684_800.0, 4_102_444_800.0)
SILENCE_S = 5.0  # a receiver talks at least once a second; silence this long is an outage
CYCLE_IDLE_S = 0.3  # receivers send a cycle as one burst; this much quiet ends it
PROBE_LISTEN_S = 3.0  # `edge probe`: three rounds of sentences at the usual 1 Hz
FIX_SKEW_S = 300.0  # work coverage: a fix's time this far from the clock is not believed
COVERAGE_SAVE_S = 60.0  # a restart loses at most this much of a shift's coverage
COVERAGE_FILE_MAX_BYTES = 1 << 20  # 40,000 pieces are 54 KB saved: more is not ours


@runtime_checkable
class CoverageSink(Protocol):
    """What the agent's sink adds for work coverage (edge/sink.py): the trusted clock, events."""

    def trusted_now_ns(self) -> tuple[int, bool]:
        """Return the best UTC time in ns and whether the clock is trusted (synced)."""
        ...

    async def work_coverage(self, device: str, report: dict[str, Any]) -> None:
        """Deliver an ended shift's ``work_coverage`` report (returns once it is durable)."""


class GpsDriver(Driver[GpsDevice]):
    """What both transports share: fixes to thinned positions, alarms and work coverage.

    Abstract: ``GpsSerialDriver`` reads a receiver's NMEA lines, ``GpsMqttDriver`` takes a
    remote tracker's JSON reports.
    """

    kind: ClassVar[str] = "gps"
    # Only the gateway's own receiver is a time source: a remote tracker's JSON is whatever
    # the tracker (or anyone who can publish) says (issue 19 #3). The clock still checks
    # plausibility and drift, see edge/clock.py.
    time_source: ClassVar[bool] = False

    def __init__(self, config: GpsDevice, *, utc_offset_h: int = 8) -> None:
        super().__init__(config, config.name)
        self.rules = GpsRules(config)
        self.rejected = 0
        # work coverage (issue 18 B): roads cut into pieces once, here; shifts in local time
        self.coverage: CoverageTracker | None = None
        if config.work is not None:
            # imported here: only a truck with work roads pays its ~0.8 MiB of RSS (D86)
            from edge.drivers.coverage import CoverageTracker  # noqa: PLC0415

            self.coverage = CoverageTracker(config.work, utc_offset_h=utc_offset_h)
        self._sink_seen: Sink | None = None
        self._coverage_sink: CoverageSink | None = None
        # the running shift is saved here, so an agent restart mid-shift keeps what was swept
        self.saved: StateDocs | None = None  # state_dir/coverage; set by the factory
        self._coverage_restored = False
        self._coverage_on_disk = True  # until a save knows better (a file from before)
        self._coverage_saved_mono = time.monotonic()
        self.aux_writes = AuxWrites(self.log)  # a full disk: counted, logged once (f14 #1)

    async def _alarms(self, changes: list[Change], sink: Sink) -> None:
        for c in changes:
            await sink.alarm(AlarmChange(self.name, c.kind, c.state, prio=1, severity=2,
                                         value=c.value, threshold=c.threshold, unit=c.unit))

    async def _on_fix(self, fix: nmea.Fix, sink: Sink) -> None:
        now = time.monotonic()
        if self.time_source and fix.source != "json":
            sink.gnss_time(int(fix.utc.timestamp() * 1e9))
        await self._alarms(self.rules.on_fix(fix, now), sink)
        if self.coverage is not None:  # every raw fix, before thinning
            now_s, trusted = self._clock(sink)
            # the fix's own time spaces fixes (a receiver's cycle, a tracker's buffered
            # reports); one far from the clock (a bad date, a stale backlog) gets the clock's
            fix_s = fix.utc.timestamp()
            if abs(fix_s - now_s) > FIX_SKEW_S:
                fix_s = now_s
            await self._coverage_done(self.coverage.on_fix(
                fix.lat, fix.lon, fix.speed_kmh, now_s, trusted=trusted, fix_s=fix_s), sink)
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

    def _clock(self, sink: Sink) -> tuple[float, bool]:
        """Return UTC seconds for shift boundaries, and whether the clock is trusted."""
        if sink is not self._sink_seen:  # an isinstance on a Protocol costs: once per sink
            self._sink_seen = sink
            self._coverage_sink = sink if isinstance(sink, CoverageSink) else None
        if self._coverage_sink is None:
            return time.time(), False
        now_ns, trusted = self._coverage_sink.trusted_now_ns()
        return now_ns / 1e9, trusted

    async def _coverage_tick(self, sink: Sink) -> None:
        if self.coverage is not None:
            now_s, trusted = self._clock(sink)
            await self._coverage_done(self.coverage.tick(now_s, trusted=trusted), sink)

    async def restore_coverage(self, sink: Sink) -> None:
        """Take back the shift saved before a restart (once; a bad file is a warning)."""
        if self._coverage_restored or self.coverage is None or self.saved is None:
            return
        self._coverage_restored = True
        try:
            doc = await asyncio.to_thread(self.saved.load, self.name)
        except StoreCorruptError as exc:
            self.log.warning("%s: saved work coverage unreadable (%s); the shift starts "
                             "afresh", self.name, exc)
            return
        if doc is None:
            return
        now_s, _trusted = self._clock(sink)
        why = self.coverage.restore(doc, now_s)
        if why is None:
            self.log.info("%s: work coverage of the running shift restored", self.name)
            await self._coverage_tick(sink)  # a shift that ended meanwhile is reported now
        else:
            self.log.warning("%s: saved work coverage not used: %s", self.name, why)

    async def save_coverage(self) -> None:
        """Write the running shift (off the loop; atomic), or remove the file when none."""
        if self.coverage is None or self.saved is None:
            return
        self._coverage_saved_mono = time.monotonic()
        snapshot = self.coverage.snapshot()
        if snapshot is None and not self._coverage_on_disk:
            return  # between shifts: nothing to write, nothing to remove
        self._coverage_on_disk = snapshot is not None
        try:
            await asyncio.to_thread(self.saved.save, self.name, snapshot)
        except OSError as exc:  # a full or read-only disk: coverage goes on in memory
            self.aux_writes.failed(f"{self.name}: work coverage {self.name}.json", exc)
        else:
            self.aux_writes.written(f"{self.name}: work coverage {self.name}.json")

    async def _coverage_done(self, report: dict[str, Any] | None, sink: Sink) -> None:
        if self.saved is not None and \
                time.monotonic() - self._coverage_saved_mono >= COVERAGE_SAVE_S:
            await self.save_coverage()
        if report is None:
            return
        covered = [road["covered_pct"] for road in report["roads"]]
        # road ids and shares only: positions are personal data (tests/test_privacy.py)
        self.log.info("%s: shift ended, %d roads, %.1f %% covered on average (clock %s)",
                      self.name, len(covered), sum(covered) / max(1, len(covered)),
                      report["clock"])
        self._clock(sink)
        if self._coverage_sink is not None:
            await self._coverage_sink.work_coverage(self.name, report)
        await self.save_coverage()  # durable in the outbox: the saved shift may go

    def coverage_report(self) -> dict[str, Any] | None:
        """Return the running shift's coverage, or the last ended shift's (``device.read``)."""
        if self.coverage is None:
            return None
        now_s, _trusted = self._clock(self._sink_seen) if self._sink_seen is not None \
            else (time.time(), False)
        return self.coverage.report(now_s)

    @override
    async def close(self) -> None:
        """Save the running shift: a stop or a reload keeps all of its coverage."""
        if self._coverage_restored:  # never overwrite a saved shift this run has not read
            await self.save_coverage()


class GpsSerialDriver(GpsDriver):
    """Read a receiver's NMEA lines from a serial port; its fixes are a time source."""

    time_source: ClassVar[bool] = True

    def __init__(self, config: GpsDevice, port: SerialPort, *, utc_offset_h: int = 8) -> None:
        super().__init__(config, utc_offset_h=utc_offset_h)
        self._port = port
        self._tracker = nmea.NmeaTracker()
        self._reading = False  # run() holds the port: a probe listens through the tap
        self._tap: asyncio.Queue[str] | None = None

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
        await self.restore_coverage(sink)
        reader, _writer = await self._port.open(self.name)
        self._reading = True
        try:
            while True:
                try:
                    # a cycle in progress is closed by a short pause: the receiver's burst for
                    # this second is over (its last RMC must not wait a whole cycle)
                    async with asyncio.timeout(CYCLE_IDLE_S if self._tracker.pending
                                               else SILENCE_S):
                        raw = await reader.readuntil(b"\n")
                except TimeoutError as exc:
                    if self._tracker.pending:
                        fix = self._tracker.flush()
                        if fix is not None:
                            await self._on_fix(fix, sink)
                        continue
                    await self._coverage_tick(sink)  # a shift ends also for a silent receiver
                    if self.stats.state is not DeviceState.OFFLINE:
                        self.stats.state = DeviceState.OFFLINE
                        await sink.state(self.name, DeviceState.OFFLINE, f"silent: {exc!r}")
                    raise DeviceUnavailableError(self.name, "receiver silent") from exc
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
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
                await self._coverage_tick(sink)
                if self._tap is not None:  # a probe is listening (bounded: it may drop)
                    with contextlib.suppress(asyncio.QueueFull):
                        self._tap.put_nowait(raw.decode("ascii", "replace"))
                fix = self.handle_line(raw.decode("ascii", "replace"))
                if fix is not None:
                    await self._on_fix(fix, sink)
        finally:
            self._reading = False
            await self._port.close()

    @override
    async def probe(self) -> dict[str, Any]:
        """Listen ``PROBE_LISTEN_S`` to the receiver: sentences, fix quality, satellites."""
        lines, runaway_bytes, listened_s = await (
            self._listen_tap() if self._reading else self._listen_port())
        # device.read of a truck: its shift's coverage (docs/work-coverage.md)
        extra = {} if self.coverage is None else {"work_coverage": self.coverage_report()}
        if not lines:
            # bytes that never make a line (a wrong baud rate, not an NMEA port) are not
            # silence: the technician checks the wiring, not the antenna (f14 #7)
            why = (f"no NMEA line: {runaway_bytes} bytes without a newline in "
                   f"{listened_s:.1f} s (wrong baud rate, or not an NMEA port?)"
                   if runaway_bytes else f"receiver silent for {listened_s:.1f} s")
            if extra:  # the coverage so far is known whatever the receiver does now
                return {"sentences": 0, "receiver": why, **extra}
            raise DeviceUnavailableError(self.name, why)
        status: dict[str, Any] = {}
        gga_alt: bool | None = None  # the last GGA with a fix: altitude or not
        valid = bad = 0
        trace = current_probe()
        link = f"serial {self.config.port}"
        for line in lines:
            try:
                sentence = nmea.parse_sentence(line)
                status.update(nmea.receiver_status(sentence))
                if sentence.type == "GGA":
                    gga_alt = nmea.gga_has_altitude(sentence)
            except ValueError as exc:
                bad += 1
                if trace is not None:
                    # positions are personal data, in a bad line too (review finding 5)
                    trace.add(WireRecord(link, None, "NMEA", error=(
                        f"{exc}: {nmea.without_position_text(line)!r}")))
                continue
            valid += 1
            if trace is not None:  # positions are personal data: shown blanked
                trace.add(WireRecord(link, None, "NMEA", raw=nmea.without_position(sentence)))
        mode = status.get("fix_mode")
        if mode is None and gga_alt is not None:  # no GSA: the tracker's rule (f14 #7)
            mode = f"{nmea.cycle_mode(0, has_alt=gga_alt)}D"
        return {"sentences": valid, "bad_lines": bad,
                "fix_quality": status.get("fix_quality", "no GGA heard"),
                "satellites": status.get("satellites"), "fix_mode": mode,
                "hdop": status.get("hdop"), **extra}

    async def _listen_tap(self) -> tuple[list[str], int, float]:
        """Return the lines the running driver read, 0 runaway bytes, the seconds listened."""
        tap: asyncio.Queue[str] = asyncio.Queue(maxsize=MAX_RECORDS)
        self._tap = tap
        try:
            await asyncio.sleep(PROBE_LISTEN_S)
        finally:
            self._tap = None
        return [tap.get_nowait() for _ in range(tap.qsize())], 0, PROBE_LISTEN_S

    async def _listen_port(self) -> tuple[list[str], int, float]:
        """Return the lines heard, the bytes that made no line, and the seconds listened."""
        reader, _writer = await self._port.open(self.name)
        lines: list[str] = []
        runaway_bytes = 0
        start = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_LISTEN_S):
                while len(lines) < MAX_RECORDS:
                    try:
                        raw = await reader.readuntil(b"\n")
                    except asyncio.LimitOverrunError:  # 64 KiB and no newline: go on listening
                        runaway_bytes += len(await reader.read(65536))
                        continue
                    lines.append(raw.decode("ascii", "replace"))
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # listened long enough, or the line ended: report what came
        finally:
            await self._port.close()
        return lines, runaway_bytes, time.monotonic() - start


class GpsMqttDriver(GpsDriver):
    """Take a remote tracker's JSON reports from the southbound broker.

    Raises ``ConfigError`` at construction for a device without ``topic`` (the loader
    refuses one first).
    """

    def __init__(self, config: GpsDevice, broker: DeviceBroker, *, utc_offset_h: int = 8
                 ) -> None:
        super().__init__(config, utc_offset_h=utc_offset_h)
        self._topic = required(config.name, "topic", config.topic)
        self._broker = broker
        self._json_map = {**JSON_DEFAULTS, **config.json_map}

    def fix_from_json(self, doc: dict[str, Any]) -> nmea.Fix:
        """Map a tracker's JSON (``json_map``) to a fix; raise ValueError when unusable.

        Position and time present but not usable refuse the fix; a bad speed or course is
        refused on its own (None). Each refused value is counted in ``bad_values``, never
        logged with its content (positions are personal data).
        """
        m = self._json_map
        lat, lon = self._number(doc, "lat"), self._number(doc, "lon")
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ValueError(f"no usable position in {sorted(doc)[:10]}")
        if abs(lat) < 1e-6 and abs(lon) < 1e-6:
            raise ValueError("0,0 fake fix")
        when = self._when(pick(doc, m["time"]))
        return nmea.Fix(when, lat, lon, self._number(doc, "speed_kmh"),
                        self._number(doc, "course_deg"), 2, "json")

    def _number(self, doc: dict[str, Any], key: str) -> float | None:
        value = pick(doc, self._json_map[key])
        if value is None:
            return None
        try:
            return json_doc.finite_number(value)
        except ValueError as exc:
            self.bad_value(key, str(exc))
            return None

    def _when(self, stamp: object) -> dt.datetime:
        if stamp is None:
            return dt.datetime.now(dt.UTC)
        try:
            if isinstance(stamp, str):
                when = dt.datetime.fromisoformat(stamp[:64])
                if when.tzinfo is None:
                    raise ValueError("time without a zone")  # noqa: TRY301
            else:  # epoch seconds, or milliseconds
                secs = json_doc.finite_number(stamp)
                secs = secs / 1000 if secs > 1e11 else secs
                if not TRACKER_EPOCH_S[0] <= secs <= TRACKER_EPOCH_S[1]:
                    raise ValueError("epoch time out of range")  # noqa: TRY301
                when = dt.datetime.fromtimestamp(secs, dt.UTC)
            when = when.astimezone(dt.UTC)
        except (ValueError, OverflowError, OSError) as exc:
            self.bad_value("time", str(exc)[:80])
            raise ValueError("unusable time") from exc
        return when

    @override
    async def run(self, sink: Sink) -> None:
        await self.restore_coverage(sink)
        link = await self._broker.connect(self.name, [self._topic])
        try:
            while True:
                item = await next_report(link, self.name, SILENCE_S * 60)
                await self._coverage_tick(sink)  # a shift ends also for a silent tracker
                if item is None:
                    continue  # a parked vehicle may stay silent; its alarms tick on reports
                await self._alarms(self.rules.on_tick(time.monotonic()), sink)
                try:
                    fix = self.fix_from_json(parse_json(self.name, item))
                except (DeviceError, ValueError) as exc:
                    self.rejected += 1
                    self.refused(str(exc)[:200])
                    continue
                await self._on_fix(fix, sink)
        finally:
            await link.close()

    @override
    async def probe(self) -> dict[str, Any]:
        """Return the shift's coverage (``device.read`` of a truck); DeviceError without work."""
        if self.coverage is not None:  # device.read of a truck: its shift's coverage
            return {"work_coverage": self.coverage_report()}
        raise DeviceError(self.name, "an MQTT tracker reports when it wakes; see its "
                                     "last values")


def _build(device: GpsDevice, config: EdgeConfig, transports: Transports) -> GpsDriver:
    offset_h = config.gateway.utc_offset_h  # work shifts are local time
    gps: GpsDriver
    if device.transport == "mqtt":
        if transports.broker is None:  # added by a reload: the broker starts at a restart
            raise ConfigError([f"{device.name}: {NO_BROKER}"])
        gps = GpsMqttDriver(device, transports.broker, utc_offset_h=offset_h)
    else:
        port = required(device.name, "port", device.port)
        gps = GpsSerialDriver(device, SerialPort(port, device.baud), utc_offset_h=offset_h)
    if transports.state is not None:
        gps.saved = transports.state("coverage", COVERAGE_FILE_MAX_BYTES)
    return gps


# one class per transport; _build picks it by the device's transport (issue 13)
KIND = Kind("gps", (GpsSerialDriver, GpsMqttDriver), _build,  # no actions
            fields=frozenset({"lat", "lon", "speed_kmh", "course_deg", "mode", "fix_utc"}),
            alarms=ALARMS)  # gps_no_fix is its silence: no comm_lost
