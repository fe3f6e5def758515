"""supervise(): keep one driver running; jittered restarts; one line down, one back per outage."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from typing import Any

from edge.drivers.base import AlarmChange, DeviceState, Driver, Reading, Sink, Value
from edge.errors import DeviceError

log = logging.getLogger(__name__)


class _OutageSink:
    """The driver's sink during an outage: its first reading after a restart ends the outage.

    A reading is the one sign every driver gives of working again (a restart that fails at
    once, or runs without data, is still the same outage); the line is logged here so that
    it appears when the device is back, not at its next failure.
    """

    def __init__(self, sink: Sink, name: str) -> None:
        self._sink = sink
        self._name = name
        self.down_since: float | None = None

    def back(self) -> None:
        if self.down_since is not None:
            log.info("device %s back after %.1f s", self._name,
                     time.monotonic() - self.down_since)
            self.down_since = None

    async def reading(self, reading: Reading) -> None:
        self.back()
        await self._sink.reading(reading)

    async def alarm(self, change: AlarmChange) -> None:
        await self._sink.alarm(change)

    async def state(self, device: str, state: DeviceState, detail: str) -> None:
        await self._sink.state(device, state, detail)

    def active_alarms(self, device: str) -> set[str]:
        return self._sink.active_alarms(device)

    async def command_result(self, device: str, cmd_id: str | None, action: str,
                             status: str, detail: Mapping[str, Value]) -> None:
        await self._sink.command_result(device, cmd_id, action, status, detail)

    def gnss_time(self, utc_ns: int) -> None:
        self._sink.gnss_time(utc_ns)

    # work coverage (edge/drivers/gps.py CoverageSink): passed through when the sink has it
    def trusted_now_ns(self) -> tuple[int, bool]:
        inner = getattr(self._sink, "trusted_now_ns", None)
        return inner() if inner is not None else (time.time_ns(), False)

    async def work_coverage(self, device: str, report: dict[str, Any]) -> None:
        inner = getattr(self._sink, "work_coverage", None)
        if inner is not None:
            await inner(device, report)


async def supervise(driver: Driver[Any], sink: Sink, *, cap_s: float = 60.0) -> None:
    """Run ``driver`` forever; cancellation stops it.

    After a failure it waits ``uniform(0, min(cap_s, 1.5 ** attempt))`` and restarts it.
    Each outage is logged twice: when the driver fails (WARNING; a crash, which is a bug,
    with its traceback) and when it delivers its first reading again (INFO, with its length).
    """
    attempt = 0
    watch = _OutageSink(sink, driver.name)
    while True:
        started = time.monotonic()
        try:
            await driver.run(watch)
        except DeviceError as exc:
            driver.stats.last_error = str(exc)
            if watch.down_since is None:
                log.warning("device %s down: %s", driver.name, exc)
        except Exception:
            if watch.down_since is None:
                log.exception("device %s down: crashed (a bug); restarting", driver.name)
        if watch.down_since is None:
            watch.down_since = time.monotonic()
        if time.monotonic() - started > 60:
            attempt = 0  # it ran a good while: this is a new outage
        attempt += 1
        await asyncio.sleep(random.uniform(0, min(cap_s, 1.5 ** attempt)))
