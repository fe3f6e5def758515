"""Work coverage of sanitation trucks (issue 18 B): simulated routes through the pure tracker,
the config's work block with lines, the event and its schema, and the GPS driver's hook."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.device_state import DeviceStateStore
from edge.buffer.store import Outbox
from edge.clock import Clock, TimeQuality
from edge.config import SouthboundMqttConfig
from edge.config_loader import dump, parse_config, validate
from edge.drivers._codecs.nmea import Fix
from edge.drivers._mqtt_device import DeviceBroker
from edge.drivers.coverage import CoverageTracker
from edge.drivers.factory import Transports, build_driver
from edge.drivers.geo import EARTH_M, distance_m, inside
from edge.drivers.gps import (
    COVERAGE_FILE_MAX_BYTES,
    GpsDriver,
    GpsMqttDriver,
    GpsSerialDriver,
)
from edge.errors import ConfigError
from edge.kinds.gps import GpsDevice, WorkConfig
from edge.model import Event, EventType, Prio, encode_event, json_schemas
from edge.sink import EventSink
from edge.supervisor import supervise
from edge.transports.serial import SerialPort
from edge.wire import WireEvent
from hil.broker import free_port
from hil.receiver import schemas as contract
from hil.sims.serial_sims import GpsSim, Leg, RouteFix, offset, route
from tests.cfg import write_config
from tests.recording_sink import RecordingSink

ROOT = Path(__file__).resolve().parents[1]
O_LAT, O_LON = 31.3000, 120.6000  # the origin of the test streets
# shift 06:00-14:00 local (UTC+8) on Tuesday 2026-12-01: 2026-11-30T22:00Z .. 12-01T06:00Z
SHIFT_START_S = dt.datetime(2026, 11, 30, 22, 0, tzinfo=dt.UTC).timestamp()
SHIFT_END_S = SHIFT_START_S + 8 * 3600
T0 = SHIFT_START_S + 600  # the truck starts 10 min into the shift


def p(east_m: float, north_m: float) -> tuple[float, float]:
    return offset(O_LAT, O_LON, east_m, north_m)


# main-st runs 400 m east; side-st 200 m north from its middle; back-st 400 m east, 200 m north
STREETS = {
    "main-st": [p(0, 0), p(400, 0)],
    "side-st": [p(200, 0), p(200, 200)],
    "back-st": [p(0, 200), p(400, 200)],
}


def work(**extra: Any) -> WorkConfig:
    roads = [{"id": name, "width_m": 6.0, "line": [list(pt) for pt in pts]}
             for name, pts in STREETS.items()]
    return validate(WorkConfig, {
        "shift": {"start": "06:00", "end": "14:00"}, "roads": roads,
        "min_speed_kmh": 3, "max_speed_kmh": 15, "max_gap_s": 10, "segment_m": 5, **extra})


def drive(tracker: CoverageTracker, fixes: list[RouteFix], *, t0: float = T0,
          trusted: bool = True) -> list[dict[str, Any]]:
    """Feed every fix at its time; return the reports of shifts that ended meanwhile."""
    done = []
    for fix in fixes:
        report = tracker.on_fix(fix.lat, fix.lon, fix.speed_kmh, t0 + fix.t_s, trusted=trusted)
        if report is not None:
            done.append(report)
    return done


def roads_of(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {road["id"]: road for road in report["roads"]}


def full_sweep() -> list[Leg]:
    # main-st out and back to its middle, side-st up, across to back-st and along it
    return [Leg((p(0, 0), p(400, 0), p(200, 0), p(200, 200)), 8),
            Leg((p(200, 200), p(0, 200), p(400, 200)), 8)]


def test_a_full_sweep_covers_every_road_at_least_98_pct() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    drive(tracker, route(full_sweep()))
    report = tracker.report(T0 + 3600)
    assert report is not None
    assert report["shift"]["state"] == "in_progress"
    assert report["clock"] == "trusted"
    for road in report["roads"]:
        assert road["covered_pct"] >= 98, road
        assert road["first_pass"] is not None
        assert road["last_pass"] >= road["first_pass"]


def test_a_skipped_street_is_exactly_that_street_missed() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    # main-st end to end (it crosses side-st's start at 200 m), then straight to back-st
    legs = [Leg((p(0, 0), p(400, 0)), 8), Leg((p(400, 0), p(400, 200)), 40),
            Leg((p(400, 200), p(0, 200)), 8)]
    drive(tracker, route(legs))
    report = tracker.report(T0 + 3600)
    assert report is not None
    roads = roads_of(report)
    side = roads["side-st"]
    assert side["covered_pct"] == 0
    assert side["missed"] == [[0.0, side["length_m"]]]
    assert side["length_m"] == pytest.approx(200, rel=0.002)
    assert side["covered"] == []
    assert side["first_pass"] is None
    for name in ("main-st", "back-st"):
        assert roads[name]["covered_pct"] >= 98
        assert roads[name]["missed"] == [] or \
            sum(b - a for a, b in roads[name]["missed"]) <= 8  # the last piece at most


def test_driving_past_at_50_kmh_does_not_count() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    drive(tracker, route([Leg((p(0, 0), p(400, 0)), 50)]))
    report = tracker.report(T0 + 3600)
    assert report is not None
    main = roads_of(report)["main-st"]
    assert main["covered_pct"] == 0
    assert main["missed"] == [[0.0, main["length_m"]]]


def test_a_gps_outage_mid_shift_is_unknown_not_missed() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    # 8 km/h: 2.22 m/s; no fix from 60 s to 120 s, i.e. about 133 m .. 267 m of main-st
    fixes = route([Leg((p(0, 0), p(400, 0)), 8)], outages=((60.0, 120.0),))
    drive(tracker, fixes)
    report = tracker.report(T0 + 3600)
    assert report is not None
    main = roads_of(report)["main-st"]
    assert main["missed"] == []
    assert len(main["unknown"]) == 1
    start, end = main["unknown"][0]
    assert 125 <= start <= 135
    assert 260 <= end <= 275
    assert main["covered_pct"] + main["unknown_pct"] == pytest.approx(100, abs=0.2)
    assert report["gaps"] == 1
    assert report["gap_s"] == pytest.approx(61, abs=1)


def test_an_outage_standing_on_one_piece_leaves_nothing_unknown() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    lat, lon = p(102, 0)
    tracker.on_fix(lat, lon, 0.0, T0, trusted=True)
    tracker.on_fix(lat, lon, 0.0, T0 + 300, trusted=True)  # parked under a bridge
    report = tracker.report(T0 + 400)
    assert report is not None
    assert roads_of(report)["main-st"]["unknown"] == []
    assert report["gaps"] == 1


def test_no_fix_all_shift_is_all_unknown() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    assert tracker.tick(T0, trusted=True) is None
    done = tracker.tick(SHIFT_END_S + 1, trusted=True)
    assert done is not None
    for road in done["roads"]:
        assert road["unknown_pct"] == 100
        assert road["missed"] == []


def test_a_shift_is_reported_once_when_it_ends_and_stays_readable() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    before = drive(tracker, route(full_sweep()), t0=SHIFT_START_S - 3600)  # before the shift
    assert before == []
    assert tracker.report(SHIFT_START_S - 1) is None  # nothing: fixes outside are ignored
    drive(tracker, route(full_sweep()))
    lat, lon = p(0, 0)
    ended = tracker.on_fix(lat, lon, 0.0, SHIFT_END_S + 5, trusted=True)
    assert ended is not None
    assert ended["shift"] == {"start": "2026-11-30T22:00:00+00:00",
                              "end": "2026-12-01T06:00:00+00:00", "state": "ended"}
    assert all(road["covered_pct"] >= 98 for road in ended["roads"])
    assert tracker.on_fix(lat, lon, 0.0, SHIFT_END_S + 6, trusted=True) is None  # once
    assert tracker.report(SHIFT_END_S + 60) == ended  # device.read after the shift


def test_an_untrusted_clock_is_said_in_the_report() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    drive(tracker, route([Leg((p(0, 0), p(400, 0)), 8)]), trusted=False)
    ended = tracker.tick(SHIFT_END_S, trusted=False)
    assert ended is not None
    assert ended["clock"] == "untrusted"


def test_overnight_shifts_and_weekdays() -> None:
    night = CoverageTracker(work(shift={"start": "22:00", "end": "06:00", "days": ["mon"]}),
                            utc_offset_h=8)
    monday_2300 = dt.datetime(2026, 11, 30, 15, 0, tzinfo=dt.UTC).timestamp()  # 23:00 +8
    assert night.window(monday_2300) == (monday_2300 - 3600, monday_2300 + 7 * 3600)
    assert night.window(monday_2300 + 6 * 3600) is not None  # Tuesday 05:00: same shift
    assert night.window(monday_2300 + 24 * 3600) is None  # Tuesday 23:00: not a work day


def test_an_area_is_swept_in_passes() -> None:
    plaza = [p(0, -100), p(40, -100), p(40, -80), p(0, -80)]
    cfg = validate(WorkConfig, {
        "shift": {"start": "06:00", "end": "14:00"}, "min_speed_kmh": 3, "max_speed_kmh": 15,
        "roads": [{"id": "plaza", "width_m": 4.0, "polygon": [list(pt) for pt in plaza]}]})
    tracker = CoverageTracker(cfg, utc_offset_h=8)
    half = []  # passes 4 m apart over the southern half only
    for k in range(3):
        y = -100 + 2 + 4 * k
        xs = (0, 40) if k % 2 == 0 else (40, 0)
        half += [p(xs[0], y), p(xs[1], y)]
    drive(tracker, route([Leg(tuple(half), 6)]))
    report = tracker.report(T0 + 3600)
    assert report is not None
    area = roads_of(report)["plaza"]
    assert area["shape"] == "area"
    assert 45 <= area["covered_pct"] <= 70
    assert area["missed"]  # the northern passes
    assert area["grid"]["cols"] == 10
    rest = []
    for k in range(3, 5):
        y = -100 + 2 + 4 * k
        xs = (0, 40) if k % 2 == 0 else (40, 0)
        rest += [p(xs[0], y), p(xs[1], y)]
    drive(tracker, route([Leg(tuple(rest), 6)]), t0=T0 + 600)
    report = tracker.report(T0 + 3600)
    assert report is not None
    assert roads_of(report)["plaza"]["covered_pct"] >= 98


def test_per_fix_cost_depends_on_the_roads_nearby_not_their_number() -> None:
    few = CoverageTracker(work(), utc_offset_h=8)
    # the same streets plus 90 far away (600 m streets every 30 m, 2 km east)
    many_roads = [{"id": f"far-{i}", "width_m": 6.0,
                   "line": [list(p(2000 + 30 * i, 0)), list(p(2000 + 30 * i, 600))]}
                  for i in range(90)]
    base = dump(work())
    many = CoverageTracker(validate(WorkConfig, {**base, "roads": [*base["roads"], *many_roads]}),
                           utc_offset_h=8)
    fixes = route(full_sweep())

    def cpu(tracker: CoverageTracker) -> float:
        best = 1e9
        for _ in range(3):
            started = time.process_time()
            drive(tracker, fixes)
            best = min(best, time.process_time() - started)
        return best

    assert len(many.plan.mid_x) > 10 * len(few.plan.mid_x)
    assert cpu(many) < 3 * cpu(few) + 0.002


# --- the config's work block ------------------------------------------------------------

GPS_WORK = """\
    work:
      shift: {start: "06:00", end: "14:00"}
      min_speed_kmh: 3
      max_speed_kmh: 15
      roads:
        - id: main-st
          width_m: 6
          line: [[31.3, 120.6], [31.3, 120.604]]
        - id: plaza
          width_m: 4
          polygon: [[31.3, 120.6], [31.3002, 120.6], [31.3002, 120.6004]]
"""


def _with_work(block: str) -> str:
    text = (ROOT / "devices.yaml").read_text(encoding="utf-8")
    anchor = "      name: 环卫车 苏E-0003\n"
    assert anchor in text
    return text.replace(anchor, anchor + block, 1)


def _problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, Path("devices.yaml"))
    return info.value.problems


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_work_block_loads() -> None:
    loaded = parse_config(_with_work(GPS_WORK), Path("devices.yaml"))
    truck = loaded.config.device("truck-03")
    assert isinstance(truck, GpsDevice)
    assert truck.work is not None
    assert [r.id for r in truck.work.roads] == ["main-st", "plaza"]


@pytest.mark.parametrize(("old", "new", "needle", "words"), [
    ("min_speed_kmh: 3", "min_speed_kmh: 30", "min_speed_kmh: 30", "must be below max_speed_kmh"),
    ('end: "14:00"', 'end: "06:00"', "shift:", "a shift has a length"),
    ('end: "14:00"', 'end: "25:00"', "shift:", "must be a 24-hour time"),
    ("line: [[31.3, 120.6], [31.3, 120.604]]", "line: [[31.3, 120.6]]", "line:",
     "at least 2 items"),
    ("line: [[31.3, 120.6], [31.3, 120.604]]",
     "line: [[31.3, 120.6], [131.3, 120.604]]", "line:", "line[1]: [131.3, 120.604] is not"),
    ("line: [[31.3, 120.6], [31.3, 120.604]]",
     "line: [[31.3, 120.6], [31.3, .nan]]", "line:", "finite number"),
    ("width_m: 6", "width_m: 0", "width_m: 0", "must be > 0"),
    ("- id: plaza", "- id: main-st  # again", "# again",
     "'main-st' is already the id of road 1: road ids must be unique"),
    ("width_m: 4\n", "width_m: 4\n          line: [[31.3, 120.6], [31.3, 120.61]]\n",
     "- id: plaza", "exactly one of line"),
    ("polygon: [[31.3, 120.6], [31.3002, 120.6], [31.3002, 120.6004]]",
     "polygon: [[31.3, 120.6], [31.5, 120.6], [31.5, 120.8]]", "      roads:",
     "pieces (at most 40000)"),
    ("line: [[31.3, 120.6], [31.3, 120.604]]", "line: [[31.3, 120.6], [31.3, 120.6001]]\n"
     "        - id: far\n          width_m: 3\n          line: [[31.3, 121.6], [31.3, 121.6001]]",
     "- id: far", "within 50 km"),
])
def test_work_block_mistakes_are_reported_with_their_line(old: str, new: str, needle: str,
                                                          words: str) -> None:
    block = GPS_WORK.replace(old, new, 1)
    assert block != GPS_WORK
    text = _with_work(block)
    problems = _problems(text)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"devices.yaml:{_line(text, needle)}: devices[truck-03].work"), \
        problems
    assert words in problems[0]
    assert "(got {" not in problems[0]  # a block's dump says nothing a technician can use


def test_every_problem_of_a_work_block_is_shown_at_its_own_line() -> None:
    # the re-test's case: min_speed_kmh 50 and a duplicated road id showed one problem at the
    # line of work:, ending in "(got {'shift': {..."
    block = GPS_WORK.replace("min_speed_kmh: 3", "min_speed_kmh: 50", 1) \
        .replace("- id: plaza", "- id: main-st  # again", 1)
    text = _with_work(block)
    assert _problems(text) == [
        f"devices.yaml:{_line(text, 'min_speed_kmh: 50')}: devices[truck-03].work.min_speed_kmh: "
        "50 must be below max_speed_kmh 15",
        f"devices.yaml:{_line(text, '# again')}: devices[truck-03].work.roads[1].id: "
        "'main-st' is already the id of road 1: road ids must be unique",
    ]
    # a road's bad points: each one (the road's own checks run before the block's)
    text = _with_work(GPS_WORK.replace("line: [[31.3, 120.6], [31.3, 120.604]]",
                                       "line: [[91.3, 120.6], [31.3, 190.6]]", 1))
    line = _line(text, "[91.3, 120.6]")
    assert _problems(text) == [
        f"devices.yaml:{line}: devices[truck-03].work.roads[0].line[0]: [91.3, 120.6] is not a "
        "[lat, lon] position",
        f"devices.yaml:{line}: devices[truck-03].work.roads[0].line[1]: [31.3, 190.6] is not a "
        "[lat, lon] position",
    ]


# --- the event and its schema ---------------------------------------------------------------


def _ended_report() -> dict[str, Any]:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    drive(tracker, route([Leg((p(0, 0), p(400, 0)), 8)], outages=((60.0, 120.0),)))
    ended = tracker.tick(SHIFT_END_S, trusted=True)
    assert ended is not None
    return ended


def test_the_event_validates_against_the_printed_schemas() -> None:
    report = _ended_report()
    event = Event(EventType.WORK_COVERAGE, Prio.ALARM, time.time_ns(), TimeQuality.SYNCED,
                  device="truck-03", data=report)
    wire = json.loads(encode_event(event, 7))
    WireEvent.model_validate(wire)
    schemas = json_schemas()
    jsonschema.validate(wire["data"], schemas["work_coverage"])
    broken = {**wire["data"], "roads": [{**wire["data"]["roads"][0], "covered_pct": 101}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schemas["work_coverage"])
    # the published contract (edge/contract/schemas, what `edge schema` prints and a platform
    # is given) accepts it too, and refuses the broken one
    assert contract.errors("event", wire) == []
    assert contract.errors("event", {**wire, "data": broken}) != []


# --- the GPS driver's hook ------------------------------------------------------------------


class ClockSink(RecordingSink):
    """A sink with the agent's coverage additions: a settable trusted clock, the events."""

    def __init__(self, now_s: float, *, trusted: bool = True) -> None:
        super().__init__()
        self.offset_s = now_s - time.time()
        self.trusted = trusted
        self.coverage: list[tuple[str, dict[str, Any]]] = []

    def trusted_now_ns(self) -> tuple[int, bool]:
        return int((time.time() + self.offset_s) * 1e9), self.trusted

    async def work_coverage(self, device: str, report: dict[str, Any]) -> None:
        self.coverage.append((device, report))


def _truck(port: str, **extra: Any) -> GpsDevice:
    roads = [{"id": name, "width_m": 6.0, "line": [list(pt) for pt in pts]}
             for name, pts in STREETS.items()]
    return validate(GpsDevice, {
        "name": "truck-03", "kind": "gps", "transport": "serial", "port": port,
        "asset": {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
                  "name": "环卫车"},
        "work": {"shift": {"start": "06:00", "end": "14:00"}, "roads": roads,
                 "min_speed_kmh": 3, "max_speed_kmh": 15, "max_gap_s": 10}, **extra})


async def test_the_driver_reports_coverage_on_read_and_at_shift_end(
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    sim = GpsSim(port)
    sim.route = route([Leg((p(0, 0), p(400, 0)), 8)])  # 180 s of driving
    sim.speedup = 20.0
    sim.route_start = dt.datetime.fromtimestamp(T0, dt.UTC)
    await sim.start()
    caplog.set_level(logging.DEBUG)
    device = _truck(f"socket://127.0.0.1:{port}")
    driver = GpsSerialDriver(device, SerialPort(device.port or "", 9600), utc_offset_h=8)
    sink = ClockSink(T0)
    task = asyncio.create_task(driver.run(sink))
    try:
        deadline = time.monotonic() + 20
        while driver.stats.polls_ok == 0:  # run() holds the port: a probe listens through it
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        while True:
            read = await driver.probe()
            main = roads_of(read["work_coverage"])["main-st"]
            if main["covered_pct"] >= 98:
                break
            assert time.monotonic() < deadline, main
            await asyncio.sleep(0.5)
        assert read["work_coverage"]["shift"]["state"] == "in_progress"
        assert sink.coverage == []
        sink.offset_s += SHIFT_END_S - T0  # the shift ends; the next sentence tells
        while not sink.coverage:
            assert time.monotonic() < deadline + 10
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await sim.stop()
    assert len(sink.coverage) == 1
    name, report = sink.coverage[0]
    assert name == "truck-03"
    assert report["shift"]["state"] == "ended"
    assert roads_of(report)["main-st"]["covered_pct"] >= 98
    side = roads_of(report)["side-st"]
    assert side["missed"] == [[0.0, side["length_m"]]]
    for record in caplog.records:  # positions are personal data (tests/test_privacy.py)
        assert "31.30" not in record.getMessage()
        assert "120.60" not in record.getMessage()


async def test_a_truck_without_work_roads_reads_as_before() -> None:
    device = _truck("socket://127.0.0.1:1")
    plain = dataclasses.replace(device, work=None)
    driver = GpsSerialDriver(plain, SerialPort("socket://127.0.0.1:1", 9600))
    assert driver.coverage is None


class ShiftedClock(Clock):
    """The agent's clock, moved by ``offset_s`` (a test cannot wait for a shift to end)."""

    def __init__(self, offset_s: float) -> None:
        super().__init__("system")
        self.offset_s = offset_s

    def now_ns(self) -> int:
        return super().now_ns() + int(self.offset_s * 1e9)


async def test_a_shift_end_is_stored_as_a_work_coverage_event(tmp_path: Path) -> None:
    port = free_port()
    sim = GpsSim(port)
    sim.route = route([Leg((p(0, 0), p(400, 0)), 8)], outages=((60.0, 120.0),))
    sim.speedup = 20.0
    sim.route_start = dt.datetime.fromtimestamp(T0, dt.UTC)  # GNSS time agrees with the clock
    await sim.start()
    truck = dump(_truck(f"socket://127.0.0.1:{port}"), exclude_none=True)
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[truck])
    store = Outbox(tmp_path / "outbox.db")
    outbox = AsyncOutbox(store, commit_max_wait_s=0.001)
    await outbox.open()
    writer = asyncio.create_task(outbox.run())
    clock = ShiftedClock(T0 - time.time())
    sink = EventSink(loaded.config, outbox, clock, {})
    driver = build_driver(loaded.config.devices[0], loaded.config, Transports(loaded.config))
    task = asyncio.create_task(supervise(driver, sink))  # as the agent runs it

    def stored() -> list[dict[str, Any]]:
        return [e for e in map(json.loads, store.export()) if e["type"] == "work_coverage"]

    try:
        deadline = time.monotonic() + 30
        assert isinstance(driver, GpsDriver)

        def fixes() -> int:
            report = driver.coverage_report()
            return 0 if report is None else int(report["fixes"])

        while fixes() < 122:  # the whole route but the outage's 60 (9 s at 20x)
            assert time.monotonic() < deadline, fixes()
            await asyncio.sleep(0.1)
        assert stored() == []
        clock.offset_s += SHIFT_END_S - T0
        while not stored():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # more sentences after the end: still one event
        events = stored()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await outbox.drain()
        await outbox.close()
        await sim.stop()
    (event,) = events
    WireEvent.model_validate(event)
    assert contract.errors("event", event) == []
    jsonschema.validate(event["data"], json_schemas()["work_coverage"])
    assert event["prio"] == Prio.ALARM
    assert event["device"] == "truck-03"
    assert event["asset"]["code"] == "3205082190000003"
    assert event["data"]["clock"] == "trusted"
    main = roads_of(event["data"])["main-st"]
    assert main["missed"] == []
    assert len(main["unknown"]) == 1
    assert main["covered_pct"] + main["unknown_pct"] == pytest.approx(100, abs=0.2)


def test_a_worst_case_report_is_bounded_and_says_it_was_cut() -> None:
    roads = [{"id": f"{k:02d}-" + "x" * 61, "width_m": 6.0,
              "line": [list(p(0, 20 * k)), list(p(1000, 20 * k))]} for k in range(100)]
    tracker = CoverageTracker(validate(WorkConfig, {
        "shift": {"start": "06:00", "end": "14:00"}, "roads": roads}), utc_offset_h=8)
    assert tracker.tick(T0, trusted=False) is None
    shift = tracker._shift  # the worst case: every piece unlike the one before
    assert shift is not None
    shift.fixes = 1
    for u in range(len(shift.state)):
        shift.state[u] = u % 3
    report = tracker.tick(SHIFT_END_S, trusted=False)
    assert report is not None
    size = len(encode_event(Event(EventType.WORK_COVERAGE, Prio.ALARM, time.time_ns(),
                                  TimeQuality.SYNCED, device="truck-03", data=report), 1))
    assert size < 64 * 1024
    road = report["roads"][0]
    assert road["truncated"] is True
    assert len(road["missed"]) <= 4
    lists = [road[state] for state in ("covered", "unknown", "missed")]
    assert max(stretches[-1][1] for stretches in lists) == road["length_m"]  # to the end
    assert road["covered_pct"] == pytest.approx(33.3, abs=0.5)  # shares stay exact


@pytest.mark.parametrize(("year", "gaps"), [(None, 1), (2031, 0)])
async def test_a_fix_time_far_from_the_clock_does_not_space_fixes(year: int | None,
                                                                  gaps: int) -> None:
    """A tracker's own times space its fixes (a 60 s hole is a gap); a time over 300 s from
    the trusted clock (a bad date, anyone publishing on the tracker's topic) is replaced by
    the clock's, so it can neither fake an outage nor hide one."""
    device = dataclasses.replace(_truck("socket://127.0.0.1:1"), transport="mqtt",
                                 model="mqtt_json", topic="t/truck-03")
    driver = _mqtt_gps(device)
    sink = ClockSink(T0)
    for k, t_s in enumerate((0.0, 1.0, 61.0, 62.0)):
        when = dt.datetime.fromtimestamp(T0 + t_s, dt.UTC)
        if year is not None:
            when = when.replace(year=year)
        lat, lon = p(10 + 2 * k, 0)
        await driver._on_fix(Fix(when, lat, lon, 8.0, 90.0, 2, "json"), sink)
    report = driver.coverage_report()
    assert report is not None
    assert report["gaps"] == gaps
    assert report["fixes"] == 4


def test_chainage_and_cells_are_what_a_map_draws_from_the_report_alone() -> None:
    far = [offset(O_LAT, O_LON, 0, 40_000), offset(O_LAT, O_LON, 1000, 40_000)]  # 40 km north
    plaza = [offset(*far[0], 0, 50), offset(*far[0], 40, 50), offset(*far[0], 40, 70),
             offset(*far[0], 0, 70)]
    cfg = validate(WorkConfig, {
        "shift": {"start": "06:00", "end": "14:00"},
        "roads": [{"id": "main-st", "width_m": 6.0, "line": [list(pt) for pt in STREETS["main-st"]]},
                  {"id": "far-st", "width_m": 6.0, "line": [list(pt) for pt in far]},
                  {"id": "plaza", "width_m": 4.0, "polygon": [list(pt) for pt in plaza]}]})
    tracker = CoverageTracker(cfg, utc_offset_h=8)
    tracker.tick(T0, trusted=True)
    report = tracker.report(T0)
    assert report is not None
    roads = roads_of(report)
    assert roads["far-st"]["length_m"] == pytest.approx(distance_m(*far[0], *far[1]), abs=0.1)
    grid = roads["plaza"]["grid"]
    d_lat = grid["cell_m"] / (EARTH_M * math.pi / 180)
    d_lon = d_lat / math.cos(math.radians(grid["origin_lat"]))
    cells = [i for a, b in roads["plaza"]["unknown"] for i in range(int(a), int(b))]
    assert len(cells) == roads["plaza"]["cells"] == 50  # 40 x 20 m in 4 m cells
    for i in cells:  # the map's cell i is inside the plaza
        row, col = divmod(i, grid["cols"])
        lat = grid["origin_lat"] + (row + 0.5) * d_lat
        lon = grid["origin_lon"] + (col + 0.5) * d_lon
        assert inside(lat, lon, [list(pt) for pt in plaza])


def test_a_read_before_the_first_fix_does_not_turn_missed_into_unknown() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    tracker.tick(T0, trusted=True)
    early = tracker.report(T0)  # device.read before any fix: all unknown
    assert early is not None
    assert all(road["unknown_pct"] == 100 for road in early["roads"])
    drive(tracker, route([Leg((p(0, 0), p(400, 0)), 8)]), t0=T0 + 1)
    report = tracker.report(T0 + 3600)
    assert report is not None
    side = roads_of(report)["side-st"]
    assert side["missed"] == [[0.0, side["length_m"]]]


# --- a restart mid-shift keeps the shift ----------------------------------------------------


def test_a_saved_shift_is_taken_back_only_by_its_own_config() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    drive(tracker, route([Leg((p(0, 0), p(400, 0)), 8)], outages=((60.0, 120.0),)))
    saved = json.loads(json.dumps(tracker.snapshot()))  # through a file
    before = tracker.report(T0 + 3600)
    again = CoverageTracker(work(), utc_offset_h=8)
    assert again.restore(saved, T0 + 3600) is None
    assert again.report(T0 + 3600) == before
    assert CoverageTracker(work(segment_m=6), utc_offset_h=8).restore(saved, T0 + 3600) == \
        "saved for other roads or another shift"
    assert CoverageTracker(work(), utc_offset_h=7).restore(saved, T0 + 3600) == \
        "saved for other roads or another shift"
    assert again.restore(saved, SHIFT_START_S - 1) == "from another shift"
    assert again.restore(saved, SHIFT_END_S + 86_400) == "from another shift"
    damages: list[dict[str, Any]] = [{"state": "!!"}, {"state": base64.b64encode(b"\x07" * 10).decode()},
                   {"first": "abc"}, {"last": [1.0]}, {"fixes": -1}, {"fixes": 1.5},
                   {"gap_s": float("nan")}, {"trusted": "yes"}, {"start_s": None},
                   {"first": [[]] * 3}, {"end_s": True}]
    for damage in damages:
        assert again.restore({**saved, **damage}, T0 + 3600) == "damaged", damage
    junks: list[object] = [None, [], "x", {"v": 2}, {**saved, "v": True}]
    for junk in junks:
        assert again.restore(junk, T0 + 3600) == "not a saved shift"


def test_a_shift_that_ended_while_the_agent_was_down_is_reported_at_once() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    drive(tracker, route([Leg((p(0, 0), p(400, 0)), 8)]))
    saved = tracker.snapshot()
    again = CoverageTracker(work(), utc_offset_h=8)
    assert again.restore(saved, SHIFT_END_S + 3600) is None
    ended = again.tick(SHIFT_END_S + 3600, trusted=True)
    assert ended is not None
    assert ended["shift"]["state"] == "ended"
    assert roads_of(ended)["main-st"]["covered_pct"] >= 98


def _mqtt_truck() -> GpsDevice:
    return dataclasses.replace(_truck("socket://127.0.0.1:1"), transport="mqtt",
                               model="mqtt_json", topic="t/truck-03")


def _mqtt_gps(device: GpsDevice) -> GpsMqttDriver:
    """A tracker's driver whose fixes the test feeds itself: its broker is never connected."""
    broker = DeviceBroker(SouthboundMqttConfig(host="127.0.0.1", port=1, tls=False),
                          base_dir=Path(), gateway_id="gw-test")
    return GpsMqttDriver(device, broker, utc_offset_h=8)


async def _sweep_main_st(driver: GpsDriver, sink: ClockSink) -> None:
    for fix in route([Leg((p(0, 0), p(400, 0)), 8)]):
        when = dt.datetime.fromtimestamp(T0 + fix.t_s, dt.UTC)
        sink.offset_s = T0 + fix.t_s - time.time()
        await driver._on_fix(Fix(when, fix.lat, fix.lon, fix.speed_kmh, 90.0, 2, "json"), sink)


async def test_an_agent_restart_mid_shift_keeps_what_was_swept(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    first = _mqtt_gps(_mqtt_truck())
    first.saved = DeviceStateStore(tmp_path / "coverage", max_bytes=COVERAGE_FILE_MAX_BYTES)
    sink = ClockSink(T0)
    await first.restore_coverage(sink)  # as run() does: nothing saved yet
    await _sweep_main_st(first, sink)
    before = first.coverage_report()
    await first.close()  # the agent stops (or reloads): the shift is saved
    saved = tmp_path / "coverage" / "truck-03.json"
    assert saved.stat().st_mode & 0o777 == 0o600
    second = _mqtt_gps(_mqtt_truck())
    second.saved = DeviceStateStore(tmp_path / "coverage", max_bytes=COVERAGE_FILE_MAX_BYTES)
    await second.restore_coverage(sink)
    after = second.coverage_report()
    assert after == before
    assert after is not None
    assert roads_of(after)["main-st"]["covered_pct"] >= 98
    # the shift ends: reported once, and the saved shift goes with it
    sink.offset_s += SHIFT_END_S - T0
    await second.probe()
    await second._coverage_tick(sink)
    assert len(sink.coverage) == 1
    assert not saved.exists()
    for record in caplog.records:  # positions are personal data
        assert "31.30" not in record.getMessage()


@pytest.mark.parametrize("content", [b"", b"{", b"[" * 100_000, b"\xff\xfe", b"x" * (2 << 20),
                                     b'{"v": 1, "fp": "0"}', b"null"])
async def test_a_damaged_saved_shift_is_a_warning_and_a_fresh_start(
        tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "coverage").mkdir()
    (tmp_path / "coverage" / "truck-03.json").write_bytes(content)
    driver = _mqtt_gps(_mqtt_truck())
    driver.saved = DeviceStateStore(tmp_path / "coverage", max_bytes=COVERAGE_FILE_MAX_BYTES)
    sink = ClockSink(T0)
    await driver.restore_coverage(sink)
    assert any(r.levelno == logging.WARNING and "saved work coverage" in r.getMessage()
               for r in caplog.records)
    await _sweep_main_st(driver, sink)
    report = driver.coverage_report()
    assert report is not None
    assert roads_of(report)["main-st"]["covered_pct"] >= 98


def test_jumps_sweep_nothing_and_long_passes_cost_their_length() -> None:
    """A forged or multipath fix far away at a 'working' speed is a jump, not a pass; a long
    pass (a config with long gaps) walks the cells along it, not the box around it."""
    tracker = CoverageTracker(work(), utc_offset_h=8)
    far_lat, far_lon = p(20_000, 20_000)
    near_lat, near_lon = p(0, 0)
    started = time.process_time()
    for k in range(200):  # 28 km back and forth each second, claiming 8 km/h
        lat, lon = (far_lat, far_lon) if k % 2 else (near_lat, near_lon)
        tracker.on_fix(lat, lon, 8.0, T0 + k, trusted=True)
    assert time.process_time() - started < 0.2
    report = tracker.report(T0 + 300)
    assert report is not None
    assert all(road["covered_pct"] == 0 for road in report["roads"])

    slow = CoverageTracker(work(max_gap_s=600, max_speed_kmh=60), utc_offset_h=8)
    lat, lon = p(-10_000, -10_000)
    slow.on_fix(lat, lon, 50.0, T0, trusted=True)
    started = time.process_time()
    slow.on_fix(far_lat, far_lon, 50.0, T0 + 599, trusted=True)  # 42 km diagonal in 599 s?
    slow.on_fix(*p(-10_000, -10_000), 50.0, T0 + 1198, trusted=True)  # too far: a jump
    lat, lon = p(-2_000, 0)
    slow.on_fix(lat, lon, 50.0, T0 + 1300, trusted=True)  # 8 km in 102 s (282 km/h): a jump
    slow.on_fix(*p(-2_000 + 8_000, 0), 50.0, T0 + 1899, trusted=True)  # 8 km along main-st
    assert time.process_time() - started < 0.1
    report = slow.report(T0 + 2000)
    assert report is not None
    roads = roads_of(report)
    assert roads["main-st"]["covered_pct"] >= 98  # the long pass along it, by the corridor
    assert roads["side-st"]["covered_pct"] == 0  # crossed, not swept


def test_forged_outages_cost_little_and_mark_nothing() -> None:
    """Fix times that step back and forth (a tracker's clock, anyone on its topic) make an
    'outage' every other fix; one between ends too far apart for the time is a jump."""
    plaza = [p(0, -400), p(400, -400), p(400, -200), p(0, -200)]  # 20,000 cells of 2 m
    cfg = validate(WorkConfig, {
        "shift": {"start": "06:00", "end": "14:00"}, "max_gap_s": 10,
        "roads": [{"id": "main-st", "width_m": 6.0, "line": [list(pt) for pt in STREETS["main-st"]]},
                  {"id": "plaza", "width_m": 2.0, "polygon": [list(pt) for pt in plaza]}]})
    tracker = CoverageTracker(cfg, utc_offset_h=8)
    started = time.process_time()
    # each 'outage' joins two ends of one road, 390 m (line) or 420 m (area) apart in 11 s
    ends = [p(0, 0), p(390, 0), p(10, -390), p(390, -210)]
    for k in range(400):
        tracker.on_fix(*ends[k % 4], 8.0, T0 + 11 * (k % 2), trusted=True)
    assert time.process_time() - started < 0.3
    report = tracker.report(T0 + 600)
    assert report is not None
    assert report["gaps"] == 200
    assert all(road["unknown_pct"] == 0 for road in report["roads"])


def test_a_read_just_after_the_shift_ended_shows_that_shift() -> None:
    tracker = CoverageTracker(work(), utc_offset_h=8)
    drive(tracker, route([Leg((p(0, 0), p(400, 0)), 8)]))
    read = tracker.report(SHIFT_END_S + 1)  # no fix or tick since the end yet
    assert read is not None
    assert read["shift"]["state"] == "ended"
    assert roads_of(read)["main-st"]["covered_pct"] >= 98
    assert tracker.tick(SHIFT_END_S + 2, trusted=True) == read
