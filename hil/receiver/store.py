"""The receiver's SQLite store: events deduplicated on (gateway, id), cases, gateways.

What the map page reads (``/api/map*``, hil/receiver/web.py) is kept up to date as events are
stored: ``assets`` holds each device's asset block and newest event, ``positions`` every
position with a parsed time (a truck's day is an index range, not a JSON scan), ``vehicles``
each tracker's newest position. The PostgreSQL store answers the same ``map_*`` methods.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hil.receiver.core import StateOrder

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
    gw TEXT PRIMARY KEY, online INTEGER NOT NULL, state TEXT NOT NULL, updated_ns INTEGER,
    boot_id TEXT, conn_ms INTEGER, state_n INTEGER, prev_boot TEXT);
CREATE TABLE IF NOT EXISTS gaps_announced (gw TEXT, first_seq INTEGER, last_seq INTEGER,
    reason TEXT);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS events_device ON events (gw, device, received_ns);
CREATE INDEX IF NOT EXISTS events_type ON events (type, received_ns);
CREATE INDEX IF NOT EXISTS cases_device ON cases (gw, device, case_no);
CREATE TABLE IF NOT EXISTS assets (
    gw TEXT NOT NULL, device TEXT NOT NULL, code TEXT, name TEXT, class TEXT, grid TEXT,
    lat REAL, lon REAL, last_ts TEXT NOT NULL, last_type TEXT NOT NULL, last_data TEXT,
    PRIMARY KEY (gw, device));
CREATE TABLE IF NOT EXISTS positions (
    gw TEXT NOT NULL, id TEXT NOT NULL, device TEXT NOT NULL, ts_ns INTEGER NOT NULL,
    lat REAL NOT NULL, lon REAL NOT NULL, speed_kmh REAL, course_deg REAL, PRIMARY KEY (gw, id));
CREATE INDEX IF NOT EXISTS positions_track ON positions (gw, device, ts_ns);
CREATE TABLE IF NOT EXISTS vehicles (
    gw TEXT NOT NULL, device TEXT NOT NULL, code TEXT, name TEXT, ts_ns INTEGER NOT NULL,
    lat REAL NOT NULL, lon REAL NOT NULL, speed_kmh REAL, course_deg REAL,
    PRIMARY KEY (gw, device));
"""
GATEWAY_ORDER_COLUMNS = (("boot_id", "TEXT"), ("conn_ms", "INTEGER"), ("state_n", "INTEGER"),
                         ("prev_boot", "TEXT"))
WILL_N = 2**53 - 1  # a last will's rank in its connection (core.WILL_N)
# Keep a gateway's newest state, not the last written (shared subscriptions reorder; D70):
# an unordered state (an agent before contract 1.1.1, or a plain one) always applies; in one
# boot (conn_ms, n) must not go back; another boot's state replaces the row unless it is a
# will or of the boot this row already replaced (a late message of an old boot).
_UPSERT_GATEWAY = (
    "INSERT INTO gateways (gw, online, state, updated_ns, boot_id, conn_ms, state_n) "  # noqa: S608
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gw) DO UPDATE SET online = excluded.online, "
    "state = excluded.state, updated_ns = excluded.updated_ns, boot_id = excluded.boot_id, "
    "conn_ms = excluded.conn_ms, state_n = excluded.state_n, prev_boot = CASE WHEN "
    "excluded.boot_id IS NOT gateways.boot_id THEN gateways.boot_id ELSE gateways.prev_boot "
    "END WHERE excluded.conn_ms IS NULL OR gateways.conn_ms IS NULL "
    "OR (excluded.boot_id = gateways.boot_id AND (excluded.conn_ms, excluded.state_n) "
    ">= (gateways.conn_ms, gateways.state_n)) "
    f"OR (excluded.boot_id <> gateways.boot_id AND excluded.state_n < {WILL_N} "
    "AND excluded.boot_id IS NOT gateways.prev_boot)")
# bounds of what one map request returns (the page asks for no more)
MAP_MAX_ASSETS = 10_000
MAP_MAX_VALUES = 100  # recent events of one device
MAP_MAX_TRACK_POINTS = 20_000  # a day of 5 s positions is 17,280
MAP_MAX_TRACK_S = 86_400  # one day
MAP_MAX_COVERAGE = 200  # newest work_coverage reports (one per truck)


def _finite(value: object) -> float | None:
    """Return a finite float, or None for anything else (a gateway's data is not trusted)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _ts_ns(ts: object) -> int | None:
    """Return ns since the epoch of an RFC 3339 ``ts``, None when it is not one."""
    if not isinstance(ts, str) or len(ts) > 40:
        return None
    try:
        at = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    if at.tzinfo is None:
        return None
    return int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000



class ReceiverStore:
    """Receiver state in one SQLite file (restartable: tests stop and reopen it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a test tool; the gateway keeps FULL
        self.db.executescript(SCHEMA)
        # files made before the map (demo databases under var/) get the cases' grid column
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(cases)")}
        if "grid" not in columns:
            self.db.execute("ALTER TABLE cases ADD COLUMN grid TEXT")
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(gateways)")}
        for column, kind in GATEWAY_ORDER_COLUMNS:
            if column not in columns:  # files made before states were ordered (D70)
                self.db.execute(f"ALTER TABLE gateways ADD COLUMN {column} {kind}")

    def close(self) -> None:
        """Close the file."""
        self.db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction: nothing of a refused batch is half-stored."""
        self.db.execute("BEGIN")
        try:
            yield
            self.db.execute("COMMIT")  # a COMMIT that fails (locked) must not leave it open
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        """Whether a failed batch may be run again: another process holds the file's lock."""
        return isinstance(exc, sqlite3.OperationalError) and (
            "locked" in str(exc) or "busy" in str(exc))

    @staticmethod
    def failed(exc: BaseException) -> bool:
        """Whether ``exc`` is SQLite's failure (never a rejection of the message: not acked)."""
        return isinstance(exc, sqlite3.Error)

    @staticmethod
    def refused(exc: BaseException) -> bool:
        """Whether SQLite refused this message's data itself (the same every time it comes)."""
        return isinstance(exc, sqlite3.DataError | sqlite3.IntegrityError)

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
        if cur.rowcount != 1:
            return False
        self._map_rows(gw, event)
        return True

    def _map_rows(self, gw: str, event: dict[str, Any]) -> None:
        """Keep the map's tables current (only for new events, so replays change nothing)."""
        device = event.get("device")
        if not isinstance(device, str):
            return
        raw_asset, raw_data = event.get("asset"), event.get("data")
        asset: dict[str, Any] = raw_asset if isinstance(raw_asset, dict) else {}
        data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
        ts = str(event["ts"])
        if event.get("type") == "position":
            at_ns, lat, lon = _ts_ns(ts), _finite(data.get("lat")), _finite(data.get("lon"))
            if at_ns is None or lat is None or lon is None or abs(lat) > 90 or abs(lon) > 180:
                return  # kept as an event, not drawn: no time or no place
            speed, course = _finite(data.get("speed_kmh")), _finite(data.get("course_deg"))
            self.db.execute("INSERT OR IGNORE INTO positions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                            (gw, event["id"], device, at_ns, lat, lon, speed, course))
            # the newest by the fix's time: a gateway draining its backlog sends old ones last
            self.db.execute(
                "INSERT INTO vehicles VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gw, device) "
                "DO UPDATE SET code=excluded.code, name=excluded.name, ts_ns=excluded.ts_ns, "
                "lat=excluded.lat, lon=excluded.lon, speed_kmh=excluded.speed_kmh, "
                "course_deg=excluded.course_deg WHERE excluded.ts_ns >= vehicles.ts_ns",
                (gw, device, asset.get("code"), asset.get("name"), at_ns, lat, lon, speed,
                 course))
            return
        if not asset:
            return
        self.db.execute(
            "INSERT INTO assets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (gw, device) "
            "DO UPDATE SET code=excluded.code, name=excluded.name, class=excluded.class, "
            "grid=excluded.grid, lat=excluded.lat, lon=excluded.lon, last_ts=excluded.last_ts, "
            "last_type=excluded.last_type, last_data=excluded.last_data "
            "WHERE excluded.last_ts >= assets.last_ts",
            (gw, device, asset.get("code"), asset.get("name"), asset.get("class"),
             asset.get("grid"), _finite(asset.get("lat")), _finite(asset.get("lon")), ts,
             str(event.get("type")), json.dumps(data, ensure_ascii=False)))

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
            "lat, lon, class, event_class, value, state, opened_ts, opened_ns, grid) "
            "SELECT (SELECT coalesce(max(case_no), 0) + 1 FROM cases), "
            "?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?, ?, ? "
            "WHERE NOT EXISTS (SELECT 1 FROM cases WHERE alarm_id = ?)",
            (gw, alarm["alarm_id"], alarm["kind"], event.get("device"), asset.get("code"),
             asset.get("name"), asset.get("lat"), asset.get("lon"), asset.get("class"),
             alarm.get("event_class"), alarm.get("value"), event["ts"], time.time_ns(),
             asset.get("grid"), alarm["alarm_id"]))
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

    def set_gateway(self, gw: str, online: bool, state: dict[str, Any],
                    order: StateOrder | None = None) -> bool:
        """Record a gateway's birth/state/last will unless a newer one is stored (D70).

        Returns whether it was recorded.
        """
        cur = self.db.execute(_UPSERT_GATEWAY, (
            gw, int(online), json.dumps(state, ensure_ascii=False), time.time_ns(),
            order.boot_id if order else None, order.conn_ms if order else None,
            order.n if order else None))
        return cur.rowcount == 1

    def gateways(self) -> list[dict[str, Any]]:
        """Return every gateway with its last state."""
        return [{"gw": gw, "online": bool(on), "state": json.loads(st), "updated_ns": up}
                for gw, on, st, up in self.db.execute(
                    "SELECT gw, online, state, updated_ns FROM gateways ORDER BY gw")]

    def gateway(self, gw: str) -> dict[str, Any] | None:
        """Return one gateway with its last state (None if it never sent one)."""
        row = self.db.execute("SELECT online, state, updated_ns FROM gateways WHERE gw = ?",
                              (gw,)).fetchone()
        if row is None:
            return None
        return {"gw": gw, "online": bool(row[0]), "state": json.loads(row[1]),
                "updated_ns": row[2]}

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

    # ---- the map page (hil/receiver/web.py /api/map*): bounded, one indexed range each -------

    def _rows(self, sql: str, args: tuple[Any, ...]) -> list[dict[str, Any]]:
        cur = self.db.execute(sql, args)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def map_assets(self, limit: int = MAP_MAX_ASSETS) -> list[dict[str, Any]]:
        """Return every device that sent an asset block (trackers excluded), with its newest event.

        Keys: gw, device, code, name, class, grid, lat, lon, last_ts, last_type, last_data (the
        newest event's ``data`` object). At most ``limit`` (≤ ``MAP_MAX_ASSETS``) rows.
        """
        rows = self._rows(
            "SELECT * FROM assets a WHERE NOT EXISTS (SELECT 1 FROM vehicles v WHERE v.gw = a.gw "
            "AND v.device = a.device) ORDER BY gw, device LIMIT ?",
            (min(limit, MAP_MAX_ASSETS),))
        for row in rows:
            row["last_data"] = json.loads(row["last_data"] or "{}")
        return rows

    def map_vehicles(self) -> list[dict[str, Any]]:
        """Return every tracker's newest position: gw, device, code, name, ts_ns, lat, lon, ….

        ``speed_kmh`` and ``course_deg`` may be None. Bounded by ``MAP_MAX_ASSETS``.
        """
        return self._rows("SELECT * FROM vehicles ORDER BY gw, device LIMIT ?",
                          (MAP_MAX_ASSETS,))

    def map_device_values(self, gw: str, device: str,
                          limit: int = MAP_MAX_VALUES) -> list[dict[str, Any]]:
        """Return a device's newest events (newest first, at most ``MAP_MAX_VALUES``)."""
        return [json.loads(r[0]) for r in self.db.execute(
            "SELECT doc FROM events WHERE gw = ? AND device = ? ORDER BY received_ns DESC "
            "LIMIT ?", (gw, device, max(0, min(limit, MAP_MAX_VALUES))))]

    def map_device_cases(self, gw: str, device: str,
                         limit: int = MAP_MAX_VALUES) -> list[dict[str, Any]]:
        """Return a device's cases, open and closed, newest first (case history)."""
        return self._rows("SELECT * FROM cases WHERE gw = ? AND device = ? "
                          "ORDER BY case_no DESC LIMIT ?",
                          (gw, device, max(0, min(limit, MAP_MAX_VALUES))))

    def map_track(self, gw: str, device: str, start_ns: int, end_ns: int,
                  limit: int = MAP_MAX_TRACK_POINTS) -> list[tuple[int, float, float,
                                                                  float | None, float | None]]:
        """Return a tracker's positions with start_ns <= fix time < end_ns, oldest first.

        Rows are (ts_ns, lat, lon, speed_kmh, course_deg). The window is clamped to
        ``MAP_MAX_TRACK_S`` after ``start_ns`` and to ``MAP_MAX_TRACK_POINTS`` rows (the
        earliest ones: the caller sees it was cut when it gets exactly the limit).
        """
        end_ns = min(end_ns, start_ns + MAP_MAX_TRACK_S * 1_000_000_000)
        return [(int(t), float(la), float(lo), s, c) for t, la, lo, s, c in self.db.execute(
            "SELECT ts_ns, lat, lon, speed_kmh, course_deg FROM positions WHERE gw = ? AND "
            "device = ? AND ts_ns >= ? AND ts_ns < ? ORDER BY ts_ns LIMIT ?",
            (gw, device, start_ns, end_ns, max(0, min(limit, MAP_MAX_TRACK_POINTS))))]

    def map_work_coverage(self) -> list[dict[str, Any]]:
        """Return the newest ``work_coverage`` of each (gw, device), newest first.

        Whole events as received (``data`` is ``edge.wire.WireWorkCoverage``), or a
        ``device.read`` result's running coverage when newer (``coverage_record``); looks at
        the newest ``MAP_MAX_COVERAGE`` such events only (index ``events_type``).
        """
        # a device.read of a truck answers with its running shift's coverage: newer than the
        # last shift's report, it is what the map shows (marked in progress; issue 18 #7)
        return newest_coverage((gw, json.loads(doc)) for gw, doc in self.db.execute(
            "SELECT gw, doc FROM events WHERE type = 'work_coverage' OR (type = "
            "'command_result' AND instr(doc, '\"work_coverage\"') > 0) "
            "ORDER BY received_ns DESC LIMIT ?", (MAP_MAX_COVERAGE,)))


def newest_coverage(rows: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Return the first coverage record of each (gw, device) of ``rows`` (newest first).

    Rows are stored events, newest first; those holding no coverage are skipped. Both stores'
    ``map_work_coverage`` read their rows and hand them here.
    """
    seen: set[tuple[str, str]] = set()
    out = []
    for gw, event in rows:
        record = coverage_record(gw, event)
        if record is None:
            continue
        key = (gw, str(record.get("device")))
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def coverage_record(gw: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """Return a stored event as a coverage report of the map, or None if it holds none.

    A ``work_coverage`` event is itself; an executed ``device.read`` whose values carry
    ``work_coverage`` (edge/drivers/gps.py probe) becomes one with that report as ``data``
    and ``from_read`` True (the page marks a running shift "in progress").
    """
    if event.get("type") == "work_coverage":
        return {"gw": gw, **event}
    data = event.get("data")
    if not isinstance(data, dict) or data.get("action") != "device.read" \
            or data.get("status") != "executed":
        return None
    detail = data.get("detail")
    values = detail.get("values") if isinstance(detail, dict) else None
    report = values.get("work_coverage") if isinstance(values, dict) else None
    if not isinstance(report, dict):
        return None
    return {"gw": gw, "id": event.get("id"), "type": "work_coverage", "ts": event.get("ts"),
            "device": event.get("device"), "asset": event.get("asset"), "data": report,
            "from_read": True}
