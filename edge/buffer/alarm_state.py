"""The sink's active alarms, kept in the outbox's database (table ``active_alarms``).

A raise's ``alarm_id`` is written in the same transaction as its event (``Outbox.append``
takes the changes), so a restart never loses the id of a raised alarm and its clear closes the
same case. Runs on the store's thread only, over the outbox's connection.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# "device:kind" -> (alarm_id, alarm block as raised)
ActiveAlarms = dict[str, tuple[str, dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class AlarmRaised:
    """An alarm became (or stays) active: ``key`` is ``device:kind``."""

    key: str
    alarm_id: str
    raised_ns: int
    detail: dict[str, Any] = field(default_factory=dict)  # the raise's alarm block


@dataclass(frozen=True, slots=True)
class AlarmCleared:
    """An active alarm was cleared."""

    key: str


AlarmStateChange = AlarmRaised | AlarmCleared


class AlarmState:
    """Named reads and writes of ``active_alarms``; store thread only."""

    def __init__(self, conn: Callable[[], sqlite3.Connection]) -> None:
        self._conn = conn

    def active(self) -> ActiveAlarms:
        """Return the active alarms as the last committed raises left them."""
        rows = self._conn().execute("SELECT alarm_key, alarm_id, detail FROM active_alarms")
        return {str(k): (str(a), json.loads(d)) for k, a, d in rows}

    @staticmethod
    def write(db: sqlite3.Connection, changes: Sequence[AlarmStateChange]) -> None:
        """Apply ``changes`` inside the caller's open transaction (the event's own)."""
        for change in changes:
            if isinstance(change, AlarmRaised):
                db.execute("INSERT OR REPLACE INTO active_alarms (alarm_key, alarm_id, "
                           "raised_ns, detail) VALUES (?, ?, ?, ?)",
                           [change.key, change.alarm_id, change.raised_ns,
                            json.dumps(change.detail)])
            else:
                db.execute("DELETE FROM active_alarms WHERE alarm_key=?", [change.key])
