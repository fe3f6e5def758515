"""GPS rules: overspeed, stopped too long, geofences, lost fix, thinning, GNSS time."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pytest

from edge.clock import Clock, TimeQuality
from edge.config_loader import validate
from edge.drivers._codecs.nmea import Fix
from edge.drivers.geo import distance_m, heading_change_deg, inside
from edge.drivers.gps_rules import GpsRules
from edge.kinds.gps import GpsDevice
from tests.cfg import write_config
from tests.helpers import wait_until
from tests.outbox_sql import sql_rows, store_of

SQUARE = [[31.30, 120.62], [31.30, 120.64], [31.32, 120.64], [31.32, 120.62]]


def device(**kw: Any) -> GpsDevice:
    return validate(GpsDevice, {
        "name": "truck-03", "kind": "gps", "transport": "serial", "port": "/dev/ttyS0",
        "asset": {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
                  "name": "truck"}, **kw})


def fix(lat: float = 31.31, lon: float = 120.63, speed: float = 30.0,
        course: float = 90.0) -> Fix:
    return Fix(dt.datetime(2026, 11, 26, tzinfo=dt.UTC), lat, lon, speed, course, 2, "RMC")


def test_geometry() -> None:
    assert inside(31.31, 120.63, SQUARE)
    assert not inside(31.33, 120.63, SQUARE)
    assert 1100 < distance_m(31.31, 120.63, 31.32, 120.63) < 1120
    assert heading_change_deg(350, 10) == 20


def test_overspeed_is_debounced() -> None:
    rules = GpsRules(device(overspeed_kmh=60))
    changes = [c for s in (70, 70, 70, 70) for c in rules.on_fix(fix(speed=s), 0)]
    assert [(c.kind, c.state) for c in changes] == [("overspeed", "raised")]
    changes = [c for s in (50, 50, 50) for c in rules.on_fix(fix(speed=s), 0)]
    assert [(c.kind, c.state) for c in changes] == [("overspeed", "cleared")]


def test_stopped_too_long() -> None:
    rules = GpsRules(device(stopped_too_long_s=600))
    assert rules.on_fix(fix(speed=0), 0) == []
    assert rules.on_fix(fix(speed=0.5), 599) == []
    raised = rules.on_fix(fix(speed=0), 601)
    assert [(c.kind, c.state) for c in raised] == [("stopped_too_long", "raised")]
    assert rules.on_fix(fix(speed=0), 700) == []  # once
    cleared = rules.on_fix(fix(speed=20), 710)
    assert [(c.kind, c.state) for c in cleared] == [("stopped_too_long", "cleared")]


def test_geofence_exit_and_back() -> None:
    rules = GpsRules(device(geofences=[{"name": "gusu", "polygon": SQUARE}]))
    assert rules.on_fix(fix(), 0) == []
    out = rules.on_fix(fix(lat=31.40), 1)
    assert [(c.kind, c.state) for c in out] == [("geofence_exit:gusu", "raised")]
    back = rules.on_fix(fix(), 2)
    assert [(c.kind, c.state) for c in back] == [("geofence_exit:gusu", "cleared")]


def test_lost_fix_raises_and_a_fix_clears() -> None:
    rules = GpsRules(device(no_fix_s=60))
    assert rules.on_tick(0) == []
    assert [(c.kind, c.state) for c in rules.on_tick(61)] == [("gps_no_fix", "raised")]
    assert rules.on_tick(70) == []
    assert [(c.kind, c.state) for c in rules.on_fix(fix(), 71)] == [("gps_no_fix", "cleared")]


def test_thinning_by_distance_heading_and_interval() -> None:
    rules = GpsRules(device(min_distance_m=20, max_interval_s=60, heading_change_deg=30))
    assert rules.due(fix(), 0)
    assert not rules.due(fix(lat=31.31005), 1)  # ~5 m
    assert rules.due(fix(lat=31.3103), 2)  # ~33 m
    assert rules.due(fix(lat=31.3103, course=140), 3)  # turned 50°
    assert not rules.due(fix(lat=31.3103, course=140), 30)
    assert rules.due(fix(lat=31.3103, course=140), 64)  # max interval


S = 1_000_000_000
T2026 = int(dt.datetime(2026, 11, 26, 4, 0, tzinfo=dt.UTC).timestamp()) * S
T2031 = int(dt.datetime(2031, 6, 1, tzinfo=dt.UTC).timestamp()) * S


def _feed(clock: Clock, start_ns: int, count: int, mono0_ns: int = 10 * S) -> list[bool]:
    """Feed ``count`` fixes one second apart, as a 1 Hz receiver does."""
    return [clock.note_gnss_fix(start_ns + i * S, mono0_ns + i * S) for i in range(count)]


def test_gnss_time_makes_the_clock_synced_but_not_a_1999_date() -> None:
    from edge.sink import EventSink

    clock = Clock("gnss")
    sink = EventSink.__new__(EventSink)
    sink._clock = clock
    assert clock.quality() is TimeQuality.UNSYNCED
    sink.gnss_time(int(dt.datetime(1999, 8, 22, tzinfo=dt.UTC).timestamp() * 1e9))
    assert clock.quality() is TimeQuality.UNSYNCED
    assert _feed(clock, T2026, 3) == [False, False, True]  # three agreeing fixes
    assert clock.quality() is TimeQuality.SYNCED


def test_one_gnss_fix_never_sets_the_clock(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 19 #3: one message with a 2031 time moved the clock and marked it synced."""
    from edge.sink import EventSink

    clock = Clock("gnss")
    sink = EventSink.__new__(EventSink)
    sink._clock = clock
    with caplog.at_level(logging.INFO, logger="edge"):
        sink.gnss_time(T2031)
        sink.gnss_time(T2031)
    assert "trusted" not in caplog.text  # it said so for a refused fix
    assert caplog.text.count("GNSS time refused") == 1
    clock = Clock("gnss")
    assert not clock.note_gnss_fix(T2031, 10 * S)
    assert clock.quality() is TimeQuality.UNSYNCED
    assert clock.gnss_rejected == 1
    # fixes that do not advance with the monotonic clock never confirm each other
    assert not any(clock.note_gnss_fix(T2031 + i * 3600 * S, 11 * S + i * S) for i in range(5))
    assert clock.quality() is TimeQuality.UNSYNCED


def test_an_adopted_gnss_time_does_not_jump_on_a_few_fixes() -> None:
    clock = Clock("gnss")
    _feed(clock, T2026, 3)
    offset_ns = clock.now_ns() - dt.datetime.now(dt.UTC).timestamp() * 1e9
    # a source now claiming 2031, even steadily for 10 s, is refused (drift bound 2 s)
    assert not any(_feed(clock, T2031, 10, mono0_ns=13 * S))
    after_ns = clock.now_ns() - dt.datetime.now(dt.UTC).timestamp() * 1e9
    assert abs(after_ns - offset_ns) < 1e9
    # small drift inside the bound is followed
    assert clock.note_gnss_fix(T2026 + 100 * S + S // 2, 10 * S + 100 * S)


def test_gnss_never_overrides_a_kernel_synced_clock() -> None:
    clock = Clock("ntp")
    clock._synced_cache = (1e18, True)  # the kernel says NTP disciplines the clock
    now_ns = dt.datetime.now(dt.UTC).timestamp() * 1e9
    assert not any(_feed(clock, T2031, 5))
    assert abs(clock.now_ns() - now_ns) < 60e9
    assert _feed(clock, int(now_ns), 1) == [True]  # agreeing within the bound: fine


def test_gnss_time_beyond_the_plausible_range_is_refused() -> None:
    clock = Clock("gnss")
    far_ns = int(dt.datetime(2080, 1, 1, tzinfo=dt.UTC).timestamp()) * S
    assert not any(_feed(clock, far_ns, 5))
    assert clock.quality() is TimeQuality.UNSYNCED


# Re-test of issue 19 (f19 item 1): fake NMEA on the serial line, a steady 2031 stream.
def test_a_steady_2031_stream_never_sets_a_fresh_clock() -> None:
    """A fresh gateway (no floor): 3 fixes over 2 s of a 2031 date were enough."""
    clock = Clock("gnss")
    assert not any(_feed(clock, T2031, 120))
    assert clock.quality() is TimeQuality.UNSYNCED
    assert clock.gnss_suspect is not None
    assert "2031-06-01" in clock.gnss_suspect
    # a fresh gateway WITH a floor: only [floor, floor + 2 years] may be adopted
    clock = Clock("gnss", floor_ns=T2026)
    assert not any(_feed(clock, T2031, 120))
    assert not any(_feed(clock, T2026 - 86_400 * S, 10))  # earlier than the last trusted time
    assert clock.quality() is TimeQuality.UNSYNCED
    assert _feed(clock, T2026 + 3600 * S, 3) == [False, False, True]


def test_a_steady_2031_stream_never_reanchors_an_anchored_clock(
        caplog: pytest.LogCaptureFixture) -> None:
    """60 s of steady 2031 fixes re-anchored a clock on correct GNSS time, without a log."""
    from edge.sink import EventSink

    clock = Clock("gnss")
    sink = EventSink.__new__(EventSink)
    sink._clock = clock
    assert _feed(clock, T2026, 3)[-1]
    offset_ns = clock.now_ns() - dt.datetime.now(dt.UTC).timestamp() * 1e9
    with caplog.at_level(logging.INFO, logger="edge"):
        for _ in range(30):
            sink.gnss_time(T2031)
    assert not any(_feed(clock, T2031, 300, mono0_ns=13 * S))  # 5 minutes at 1 Hz
    after_ns = clock.now_ns() - dt.datetime.now(dt.UTC).timestamp() * 1e9
    assert abs(after_ns - offset_ns) < 1e9
    assert clock.gnss_disagreed == 330
    assert clock.gnss_suspect is not None
    assert caplog.text.count("GNSS time source suspect") == 1  # logged once, not per fix


def test_a_slowly_walking_gnss_stream_cannot_carry_the_clock_away() -> None:
    """Each fix within 2 s of the last: the walk stops at the bound from the first adoption."""
    clock = Clock("gnss")
    _feed(clock, T2026, 3)
    mono0, utc0 = 12 * S, T2026 + 2 * S
    accepted = [clock.note_gnss_fix(utc0 + i * (S + 3 * S // 2), mono0 + i * S)
                for i in range(1, 100)]
    assert accepted[0]
    assert not all(accepted)
    assert sum(accepted) <= 2  # 1.5 s per fix: the third passes 2 s + 100 ppm


def test_the_persisted_floor_round_trips_private(tmp_path: Path) -> None:
    from edge.clock import read_floor, write_floor

    path = tmp_path / "clock_floor"
    assert read_floor(path) is None
    write_floor(path, T2026)
    assert read_floor(path) == T2026
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("garbage")
    assert read_floor(path) is None


async def test_the_agent_raises_time_source_suspect_and_persists_the_floor(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A disagreeing stream reaches the platform as one alarm; the floor survives a restart."""
    import asyncio
    import json
    import time

    import edge.clock
    from edge.agent import Agent
    from edge.clock import CLOCK_FLOOR_NS, FLOOR_FILE, read_floor

    monkeypatch.setattr(edge.clock, "kernel_clock_synced", lambda: False)
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[],
                          gateway={"time_source": "gnss"})
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop), name="agent")
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert agent.sink is not None
        now_ns, mono_ns = time.time_ns(), time.monotonic_ns()
        assert [agent.clock.note_gnss_fix(now_ns + i * S, mono_ns + i * S)
                for i in range(3)][-1]  # correct GNSS time anchors the clock
        for _ in range(40):  # the tester's attack: a steady 2031 stream from the serial line
            agent.sink.gnss_time(T2031)
        assert agent.clock.now_ns() < T2026 + 3 * 366 * 86_400 * S

        def alarms() -> list[dict[str, Any]]:
            assert agent.outbox is not None
            return [json.loads(r[0]) for r in sql_rows(store_of(agent.outbox),
                "SELECT payload FROM events WHERE CAST(payload AS TEXT) LIKE ?",
                ("%time_source_suspect%",))]

        await wait_until(lambda: bool(alarms()), 5, "the time_source_suspect alarm")
        await asyncio.sleep(1.5)  # the maintenance loop runs every second: still one alarm
        [event] = alarms()
        assert event["alarm"]["kind"] == "time_source_suspect"
        assert event["alarm"]["state"] == "raised"
        assert "2031-06-01" in event["data"]["detail"]
    finally:
        stop.set()
        await asyncio.wait({run}, timeout=10)
    floor = read_floor(loaded.state_dir / FLOOR_FILE)
    assert floor is not None
    # GNSS-only (no NTP here), no earlier floor: the build floor + this run's uptime, never
    # the GNSS time itself (review finding 2)
    assert CLOCK_FLOOR_NS < floor < CLOCK_FLOOR_NS + 60 * S
    # the next start reads it: a fresh boot's GNSS may not go below it nor 2 years past it
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop), name="agent")
    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert agent.clock.floor_ns == floor
    finally:
        stop.set()
        await asyncio.wait({run}, timeout=10)


# Review finding 2: a forged GNSS time, once trusted, became the persisted floor and kept the
# real time out at the next boot.
def test_a_forged_gnss_time_never_ratchets_the_persisted_floor(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import edge.clock

    monkeypatch.setattr(edge.clock, "kernel_clock_synced", lambda: False)
    forged_ns = T2026 + int(1.9 * 365 * 86_400) * S
    clock = Clock("gnss", floor_ns=T2026)
    assert _feed(clock, forged_ns, 3)[-1]  # inside [floor, floor + 2 y]: adopted
    assert clock.quality() is TimeQuality.SYNCED
    uptime_ns = 3600 * S  # an hour into this run
    floor = clock.floor_to_persist(clock.started_mono_ns + uptime_ns)
    assert floor is not None
    assert floor <= T2026 + uptime_ns  # at most the previous floor + this run's uptime
    # the next boot with that floor: the real time (a day after T2026) is adopted
    clock = Clock("gnss", floor_ns=floor)
    real_ns = T2026 + 86_400 * S
    assert _feed(clock, real_ns, 12)[2]
    assert clock.quality() is TimeQuality.SYNCED
    assert clock.gnss_suspect is None


def test_the_floor_is_the_kernel_clock_when_ntp_disciplines_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    import edge.clock

    monkeypatch.setattr(edge.clock, "kernel_clock_synced", lambda: True)
    clock = Clock("gnss", floor_ns=T2026)
    _feed(clock, T2026 + 400 * 86_400 * S, 3)  # GNSS says a year ahead; NTP says otherwise
    floor = clock.floor_to_persist()
    assert floor is not None
    assert abs(floor - time.time_ns()) < 5 * S
    # no trusted time at all (no NTP, no GNSS anchor): nothing to write
    monkeypatch.setattr(edge.clock, "kernel_clock_synced", lambda: False)
    assert Clock("gnss", floor_ns=T2026).floor_to_persist() is None
