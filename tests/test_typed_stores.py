"""The typed stores of ``edge/buffer/`` on their own (issue 13, D81; asked by the review):
an alarm's id survives a restart, a failed append takes its alarm change with it, and the
journal's claim refuses a duplicate and a counter rollback by itself.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edge.buffer.alarm_state import AlarmCleared, AlarmRaised, AlarmState
from edge.buffer.command_journal import Claim
from edge.errors import StoreError
from tests.outbox_sql import sql_rows
from tests.outbox_util import ev, open_store

KEY = "manhole-12:cover_open"


def test_a_raised_alarm_id_survives_a_restart_and_its_clear_removes_it(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    store = open_store(path)
    store.append([ev(prio=0, alarm="raised")],
                 alarm_state=[AlarmRaised(KEY, "a-1", time.time_ns(), {"kind": "cover_open"})])
    store.close()  # no drain: the agent was killed after the commit
    store = open_store(path)
    assert store.alarms.active() == {KEY: ("a-1", {"kind": "cover_open"})}
    store.append([ev(prio=1, alarm="cleared")], alarm_state=[AlarmCleared(KEY)])
    store.close()
    store = open_store(path)
    assert store.alarms.active() == {}
    store.close()


def test_a_failed_append_takes_its_alarm_change_with_it(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(tmp_path / "outbox.db")
    real_write = AlarmState.write

    def write_then_fail(db: sqlite3.Connection, changes: object) -> None:
        real_write(db, changes)  # type: ignore[arg-type]
        raise sqlite3.OperationalError("injected: the disk went away mid-transaction")

    monkeypatch.setattr(AlarmState, "write", staticmethod(write_then_fail))
    with pytest.raises(StoreError):
        store.append([ev(prio=0, alarm="raised")],
                     alarm_state=[AlarmRaised(KEY, "a-2", time.time_ns())])
    monkeypatch.undo()
    assert store.alarms.active() == {}  # neither the alarm id ...
    assert sql_rows(store, "SELECT count(*) FROM events") == [(0,)]  # ... nor its event
    store.close()


def test_the_journal_claim_refuses_a_duplicate_and_a_rollback_itself(tmp_path: Path) -> None:
    store = open_store(tmp_path / "outbox.db")
    now_ns = time.time_ns()

    def claim(cmd_id: str, ctr: int) -> str | None:
        return store.journal.claim(Claim(cmd_id, "kid-1", "kid-1/platform-a", ctr, "light.set",
                                         "lamp-07", now_ns))

    assert claim("c-1", 100) is None
    assert claim("c-1", 101) == "duplicate"
    assert claim("c-2", 100) == "counter_rollback"
    assert claim("c-3", 99) == "counter_rollback"
    assert not store.journal.seen("c-2")  # a refused claim records nothing
    assert store.journal.counters() == {"kid-1/platform-a": 100}
    assert claim("c-4", 101) is None
    store.close()
