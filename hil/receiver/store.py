"""The receiver's SQLite store: events deduplicated on (gateway, id), cases, gateways."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    gw TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
    prio INTEGER NOT NULL, ts TEXT NOT NULL, device TEXT, received_ns INTEGER NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (gw, id));
CREATE INDEX IF NOT EXISTS events_seq ON events (gw, seq);
CREATE TABLE IF NOT EXISTS cases (
    case_no INTEGER PRIMARY KEY AUTOINCREMENT, gw TEXT NOT NULL, alarm_id TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL, device TEXT, asset_code TEXT, asset_name TEXT, lat REAL, lon REAL,
    class TEXT, event_class TEXT, value REAL, state TEXT NOT NULL, opened_ts TEXT NOT NULL,
    closed_ts TEXT, opened_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS gateways (
    gw TEXT PRIMARY KEY, online INTEGER NOT NULL, state TEXT NOT NULL, updated_ns INTEGER);
CREATE TABLE IF NOT EXISTS gaps_announced (gw TEXT, first_seq INTEGER, last_seq INTEGER,
    reason TEXT);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class ReceiverStore:
    """Receiver state in one SQLite file (restartable: tests stop and reopen it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a test tool; the gateway keeps FULL
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction: nothing of a refused batch is half-stored."""
        self.db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @staticmethod
    def retryable(_exc: BaseException) -> bool:
        """Whether a failed batch may be run again (never: one writer, PgReceiverStore has)."""
        return False

    def bump(self, name: str, n: int = 1) -> None:
        """Add to a counter."""
        self.db.execute("INSERT INTO counters VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET "
                        "value = value + excluded.value", (name, n))

    def counters(self) -> dict[str, int]:
        """Return all counters."""
        return {k: int(v) for k, v in self.db.execute("SELECT name, value FROM counters")}

    def add_event(self, gw: str, event: dict[str, Any]) -> bool:
        """Store an event; return False when it is a duplicate (same gateway and id)."""
        cur = self.db.execute(
            "INSERT OR IGNORE INTO events (gw, id, seq, type, prio, ts, device, received_ns, doc) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (gw, event["id"], event["seq"], event["type"], event["prio"], event["ts"],
             event.get("device"), time.time_ns(), json.dumps(event, ensure_ascii=False)))
        return cur.rowcount == 1

    def add_events(self, gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        """Store a batch's events; return which ones were new, in order."""
        return [self.add_event(gw, event) for event in events]

    def open_case(self, gw: str, event: dict[str, Any]) -> int | None:
        """Open a case for an alarm raise; return its number (None if already open)."""
        alarm, asset = event["alarm"], event.get("asset") or {}
        # Case numbers are what operators see: numbered max + 1 in the same statement (dense
        # 1, 2, 3 ...). INSERT OR IGNORE with AUTOINCREMENT let re-announced raises of an open
        # case consume numbers (#1 then #4 in a short demo: review 14 #8).
        cur = self.db.execute(
            "INSERT INTO cases (case_no, gw, alarm_id, kind, device, asset_code, asset_name, "
            "lat, lon, class, event_class, value, state, opened_ts, opened_ns) "
            "SELECT (SELECT coalesce(max(case_no), 0) + 1 FROM cases), "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM cases WHERE alarm_id = ?)",
            (gw, alarm["alarm_id"], alarm["kind"], event.get("device"), asset.get("code"),
             asset.get("name"), asset.get("lat"), asset.get("lon"), asset.get("class"),
             alarm.get("event_class"), alarm.get("value"), event["ts"], time.time_ns(),
             alarm["alarm_id"]))
        if cur.rowcount != 1:
            return None
        return int(cur.lastrowid or 0)

    def close_case(self, alarm_id: str, ts: str) -> int | None:
        """Close the case of ``alarm_id``; return its number (None if none was open)."""
        row = self.db.execute("SELECT case_no FROM cases WHERE alarm_id=? AND state='open'",
                              (alarm_id,)).fetchone()
        if row is None:
            return None
        self.db.execute("UPDATE cases SET state='closed', closed_ts=? WHERE case_no=?",
                        (ts, row[0]))
        return int(row[0])

    def cases(self, state: str | None = None) -> list[dict[str, Any]]:
        """Return cases, newest first."""
        where = " WHERE state=?" if state else ""
        sql = f"SELECT * FROM cases{where} ORDER BY case_no DESC"  # noqa: S608 - fixed text
        cur = self.db.execute(sql, (state,) if state else ())
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def events(self, limit: int = 50, type_: str | None = None) -> list[dict[str, Any]]:
        """Return recent events (newest first)."""
        where = " WHERE type=?" if type_ else ""
        sql = f"SELECT doc FROM events{where} ORDER BY received_ns DESC LIMIT ?"  # noqa: S608
        args: tuple[Any, ...] = (type_, limit) if type_ else (limit,)
        return [json.loads(r[0]) for r in self.db.execute(sql, args)]

    def set_gateway(self, gw: str, online: bool, state: dict[str, Any]) -> None:
        """Record a gateway's birth/state/last-will message."""
        self.db.execute("INSERT OR REPLACE INTO gateways VALUES (?, ?, ?, ?)",
                        (gw, int(online), json.dumps(state, ensure_ascii=False), time.time_ns()))

    def gateways(self) -> list[dict[str, Any]]:
        """Return every gateway with its last state."""
        return [{"gw": gw, "online": bool(on), "state": json.loads(st), "updated_ns": up}
                for gw, on, st, up in self.db.execute("SELECT * FROM gateways ORDER BY gw")]

    def announce_gap(self, gw: str, first_seq: int, last_seq: int, reason: str) -> None:
        """Record a range the gateway said it dropped."""
        self.db.execute("INSERT INTO gaps_announced VALUES (?, ?, ?, ?)",
                        (gw, first_seq, last_seq, reason))

    def seq_gaps(self, gw: str) -> list[tuple[int, int]]:
        """Return missing seq ranges below the highest seen, minus announced drops."""
        rows = self.db.execute(
            "SELECT seq + 1, (SELECT min(b.seq) FROM events b WHERE b.gw = a.gw AND b.seq > a.seq)"
            " - 1 FROM events a WHERE a.gw = ? AND NOT EXISTS (SELECT 1 FROM events c WHERE "
            "c.gw = a.gw AND c.seq = a.seq + 1) AND a.seq < (SELECT max(seq) FROM events d "
            "WHERE d.gw = a.gw) ORDER BY a.seq", (gw,)).fetchall()
        announced = self.db.execute("SELECT first_seq, last_seq FROM gaps_announced WHERE gw=?",
                                    (gw,)).fetchall()
        out = []
        for low, high in rows:
            if not any(a <= low and high <= b for a, b in announced):
                out.append((int(low), int(high)))
        return out

    def seq_count(self, gw: str) -> tuple[int, int, int]:
        """Return (distinct events, min seq, max seq) for a gateway."""
        row = self.db.execute("SELECT count(*), min(seq), max(seq) FROM events WHERE gw=?",
                              (gw,)).fetchone()
        return int(row[0]), int(row[1] or 0), int(row[2] or 0)
