"""Issue 14 finding 7: ``stats()`` reads counters, never the whole queue (it ran every 2 s on
the store's thread: ~0.7 s with 1 M queued, blocking every commit meanwhile)."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from edge.buffer.migrations import SCHEMA
from edge.buffer.store import Outbox
from edge.clock import Clock
from tests.outbox_sql import sql_rows
from tests.outbox_util import ev, open_store


def truth(store: Outbox) -> dict[str, Any]:
    """What a full scan says (the old stats())."""
    by_prio = {str(p): {"events": n, "bytes": b} for p, n, b in sql_rows(store,
        "SELECT prio, count(*), sum(length(payload)) FROM events GROUP BY prio")}
    dead = sql_rows(store, "SELECT count(*) FROM dead_letters")[0][0]
    return {"by_prio": by_prio, "dead_letters": dead}


def counted(store: Outbox) -> dict[str, Any]:
    stats = store.stats()
    return {"by_prio": {p: {"events": v["events"], "bytes": v["bytes"]}
                        for p, v in stats["by_prio"].items()},
            "dead_letters": stats["dead_letters"]}


def vm_steps(store: Outbox) -> int:
    """SQLite VM instructions one stats() call executes (a scan is linear in the queue)."""
    steps = 0

    def tick() -> int:
        nonlocal steps
        steps += 100
        return 0

    store._conn.set_progress_handler(tick, 100)
    try:
        store.stats()
    finally:
        store._conn.set_progress_handler(None, 0)
    return steps


def test_stats_reads_no_more_with_20k_queued_than_with_10(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db")
    try:
        store.append([ev(p, n=i) for i, p in enumerate([0, 1, 2, 3] * 3)])
        small = vm_steps(store)
        for _ in range(20):
            store.append([ev(3 if i % 4 else 2, n=i) for i in range(1000)])
        big = vm_steps(store)
        assert big <= small + 200, f"stats() ran {small} VM steps with 12 queued, {big} with 20k"
        assert store.stats()["depth"] == 20_012
    finally:
        store.close()


def test_the_counters_match_a_scan_after_every_kind_of_change(tmp_path: Path) -> None:
    store = open_store(tmp_path / "o.db", quota_bytes=2 * 1024 * 1024, max_attempts=1)
    clock = Clock("system")
    try:
        seqs = store.append([ev(p, size=50 * p, n=i) for i, p in enumerate([0, 1, 2, 3] * 50)]
                            ).seqs
        assert counted(store) == truth(store)
        store.ack(seqs[:30])  # delete
        assert counted(store) == truth(store)
        dead = store.nack([item.seq for item in store.lease(10)], "rejected")  # dead letters
        assert dead
        assert counted(store) == truth(store)
        assert counted(store)["dead_letters"] == len(dead)
        store.requeue_dead()
        assert counted(store) == truth(store)
        unsynced = [ev(3, n=1)]
        unsynced = [type(e)(e.type, e.prio, e.ts_ns, e.time_quality, device=e.device,
                            data=e.data, mono=(clock.boot_id, 5)) for e in unsynced]
        store.append(unsynced)
        store.correct_unsynced(clock.boot_id, time.time_ns(), 10)  # payloads re-written
        assert counted(store) == truth(store)
        for _ in range(40):  # over the quota: telemetry evicted, gap events added
            store.append([ev(3, size=2000) for _ in range(50)])
        assert store.counters().get("dropped.quota.3", 0) > 0
        assert counted(store) == truth(store)
        store.prune(time.time_ns() + 10**12, alarm_retention_s=1e9, telemetry_retention_s=1)
        assert counted(store) == truth(store)
    finally:
        store.close()


def test_a_store_from_before_the_counters_is_counted_at_migration(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    old = sqlite3.connect(path)  # written as an agent of schema 2 wrote it (today's would not)
    for _version, sql in SCHEMA[:2]:
        old.executescript(sql)
    old.execute("PRAGMA user_version=2")
    for i, prio in enumerate([0, 1, 2, 3, 3, 3]):
        old.execute("INSERT INTO events (prio, created_ns, payload) VALUES (?, 1, ?)",
                    (prio, json.dumps({"seq": i + 1, "n": "x" * i}).encode()))
    old.execute("INSERT INTO dead_letters (seq, prio, created_ns, attempts, reason, dead_ns, "
                "payload) SELECT seq, prio, created_ns, 1, 'rejected', 1, payload FROM events "
                "WHERE seq=1")
    old.execute("DELETE FROM events WHERE seq=1")
    old.commit()
    by_prio = {str(p): {"events": n, "bytes": b} for p, n, b in old.execute(
        "SELECT prio, count(*), sum(length(payload)) FROM events GROUP BY prio")}
    expected = {"by_prio": by_prio, "dead_letters": 1}
    old.close()
    store = open_store(path)
    try:
        assert counted(store) == expected
        assert store.stats()["depth"] == 5
    finally:
        store.close()
