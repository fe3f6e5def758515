"""Housekeeping the agent runs once a second: time correction, the clock floor, retention.

- When the clock first becomes trusted, events queued unsynced in this boot are re-stamped
  (a restart before the first sync included: ``was_synced`` starts False).
- While synced, the floor that GNSS time may never go below is saved every ``FLOOR_EVERY_S``
  (D66); never GNSS time itself (D67).
- Every ``PRUNE_EVERY_S`` while synced, events older than their retention are dropped.
- A GNSS time source found suspect raises one system alarm per boot (D66).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from edge.aux_writes import AuxWrites
from edge.clock import FLOOR_EVERY_S, FLOOR_FILE, Clock, TimeQuality, write_floor
from edge.config import OutboxConfig

log = logging.getLogger(__name__)
PRUNE_EVERY_S = 600.0
TICK_S = 1.0


class RetainedQueue(Protocol):
    """What maintenance needs of the outbox (``AsyncOutbox`` has it)."""

    async def correct_unsynced(self, boot_id: str, wall_now_ns: int, mono_now_ms: int) -> int:
        """Re-stamp this boot's unsynced events; return how many."""
        ...

    async def prune(self, now_ns: int, *, alarm_retention_s: float,
                    telemetry_retention_s: float,
                    position_retention_s: float | None = None) -> dict[int, int]:
        """Drop events older than their retention."""
        ...


class Maintenance:
    """The ``agent.maintenance`` task and the clock floor saved at stop."""

    def __init__(self, clock: Clock, outbox: RetainedQueue, retention: OutboxConfig, *,
                 state_dir: Path, aux_writes: AuxWrites,
                 system_alarm: Callable[[str, str], Awaitable[None]]) -> None:
        self._clock = clock
        self._outbox = outbox
        self._retention = retention  # outbox is a restart section: fixed for the run
        self._floor_path = state_dir / FLOOR_FILE
        self._aux_writes = aux_writes
        self._system_alarm = system_alarm

    async def run(self) -> None:
        """Run until cancelled."""
        was_synced = suspect_raised = False
        next_prune = next_floor = 0.0
        clock = self._clock
        while True:
            synced = clock.quality() is TimeQuality.SYNCED
            if clock.gnss_suspect is not None and not suspect_raised:
                suspect_raised = True  # once per boot (D66)
                await self._system_alarm("time_source_suspect", clock.gnss_suspect)
            if synced and time.monotonic() >= next_floor:
                await asyncio.to_thread(self.save_clock_floor)  # an fsync: off the loop
                next_floor = time.monotonic() + FLOOR_EVERY_S
            if synced and not was_synced:
                n = await self._outbox.correct_unsynced(clock.boot_id, clock.now_ns(),
                                                        time.monotonic_ns() // 1_000_000)
                log.info("clock synced: %d queued events re-stamped", n)
            was_synced = synced
            if synced and time.monotonic() >= next_prune:
                await self._outbox.prune(
                    clock.now_ns(), alarm_retention_s=self._retention.alarm_retention_s,
                    telemetry_retention_s=self._retention.telemetry_retention_s,
                    position_retention_s=self._retention.position_retention_s)
                next_prune = time.monotonic() + PRUNE_EVERY_S
            await asyncio.sleep(TICK_S)

    def save_clock_floor(self) -> None:
        """Persist the floor GNSS may never go below (D66), never GNSS time itself (D67)."""
        now_ns = self._clock.floor_to_persist()
        if now_ns is None or (self._clock.floor_ns is not None
                              and now_ns <= self._clock.floor_ns):
            return
        try:
            write_floor(self._floor_path, now_ns)
        except OSError as exc:  # retried at the next period and at stop (f14 #1)
            self._aux_writes.failed(FLOOR_FILE, exc)
        else:
            self._aux_writes.written(FLOOR_FILE)


def release_startup_memory() -> None:
    """Hand the heap that start-up left free back to the kernel.

    Building 200 drivers, unpickling the config (validated in a child since D86) and the first
    polls leave freed pages glibc keeps unless asked (docs/decisions.md D27). No-op where there
    is no glibc.
    """
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
