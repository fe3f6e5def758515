"""The downlink command journal, kept in the outbox's database (design/events.md §Commands).

Tables ``commands`` (received -> executing -> done | failed | rejected | unknown) and
``command_counters`` (the last accepted ``ctr`` per counter key: the kid, or ``kid/iss``, D59).
``CommandJournal`` runs on the store's thread over the outbox's connection;
``AsyncCommandJournal`` is its view from the event loop (each call hops to that thread).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Claim:
    """A verified command the journal is asked to record (check 4 of the processor)."""

    cmd_id: str
    kid: str
    counter_key: str  # the kid, or kid/iss
    ctr: int
    action: str
    device: str | None
    received_ns: int


class CommandJournal:
    """Named reads and writes of the command journal; store thread only."""

    def __init__(self, conn: Callable[[], sqlite3.Connection],
                 tx: Callable[[], AbstractContextManager[sqlite3.Connection]]) -> None:
        self._conn = conn
        self._tx = tx

    def seen(self, cmd_id: str) -> bool:
        """Return whether the journal holds ``cmd_id`` (replay check 4)."""
        return self._conn().execute("SELECT 1 FROM commands WHERE cmd_id=?",
                                    (cmd_id,)).fetchone() is not None

    def counters(self) -> dict[str, int]:
        """Return the last accepted counter per counter key (kid, or ``kid/iss``)."""
        return {str(k): int(c) for k, c in
                self._conn().execute("SELECT kid, ctr FROM command_counters")}

    def claim(self, claim: Claim) -> str | None:
        """Check 4 and record the command as ``received``; return why it is refused, if so.

        One call on the store's thread, so no other journal write falls between the check
        and the record.
        """
        if self.seen(claim.cmd_id):
            return "duplicate"
        row = self._conn().execute("SELECT ctr FROM command_counters WHERE kid=?",
                                   (claim.counter_key,)).fetchone()
        if row is not None and claim.ctr <= int(row[0]):
            return "counter_rollback"
        with self._tx() as db:
            db.execute("INSERT INTO commands (cmd_id, kid, ctr, action, device, state, "
                       "received_ns, updated_ns) VALUES (?, ?, ?, ?, ?, 'received', ?, ?)",
                       (claim.cmd_id, claim.kid, claim.ctr, claim.action, claim.device,
                        claim.received_ns, claim.received_ns))
            db.execute("INSERT INTO command_counters (kid, ctr) VALUES (?, ?) ON CONFLICT(kid) "
                       "DO UPDATE SET ctr = excluded.ctr", (claim.counter_key, claim.ctr))
        return None

    def set_state(self, cmd_id: str, state: str, reason: str) -> None:
        """Record a command's next state (executing, done, failed, rejected)."""
        with self._tx() as db:
            db.execute("UPDATE commands SET state=?, reason=?, updated_ns=? WHERE cmd_id=?",
                       (state, reason, time.time_ns(), cmd_id))

    def state(self, cmd_id: str) -> str | None:
        """Return the journalled state of ``cmd_id`` (None if it was never recorded)."""
        row = self._conn().execute("SELECT state FROM commands WHERE cmd_id=?",
                                   (cmd_id,)).fetchone()
        return None if row is None else str(row[0])

    def recover(self) -> list[tuple[str, str, str | None]]:
        """Mark commands a crash interrupted ``unknown``; return their (cmd_id, action, device)."""
        rows = self._conn().execute("SELECT cmd_id, action, device FROM commands WHERE state "
                                    "IN ('received', 'executing')").fetchall()
        with self._tx() as db:
            db.execute("UPDATE commands SET state='unknown', updated_ns=? WHERE state IN "
                       "('received', 'executing')", (time.time_ns(),))
        return [(str(c), str(a), d) for c, a, d in rows]


class OnStoreThread(Protocol):
    """Runs ``fn(*args)`` on the store's thread (``AsyncOutbox``'s executor)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]:
        """Return the awaitable result of ``fn(*args)``."""
        ...


class AsyncCommandJournal:
    """The journal from the event loop: every call runs on the store's thread."""

    def __init__(self, journal: CommandJournal, run: OnStoreThread) -> None:
        self._journal = journal
        self._run = run

    async def seen(self, cmd_id: str) -> bool:
        """Return whether the journal holds ``cmd_id``."""
        return await self._run(self._journal.seen, cmd_id)

    async def counters(self) -> dict[str, int]:
        """Return the last accepted counter per counter key."""
        return await self._run(self._journal.counters)

    async def claim(self, claim: Claim) -> str | None:
        """Check 4 and record the command (see ``CommandJournal.claim``)."""
        return await self._run(self._journal.claim, claim)

    async def set_state(self, cmd_id: str, state: str, reason: str) -> None:
        """Record a command's next state."""
        await self._run(self._journal.set_state, cmd_id, state, reason)

    async def recover(self) -> list[tuple[str, str, str | None]]:
        """Mark interrupted commands ``unknown`` and return them."""
        return await self._run(self._journal.recover)
