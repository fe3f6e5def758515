"""Persisted counters kept with the events (drops by reason and prio, dead letters)."""

from __future__ import annotations

import sqlite3


def bump(db: sqlite3.Connection, name: str, n: int) -> None:
    """Add ``n`` to counter ``name`` in the caller's transaction."""
    db.execute("INSERT INTO counters (name, value) VALUES (?, ?) ON CONFLICT(name) DO "
               "UPDATE SET value = value + excluded.value", (name, n))


def read_counters(db: sqlite3.Connection) -> dict[str, int]:
    """Return every counter."""
    return {k: int(v) for k, v in db.execute("SELECT name, value FROM counters")}
