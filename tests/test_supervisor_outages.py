"""Issue 14 finding 6: every outage of a supervised driver is one line down and one line back."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest
from typing_extensions import override

from edge.drivers.base import Driver, Reading, Sink
from edge.errors import DeviceUnavailableError
from edge.supervisor import supervise
from tests.recording_sink import RecordingSink


class Scripted(Driver[Any]):
    """Each run: deliver ``readings`` readings, then fail (or, on the last script, idle)."""

    kind = "scripted"

    def __init__(self, script: list[int]) -> None:
        super().__init__(None, "dev-1")
        self.script = script
        self.runs = 0

    @override
    async def run(self, sink: Sink) -> None:
        readings = self.script[self.runs]
        self.runs += 1
        for _ in range(readings):
            await sink.reading(Reading(self.name, {"v": 1}, time.time_ns(), time.monotonic_ns()))
        if self.runs == len(self.script):
            await asyncio.Event().wait()
        raise DeviceUnavailableError(self.name, f"link lost (run {self.runs})")


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "edge.supervisor"]


async def test_two_outages_are_two_lines_down_and_two_back(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edge.supervisor")
    # up, down; a failed restart (same outage); back, down again; back and stays up
    driver = Scripted([3, 0, 2, 1])
    sink = RecordingSink()
    task = asyncio.create_task(supervise(driver, sink, cap_s=0.01))
    try:
        async with asyncio.timeout(5):
            while driver.runs < 4 or len(sink.readings) < 6:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    got = lines(caplog)
    down = [m for m in got if "down" in m]
    back = [m for m in got if "back" in m]
    assert len(down) == 2, got
    assert len(back) == 2, got
    assert "run 1" in down[0]
    assert "run 3" in down[1]
    assert len(got) == 4, got


async def test_a_crashing_driver_logs_its_traceback_once_per_outage(
        caplog: pytest.LogCaptureFixture) -> None:
    class Buggy(Scripted):
        @override
        async def run(self, sink: Sink) -> None:
            self.runs += 1
            if self.runs == 4:
                await sink.reading(Reading(self.name, {"v": 1}, time.time_ns(),
                                           time.monotonic_ns()))
                await asyncio.Event().wait()
            msg = "a bug"
            raise ZeroDivisionError(msg)

    caplog.set_level(logging.INFO, logger="edge.supervisor")
    driver = Buggy([])
    sink = RecordingSink()
    task = asyncio.create_task(supervise(driver, sink, cap_s=0.01))
    try:
        async with asyncio.timeout(5):
            while not sink.readings:
                await asyncio.sleep(0.01)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    got = lines(caplog)
    assert len([r for r in caplog.records if r.exc_info]) == 1, got
    assert len(got) == 2, got
    assert "back" in got[1]
