"""The outbox from asyncio: one thread owns the store, one task groups commits.

``put`` returns once the event is committed (durable before anything is acknowledged).
Appends and acks that arrive while a commit runs share the next transaction (natural group
commit, capped at ``commit_max_events``); telemetry-only batches linger up to
``commit_max_wait_s`` to share an fsync, alarms never wait.

Each event is encoded once before it joins a batch: one the encoder refuses (a NaN from a
device) raises ``EventRejectedError`` to its own caller and never fails the events batched
with it. Anything else that breaks a commit fails that batch's callers and ends ``run()``, so
the agent's TaskGroup stops the agent (systemd restarts it) instead of leaving every later
``put`` waiting (issue 14).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from edge.buffer.alarm_state import ActiveAlarms, AlarmStateChange
from edge.buffer.command_journal import AsyncCommandJournal
from edge.buffer.lease import Leased
from edge.buffer.store import AppendResult, Outbox
from edge.errors import EventRejectedError, StoreError, StoreFullError
from edge.model import ALARM_PRIOS, Event, encode_event

log = logging.getLogger(__name__)
T = TypeVar("T")
# at close, a task that outlived its caller (detach) gets this long to finish, then is cancelled
DETACHED_SETTLE_S = 2.0


@dataclass(slots=True)
class _Op:
    events: list[Event] = field(default_factory=list)
    acks: list[int] = field(default_factory=list)
    alarm_state: list[AlarmStateChange] = field(default_factory=list)
    done: asyncio.Future[None] | None = None


class AsyncOutbox:
    """Async facade over ``Outbox``; ``run()`` is the writer task (owned by the agent).

    The uplink sees it as ``lease.EventQueue`` only. The store itself is private: the agent
    reads what it needs through named properties (``path``, ``replaced_corrupt``,
    ``corrupt_reason``); tests reach it through ``tests/outbox_sql.store_of``.
    """

    def __init__(self, store: Outbox, *, commit_max_events: int = 100,
                 commit_max_wait_s: float = 0.05, queue_max: int = 10_000) -> None:
        self._store = store
        self.commit_max_events = commit_max_events
        self.commit_max_wait_s = commit_max_wait_s
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outbox")
        self._ops: asyncio.Queue[_Op] = asyncio.Queue(maxsize=queue_max)
        self.new_data = asyncio.Event()  # set after a commit that stored events
        self.commits = 0
        self.events_committed = 0
        self.last_commit_mono = time.monotonic()
        self.refused: dict[int, int] = {}
        self.alarms_waiting = 0
        self.evicted: dict[int, int] = {}
        self.rejected: dict[int, int] = {}  # prio -> events refused by the encoder
        self._detached: set[asyncio.Task[Any]] = set()
        self.journal = AsyncCommandJournal(store.journal, self._call)

    @property
    def path(self) -> Path:
        """Return the store's file (state files beside it: the command replay window)."""
        return self._store.path

    @property
    def replaced_corrupt(self) -> Path | None:
        """Return where ``open`` moved a corrupt store aside; None when it opened as it was."""
        return self._store.replaced_corrupt

    @property
    def corrupt_reason(self) -> str:
        """Return why ``open`` found the store corrupt ("" when it did not)."""
        return self._store.corrupt_reason

    @property
    def queued(self) -> int:
        """Return how many ops wait for the writer."""
        return self._ops.qsize()

    async def _call(self, fn: Callable[..., T], /, *args: Any) -> T:
        """Run ``fn(*args)`` on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        """Open the store on its thread."""
        await self._call(self._store.open)

    def detach(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run an outbox operation that must outlive its caller, owned by the outbox.

        A committed alarm must reach the sink's active map even when the driver is cancelled
        meanwhile, and a lease must be given back when the uplink is; such a task is not in
        its caller's TaskGroup, so the outbox owns it: ``close`` awaits (then cancels) every
        one still running (review finding 7: no task outlives the outbox).
        """
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._detached.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._detached.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: no GC warning
            log.debug("outbox: %s ended with %r", task.get_name(), task.exception())

    async def _settle_detached(self) -> None:
        deadline = time.monotonic() + DETACHED_SETTLE_S
        while self._detached:  # a finishing task may detach another (a lease's give-back)
            pending = set(self._detached)
            left_s = deadline - time.monotonic()
            if left_s > 0:
                await asyncio.wait(pending, timeout=left_s)
                continue
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def close(self) -> None:
        """Close the store and stop its thread (after the writer task has ended).

        Detached operations finish first (or are cancelled after ``DETACHED_SETTLE_S``).
        """
        await self._settle_detached()
        await self._call(self._store.close)
        self._thread.shutdown(wait=True)

    async def put(self, event: Event) -> None:
        """Store one event; return once it is committed. StoreFullError if it was refused."""
        await self.put_many([event])

    async def put_many(self, events: Sequence[Event],
                       alarm_state: Sequence[AlarmStateChange] = ()) -> None:
        """Store events and apply ``alarm_state`` in one transaction; return once committed.

        EventRejectedError (before anything is queued) when an event cannot be encoded.
        """
        for event in events:
            self._check_encodable(event)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._ops.put(_Op(events=list(events), alarm_state=list(alarm_state), done=done))
        await done

    def _check_encodable(self, event: Event) -> None:
        """Encode ``event`` now, on its caller's side: a refusal stays with that caller."""
        try:
            encode_event(event, 0)
        except (ValueError, TypeError, RecursionError) as exc:
            self.rejected[event.prio] = self.rejected.get(event.prio, 0) + 1
            raise EventRejectedError(f"{event.type.value} event of {event.device or 'gateway'} "
                                     f"cannot be encoded: {exc}") from exc

    async def ack(self, seqs: Sequence[int]) -> None:
        """Delete acknowledged events; return once the delete is committed."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._ops.put(_Op(acks=list(seqs), done=done))
        await done

    async def lease(self, max_events: int, max_bytes: int, max_prio: int = 3,
                    live: bool | None = None) -> list[Leased]:
        """Lease the next events of prio ≤ ``max_prio`` by (prio, seq) (see Outbox.lease)."""
        return await self._call(self._store.lease, max_events, max_bytes, max_prio, live)

    async def set_live_from(self) -> int:
        """Everything queued now becomes backlog (a connection came up)."""
        return await self._call(self._store.set_live_from)

    async def nack(self, seqs: Sequence[int], reason: str) -> list[int]:
        """Count a failed attempt; return the seqs moved to dead letters."""
        return await self._call(self._store.nack, list(seqs), reason)

    async def release(self, seqs: Sequence[int]) -> None:
        """Return leased events to the queue (the link dropped before their ack)."""
        await self._call(self._store.release, list(seqs))

    async def stats(self) -> dict[str, Any]:
        """Return the store's stats."""
        return await self._call(self._store.stats)

    async def status(self) -> dict[str, Any]:
        """Return the store's stats and the writer's counters (``edge status``)."""
        return await self.stats() | {
            "commits": self.commits, "events_committed": self.events_committed,
            "rejected": {str(prio): n for prio, n in self.rejected.items()}}

    async def seq_baseline(self) -> dict[str, int]:
        """Return ``seq_low`` and ``seq_high`` (see Outbox.seq_baseline)."""
        return await self._call(self._store.seq_baseline)

    async def active_alarms(self) -> ActiveAlarms:
        """Return the active alarms as committed (the sink's map at start)."""
        return await self._call(self._store.alarms.active)

    async def correct_unsynced(self, boot_id: str, wall_now_ns: int, mono_now_ms: int) -> int:
        """Re-stamp this boot's unsynced events (see Outbox.correct_unsynced)."""
        return await self._call(self._store.correct_unsynced, boot_id, wall_now_ns, mono_now_ms)

    async def prune(self, now_ns: int, *, alarm_retention_s: float,
                    telemetry_retention_s: float,
                    position_retention_s: float | None = None) -> dict[int, int]:
        """Drop events older than their retention (see Outbox.prune)."""
        return await self._call(functools.partial(
            self._store.prune, now_ns, alarm_retention_s=alarm_retention_s,
            telemetry_retention_s=telemetry_retention_s,
            position_retention_s=position_retention_s))

    async def run(self) -> None:
        """Group-commit loop; runs until cancelled (then call ``drain``)."""
        while True:
            first = await self._ops.get()
            batch = [first]
            await self._gather(batch)
            await self._commit(batch)

    async def drain(self) -> int:
        """Commit every op still queued (shutdown, after producers stopped); return count."""
        batch: list[_Op] = []
        while True:
            try:
                batch.append(self._ops.get_nowait())
            except asyncio.QueueEmpty:
                break
        if batch:
            await self._commit(batch)
        return sum(len(op.events) for op in batch)

    async def _gather(self, batch: list[_Op]) -> None:
        n = sum(len(op.events) for op in batch)
        urgent = any(e.prio in ALARM_PRIOS for op in batch for e in op.events)
        deadline = time.monotonic() + (0 if urgent else self.commit_max_wait_s)
        while n < self.commit_max_events:
            try:
                op = self._ops.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or all(not o.events for o in batch):
                    return
                try:
                    async with asyncio.timeout(remaining):
                        op = await self._ops.get()
                except TimeoutError:
                    return
            batch.append(op)
            n += len(op.events)
            if any(e.prio in ALARM_PRIOS for e in op.events):
                deadline = time.monotonic()

    async def _append_retrying_alarms(self, events: list[Event], acks: list[int],
                                      alarm_state: list[AlarmStateChange]) -> AppendResult:
        """Append; retry alarms every second while even they find no room.

        An alarm is never dropped: it waits here (bounded by the op queue) for space.
        """
        outage_logged = False
        while True:
            try:
                # shield: a cancelled agent still finishes the transaction it started
                return await asyncio.shield(self._call(self._store.append, events, acks,
                                                       alarm_state))
            except StoreFullError:
                events = [e for e in events if e.prio in ALARM_PRIOS]
                if not events:
                    raise
                if not outage_logged:
                    log.error("outbox: no room for %d alarm events; holding them until space "  # noqa: TRY400
                              "returns", len(events))
                    outage_logged = True
                self.alarms_waiting = len(events)
                await asyncio.sleep(1.0)
            finally:
                self.alarms_waiting = 0

    async def _commit(self, batch: list[_Op]) -> None:
        events = [e for op in batch for e in op.events]
        acks = [s for op in batch for s in op.acks]
        alarm_state = [ch for op in batch for ch in op.alarm_state]
        error: BaseException | None = None
        result = AppendResult()
        try:
            result = await self._append_retrying_alarms(events, acks, alarm_state)
        except StoreError as exc:
            error = exc
        except asyncio.CancelledError:
            _settle(batch, None)
            raise
        except Exception as exc:
            # a bug, not a full or corrupt store: the callers hear it, then the writer dies
            # and takes the agent down with it (its TaskGroup) rather than hang every put
            log.critical("outbox writer failed on a batch of %d events: %r", len(events), exc)
            _settle(batch, StoreError(f"outbox writer failed: {exc!r}"))
            raise
        self.commits += 1
        self.events_committed += len(result.seqs)
        self.last_commit_mono = time.monotonic()
        for prio, n in result.refused.items():
            self.refused[prio] = self.refused.get(prio, 0) + n
        for prio, n in result.evicted.items():
            self.evicted[prio] = self.evicted.get(prio, 0) + n
        if result.seqs or result.gap_seqs:
            self.new_data.set()
        for op in batch:
            if op.done is None or op.done.done():
                continue
            if error is not None:
                op.done.set_exception(error)
            elif result.refused and any(e.prio not in ALARM_PRIOS for e in op.events):
                op.done.set_exception(StoreFullError("telemetry refused: outbox full of alarms"))
            else:
                op.done.set_result(None)
        # futures that nobody awaits any more must not warn about unretrieved exceptions
        for op in batch:
            if op.done is not None and op.done.done() and not op.done.cancelled():
                with contextlib.suppress(BaseException):
                    op.done.exception()


def _settle(batch: list[_Op], error: BaseException | None) -> None:
    """Fail every op of ``batch`` still waiting with ``error`` (None: cancel it)."""
    for op in batch:
        if op.done is None or op.done.done():
            continue
        if error is None:
            op.done.cancel()
        else:
            op.done.set_exception(error)
            with contextlib.suppress(BaseException):  # nobody may await it any more
                op.done.exception()
