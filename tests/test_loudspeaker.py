"""Loudspeaker: priority preemption, schedules offline, clip allow-list, results, failures."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from edge.commands.safety import SafetyRules
from edge.config import EdgeConfig
from edge.config_loader import dump, validate
from edge.drivers.loudspeaker import LoudspeakerDriver, PlayClip
from edge.drivers.speaker_units import Syn6288Unit
from edge.kinds.loudspeaker import LoudspeakerDevice
from edge.shape_check import check
from edge.transports.serial import SerialPort
from hil.broker import free_port
from hil.sims.serial_sims import TtsSim
from tests.recording_sink import RecordingSink

CLIP_SHA = "ab" * 32


def speaker(port: int, **kw: Any) -> LoudspeakerDevice:
    return validate(LoudspeakerDevice, {
        "name": "speaker-01", "kind": "loudspeaker", "transport": "serial",
        "port": f"socket://127.0.0.1:{port}", "poll_interval_s": 1.0, "timeout_s": 0.5,
        "clips": {"evacuate": CLIP_SHA},
        "asset": {"code": "3205082105000001", "class": "2105", "grid": "320508001002003",
                  "name": "广播"}, **kw})


@contextlib.asynccontextmanager
async def running(**kw: Any) -> AsyncIterator[tuple[LoudspeakerDriver, TtsSim, RecordingSink]]:
    port = free_port()
    sim = TtsSim(port)
    await sim.start()
    unit = Syn6288Unit("speaker-01", SerialPort(f"socket://127.0.0.1:{port}", 9600), 0.5)
    driver = LoudspeakerDriver(speaker(port, **kw), unit)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    try:
        yield driver, sim, sink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        await sim.stop()


async def until(predicate: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)


async def test_emergency_preempts_and_interrupts_normal_play() -> None:
    async with running() as (driver, sim, sink):
        await driver.play_tts("前方道路施工请绕行" * 3, 8, cmd_id="normal-1")
        await driver.play_tts("排队的普通广播", 8, cmd_id="normal-2")
        await until(lambda: len(sim.spoken) == 1)
        # the first normal play is on air: the queue's current play, and the unit busy with it
        await until(lambda: driver.queue._current is not None
                    and driver.queue._current.cmd_id == "normal-1"
                    and asyncio.get_running_loop().time() < sim.busy_until)
        await driver.play_tts("紧急疏散", 16, emergency=True, cmd_id="emergency-1")
        await until(lambda: {"normal-1", "emergency-1", "normal-2"} <=
                    {r["cmd_id"] for r in sink.results})
    by_id = {r["cmd_id"]: r for r in sink.results}
    assert by_id["normal-1"]["status"] == "interrupted"
    assert by_id["emergency-1"]["status"] == "played"
    assert by_id["emergency-1"]["priority"] == "emergency"
    assert by_id["normal-2"]["status"] == "played"
    order = [r["cmd_id"] for r in sink.results]
    assert order.index("emergency-1") < order.index("normal-2")  # emergency jumped the queue
    assert sim.spoken[1].endswith("紧急疏散")


async def test_schedule_plays_with_no_uplink() -> None:
    async with running(schedules=[{"at": "08:30", "text": "垃圾分类提醒"}]) as (driver, sim,
                                                                                sink):
        driver._now = lambda: dt.datetime(2026, 11, 26, 0, 30, 10, tzinfo=dt.UTC)  # 08:30 +8
        await until(lambda: any(r["source"] == "schedule" and r["status"] == "played"
                                for r in sink.results), 15)
    assert any(s.endswith("垃圾分类提醒") for s in sim.spoken)
    assert sum(1 for s in sim.spoken if s.endswith("垃圾分类提醒")) == 1  # once per day


async def test_a_dead_unit_fails_the_play_and_raises_playback_failed() -> None:
    async with running() as (driver, sim, sink):
        sim.dead = True
        await driver.play_tts("测试", 8, cmd_id="c1")
        await until(lambda: any(r["cmd_id"] == "c1" for r in sink.results))
        assert sink.results[-1]["status"] == "failed"
        assert ("speaker-01", "playback_failed") in sink.active
        sim.dead = False
        await driver.play_tts("恢复", 8, cmd_id="c2")
        await until(lambda: any(r["cmd_id"] == "c2" and r["status"] == "played"
                                for r in sink.results))
        assert ("speaker-01", "playback_failed") not in sink.active


async def test_a_full_queue_refuses_normal_plays() -> None:
    async with running() as (driver, sim, sink):
        await until(lambda: driver.stats.polls_ok >= 1)  # the driver is running
        driver.queue._max = 2
        sim.dead = True  # plays now fail slowly, one reply timeout each
        results = [await driver.play_tts(f"公告{i}", 8, cmd_id=f"n{i}") for i in range(5)]
        assert [r["queued"] for r in results].count(False) >= 2
        assert any(r["status"] == "refused" for r in sink.results)


def test_clip_allow_list() -> None:
    cfg = validate(EdgeConfig, {
        "gateway": {"id": "gw", "county_code": "320508", "key_file": "k", "state_dir": "s"},
        "uplink": {"host": "127.0.0.1", "port": 1, "tls": False},
        "devices": [dump(speaker(1))]})
    local_h = 12  # noon at UTC+8: outside the default quiet hours 22:00-07:00
    rules = SafetyRules(cfg, now=lambda: dt.datetime(2026, 11, 26, local_h - 8, tzinfo=dt.UTC),
                        clock_trusted=lambda: True)
    ok = check(PlayClip, {"clip": "evacuate", "sha256": CLIP_SHA})
    bad = check(PlayClip, {"clip": "evacuate", "sha256": "cd" * 32})
    unknown = check(PlayClip, {"clip": "music", "sha256": CLIP_SHA})
    assert rules.check("speaker-01", "speaker.play_clip", ok, {"broadcast"}) is None
    assert "allow-list" in (rules.check("speaker-01", "speaker.play_clip", bad, set()) or "")
    assert "allow-list" in (rules.check("speaker-01", "speaker.play_clip", unknown, set()) or "")
    # a clip is as loud as a text: the volume cap and quiet hours hold for it too
    loud = check(PlayClip, {"clip": "evacuate", "sha256": CLIP_SHA, "volume": 16})
    assert "maximum" in (rules.check("speaker-01", "speaker.play_clip", loud, {"broadcast"}) or "")
    local_h = 23
    assert "quiet hours" in (rules.check("speaker-01", "speaker.play_clip", ok, {"broadcast"})
                             or "")


@pytest.mark.parametrize("spec", ["22:00-07:00"])
def test_quiet_hours_wrap_midnight(spec: str) -> None:
    from edge.safety import in_quiet_hours

    assert in_quiet_hours(spec, dt.time(23, 0))
    assert in_quiet_hours(spec, dt.time(6, 59))
    assert not in_quiet_hours(spec, dt.time(7, 0))
    assert not in_quiet_hours(spec, dt.time(12, 0))


async def test_a_clip_play_on_a_syn6288_fails_with_a_reason() -> None:
    async with running() as (driver, sim, sink):
        await until(lambda: driver.stats.polls_ok >= 1)
        queued = await driver.play_clip("evacuate", CLIP_SHA, 8, cmd_id="clip-1")
        assert queued == {"queued": True, "clip": "evacuate", "priority": "normal"}
        await until(lambda: any(r["cmd_id"] == "clip-1" for r in sink.results))
        result = sink.results[-1]
        assert (result["action"], result["status"]) == ("speaker.play_clip", "failed")
        assert result["reason"] == "speaker-01: SYN6288 has no clip store"
        assert result["clip"] == "evacuate"
        assert "text_chars" not in result
        assert sim.spoken == []  # nothing was sent to the board
