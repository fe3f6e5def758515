"""A test's own look into the outbox's tables: an oracle for the store's answers.

The agent has no such way in (nothing outside ``edge/buffer/`` reads SQL, issue 13); a test
reads the rows directly, on the store's connection, to check what the named methods say.
Likewise ``AsyncOutbox`` keeps its store private (the uplink sees only ``lease.EventQueue``);
``store_of`` is the tests' way to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.lease import EventQueue
from edge.buffer.store import Outbox


def store_of(outbox: EventQueue) -> Outbox:
    """Return the store behind an ``AsyncOutbox`` (also one an uplink holds as its queue)."""
    assert isinstance(outbox, AsyncOutbox), outbox
    return outbox._store


def sql_rows(store: Outbox, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Run a read-only query on ``store``'s connection (its thread, or while it is idle)."""
    return [tuple(r) for r in store._conn.execute(sql, args)]
