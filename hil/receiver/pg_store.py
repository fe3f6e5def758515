"""The receiver's PostgreSQL store: what ``ReceiverStore`` keeps, shared by many receivers.

Any number of receivers on one shared subscription (``$share/platform/edge/v1/+/events``)
write here at once. Correctness does not depend on which one gets a message:

* an event is stored once: ``(gw, id)`` is the primary key and a batch is one
  ``INSERT ... ON CONFLICT DO NOTHING RETURNING id``, so a redelivered event or batch is a
  no-op and only the events it really added open or close cases;
* case numbers stay dense (1, 2, 3 ...) because they come from one counter row read
  ``FOR UPDATE`` in the transaction that opens the case (docs/decisions.md D54);
* a clear handled before its raise (batches of one gateway split over two receivers) is
  remembered, and the raise then opens its case closed;
* counters are kept per receiver instance (``node``), so receivers never wait on each other.

psycopg is imported here only (one adapter module per third-party protocol library).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import time
from collections.abc import Iterator, Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any, Self

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.types.json import Jsonb

from hil.receiver.store import (
    MAP_MAX_ASSETS,
    MAP_MAX_COVERAGE,
    MAP_MAX_TRACK_POINTS,
    MAP_MAX_TRACK_S,
    MAP_MAX_VALUES,
    WILL_N,
    newest_coverage,
)

if TYPE_CHECKING:
    from hil.receiver.core import StateOrder

CONNECT_TIMEOUT_S = 5
STATEMENT_TIMEOUT_MS = 10_000  # a timeout on every I/O: a stuck statement fails the batch
LOCK_TIMEOUT_MS = 5_000
RECENT_WINDOW_NS = 600 * 1_000_000_000  # "recent events" looks back this far first
MIGRATION_LOCK = 0x6564_6765_5258  # "edgeRX": one advisory lock for schema migrations

_CASE_COLUMNS = ("case_no, gw, alarm_id, kind, device, asset_code, asset_name, grid, lat, lon, "
                 "class, event_class, value, state, opened_ts, closed_ts, opened_ns")
_INSERT_CASE = (f"INSERT INTO cases ({_CASE_COLUMNS}) VALUES ("  # noqa: S608 - fixed text
                + ", ".join(["%s"] * 17) + ") ON CONFLICT (alarm_id) DO NOTHING RETURNING case_no")
# One statement per batch: the events, the positions of the ones really added, and which of
# them change the map (into the session's pending tables, read once at commit). The batch
# travels as one JSON array that the server splits (per-event json.dumps and psycopg's array
# dumpers were most of a receiver's CPU, profiled); the positions' fixes (a tenth of the
# events), checked and their times parsed by Python, as a second small JSON array (seven
# binary arrays cost 4 us per event in psycopg's list dumper). Rows go in id order for every
# receiver, so two overlapping batches cannot deadlock.
_INSERT_EVENTS = (
    "WITH u AS (SELECT doc, n FROM jsonb_array_elements(%(docs)s::jsonb) WITH ORDINALITY "
    "AS e(doc, n)), "
    "ins AS (INSERT INTO events (gw, id, seq, type, prio, ts, device, asset_code, "
    "received_ns, doc) SELECT %(gw)s, doc->>'id', (doc->>'seq')::bigint, doc->>'type', "
    "(doc->>'prio')::smallint, doc->>'ts', doc->>'device', doc->'asset'->>'code', "
    "%(base_ns)s::bigint + n - 1, doc FROM u ORDER BY doc->>'id' ON CONFLICT DO NOTHING "
    "RETURNING id, type, ts, device, asset_code), "
    "pos AS (INSERT INTO positions (gw, id, asset_code, device, ts_at, lat, lon, speed_kmh, "
    "ts_ns, course_deg) SELECT %(gw)s, p.id, ins.asset_code, ins.device, p.ts_at, p.lat, "
    "p.lon, p.speed_kmh, p.ts_ns, p.course_deg FROM json_to_recordset(%(fixes)s::json) AS "
    "p(id text, ts_at timestamptz, lat float8, lon float8, speed_kmh float8, "
    "course_deg float8, ts_ns bigint) JOIN ins ON ins.id = p.id "
    "ON CONFLICT DO NOTHING RETURNING id, ts_ns), "
    # the map's projections: a device's newest asset-bearing event; a tracker's newest fix
    "pa AS (INSERT INTO pending_assets SELECT %(gw)s, device, ts, id FROM ins "
    "WHERE device IS NOT NULL AND asset_code IS NOT NULL AND type <> 'position'), "
    "pv AS (INSERT INTO pending_vehicles SELECT %(gw)s, ins.device, pos.ts_ns, pos.id "
    "FROM pos JOIN ins ON ins.id = pos.id WHERE ins.device IS NOT NULL AND pos.ts_ns IS NOT NULL) "
    "SELECT id FROM ins")
# The session's pending projections: temporary (no WAL), emptied by every commit, and undone
# with a refused message's savepoint like everything else it wrote.
_PENDING_TABLES = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS pending_assets (gw text, device text, ts text, "
    "id text) ON COMMIT DELETE ROWS; "
    "CREATE TEMPORARY TABLE IF NOT EXISTS pending_vehicles (gw text, device text, "
    "ts_ns bigint, id text) "
    "ON COMMIT DELETE ROWS")
_UPSERT_ASSETS = (
    "INSERT INTO assets (gw, device, last_ts, last_id) SELECT DISTINCT ON (gw, device) gw, "
    "device, ts, id FROM pending_assets ORDER BY gw, device, ts DESC "
    "ON CONFLICT (gw, device) DO UPDATE SET last_ts = excluded.last_ts, "
    "last_id = excluded.last_id WHERE excluded.last_ts >= assets.last_ts")
# the newest by the fix's time: a gateway draining its backlog sends old ones last
_UPSERT_VEHICLES = (
    "INSERT INTO vehicles (gw, device, ts_ns, last_id) SELECT DISTINCT ON (gw, device) gw, "
    "device, ts_ns, id FROM pending_vehicles ORDER BY gw, device, ts_ns DESC "
    "ON CONFLICT (gw, device) DO UPDATE SET ts_ns = excluded.ts_ns, "
    "last_id = excluded.last_id WHERE excluded.ts_ns >= vehicles.ts_ns")
# an asset's fields, read from its newest event (the map's and last_value's rows)
_SELECT_ASSETS = (
    "SELECT a.gw, a.device, e.doc->'asset'->>'code' AS code, e.doc->'asset'->>'name' AS name, "
    "e.doc->'asset'->>'class' AS class, e.doc->'asset'->>'grid' AS grid, "
    # docs are Python's re-encoding (1e-400 is 0.0 by then); bounded anyway: a cast that
    # fails would fail every read of the map
    "CASE WHEN jsonb_typeof(e.doc->'asset'->'lat') = 'number' AND abs((e.doc->'asset'->"
    "'lat')::numeric) <= 90 THEN round((e.doc->'asset'->'lat')::numeric, 9)::float8 END AS lat, "
    "CASE WHEN jsonb_typeof(e.doc->'asset'->'lon') = 'number' AND abs((e.doc->'asset'->"
    "'lon')::numeric) <= 180 THEN round((e.doc->'asset'->'lon')::numeric, 9)::float8 END AS lon, "
    "a.last_ts, e.type AS last_type, CASE WHEN jsonb_typeof(e.doc->'data') = 'object' "
    "THEN e.doc->'data' ELSE '{}' END AS last_data "
    "FROM assets a JOIN events e ON e.gw = a.gw AND e.id = a.last_id ")
_SELECT_CASES = f"SELECT {_CASE_COLUMNS} FROM cases "  # noqa: S608 - fixed text
# the newest state of a gateway, not the last written (store.py _UPSERT_GATEWAY, D70)
_UPSERT_GATEWAY = (
    "INSERT INTO gateways (gw, online, state, updated_ns, boot_id, conn_ms, state_n) "  # noqa: S608
    "VALUES (%s, %s, %s::jsonb, %s, %s, %s, %s) ON CONFLICT (gw) DO UPDATE SET "
    "online = excluded.online, state = excluded.state, updated_ns = excluded.updated_ns, "
    "boot_id = excluded.boot_id, conn_ms = excluded.conn_ms, state_n = excluded.state_n, "
    "prev_boot = CASE WHEN excluded.boot_id IS DISTINCT FROM gateways.boot_id "
    "THEN gateways.boot_id ELSE gateways.prev_boot END "
    "WHERE excluded.conn_ms IS NULL OR gateways.conn_ms IS NULL "
    "OR (excluded.boot_id = gateways.boot_id AND (excluded.conn_ms, excluded.state_n) "
    ">= (gateways.conn_ms, gateways.state_n)) "
    f"OR (excluded.boot_id <> gateways.boot_id AND excluded.state_n < {WILL_N} "
    "AND excluded.boot_id IS DISTINCT FROM gateways.prev_boot) RETURNING 1")


def migrations() -> list[tuple[int, str, str]]:
    """Return (version, name, SQL) of every schema file, oldest first."""
    return sorted((int(entry.name.split("_", 1)[0]), entry.name, entry.read_text("utf-8"))
                  for entry in (resources.files("hil.receiver") / "pg_schema").iterdir()
                  if entry.name.endswith(".sql"))


def create_database(dsn: str, name: str) -> None:
    """Create an empty database on the server of ``dsn`` (tests and benches: one per run)."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def drop_database(dsn: str, name: str) -> None:
    """Drop a database, disconnecting whoever is still on it."""
    with psycopg.connect(dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))


def _ts_at(ts: object) -> dt.datetime | None:
    """Return an event's ``ts`` as a datetime, None when it is not RFC 3339 (kept as text)."""
    if not isinstance(ts, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None  # 1e400 parses as inf


class PgReceiverStore:
    """Receiver state in a PostgreSQL database; the same methods as ``ReceiverStore``."""

    def __init__(self, dsn: str, *, node: str = "receiver") -> None:
        self.node = node
        self.dsn = dsn
        self._conn: psycopg.Connection[Any] | None = None
        self._in_tx = False
        self._grouped = False
        self._in_savepoint = False
        self._pending_counters: dict[str, int] = {}
        self._projections_due = False  # this transaction added events: update the map rows
        self.schema_version = self._migrate()

    # ---- lifecycle ---------------------------------------------------------------------------

    def _migrate(self) -> int:
        """Apply missing migrations, one receiver at a time (an advisory transaction lock)."""
        with self.conn.transaction():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            self.conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer "
                              "PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL "
                              "DEFAULT now())")
            done = {int(r[0]) for r in self.conn.execute("SELECT version FROM schema_version")}
            for version, name, sql in migrations():
                if version in done:
                    continue
                self.conn.execute(sql.encode())  # no parameters: several statements per file
                self.conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                                  (version, name))
            row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run the block in one transaction.

        Inside ``group()`` the first level is a savepoint (one message's work, undone alone
        when it is refused); deeper calls join the enclosing one.
        """
        if not self._in_tx:
            conn = self.conn  # a new session if the database restarted or dropped us
            self._in_tx = True
            try:
                # (pipeline mode measured no faster here, and it defers errors: not used)
                with conn.transaction():
                    yield
                    self._flush_projections()
                    self._flush_counters()
            finally:
                self._in_tx = False
                self._pending_counters.clear()
                self._projections_due = False
            return
        if not self._grouped or self._in_savepoint:
            yield
            return
        self._in_savepoint = True
        saved = dict(self._pending_counters)
        try:
            with self.conn.transaction():
                yield
        except BaseException:
            # what the undone message counted is undone with it (its pending map rows are
            # undone by the savepoint)
            self._pending_counters = saved
            raise
        finally:
            self._in_savepoint = False

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Handle several messages in one transaction: one commit (one WAL flush) for all.

        The caller acknowledges the messages only after the block: a receiver killed inside it
        has committed none of them, and the broker sends them all again.
        """
        self._grouped = True
        try:
            with self.transaction():
                yield
        finally:
            self._grouped = False

    @staticmethod
    def unavailable(exc: BaseException) -> bool:
        """Whether ``exc`` says the database is unreachable (not that a message is bad)."""
        return isinstance(exc, psycopg.OperationalError) and not PgReceiverStore.retryable(exc)

    @staticmethod
    def failed(exc: BaseException) -> bool:
        """Whether ``exc`` is the database's failure (never a rejection of the message)."""
        return isinstance(exc, psycopg.Error)

    @staticmethod
    def refused(exc: BaseException) -> bool:
        """Whether PostgreSQL refused this message's data itself (out of range, a constraint).

        The same every time the message comes: redelivering it would stall for ever.
        """
        return isinstance(exc, psycopg.DataError | psycopg.IntegrityError)

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The session; a new one when the last one broke (never inside a transaction)."""
        if self._conn is None or (not self._in_tx and (self._conn.broken or self._conn.closed)):
            self._connect()
        assert self._conn is not None
        return self._conn

    def _connect(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = psycopg.connect(
            self.dsn, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                    f"-c lock_timeout={LOCK_TIMEOUT_MS} -c synchronous_commit=on")
        self._conn.execute(_PENDING_TABLES.encode())  # no parameters: two statements

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        """Whether a failed batch may simply be run again (a deadlock or lock timeout)."""
        return isinstance(exc, pg_errors.DeadlockDetected | pg_errors.SerializationFailure
                          | pg_errors.LockNotAvailable)

    # ---- counters ----------------------------------------------------------------------------

    def bump(self, name: str, n: int = 1) -> None:
        """Add to a counter (inside a transaction: once, at commit)."""
        if n == 0:
            return
        self._pending_counters[name] = self._pending_counters.get(name, 0) + n
        if not self._in_tx:
            self._flush_counters()

    def _flush_counters(self) -> None:
        if not self._pending_counters:
            return
        names, values = zip(*sorted(self._pending_counters.items()), strict=True)
        self._pending_counters.clear()
        self.conn.execute(
            "INSERT INTO counters (name, node, value) SELECT n, %s, v FROM "
            "unnest(%s::text[], %s::bigint[]) AS u(n, v) ON CONFLICT (name, node) DO UPDATE "
            "SET value = counters.value + excluded.value", (self.node, list(names), list(values)))

    def counters(self) -> dict[str, int]:
        """Return all counters, summed over receiver instances."""
        return {str(k): int(v) for k, v in self.conn.execute(
            "SELECT name, sum(value) FROM counters GROUP BY name")}

    # ---- events ------------------------------------------------------------------------------

    def add_event(self, gw: str, event: dict[str, Any]) -> bool:
        """Store an event; return False when it is a duplicate (same gateway and id)."""
        return self.add_events(gw, [event])[0]

    def add_events(self, gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        """Store a batch's events in one statement; return which ones were new, in order."""
        base_ns = time.time_ns()
        docs, cleaned = _json_text(events)
        if cleaned:
            # PostgreSQL has no U+0000 in text nor inf in jsonb: a device name with one must
            # not make a signed batch unstorable (refused forever). Checked once on the
            # batch's JSON, not per parameter (a Python str dumper cost 20 % of the CPU).
            events = _storable(events)
        # only positions carry parameters of their own (a tenth of the events)
        fixes = [fix for e in events if e.get("type") == "position"
                 if (fix := _fix(e)) is not None]
        with self.transaction():
            rows = self.conn.execute(_INSERT_EVENTS, {
                "gw": gw, "docs": docs, "base_ns": base_ns,
                "fixes": json.dumps(fixes, ensure_ascii=False, allow_nan=False,
                                    separators=_COMPACT)}).fetchall()
            if not rows:
                return [False] * len(events)
            self._projections_due = True
            fresh = {r[0] for r in rows}
            new: list[bool] = []
            for event in events:
                new.append(event["id"] in fresh)
                fresh.discard(event["id"])  # the same id twice in one batch: the first counts
            self._command_results(gw, [e for e, is_new in zip(events, new, strict=True)
                                       if is_new and e.get("type") == "command_result"])
        return new

    def _flush_projections(self) -> None:
        """Write the newest asset and vehicle row per device of this commit.

        The server reads them from the rows just inserted (no second copy travels), and takes
        them in (gw, device) order: two receivers never lock these rows in opposite orders.
        """
        if self._projections_due:
            self._projections_due = False
            self.conn.execute(_UPSERT_ASSETS)
            self.conn.execute(_UPSERT_VEHICLES)

    def _command_results(self, gw: str, events: list[dict[str, Any]]) -> None:
        rows = []
        for e in events:
            data = e.get("data") or {}
            rows.append((gw, e["id"], _str(data.get("cmd_id")), e.get("device"),
                         _str(data.get("action")), _str(data.get("status")), str(e["ts"]),
                         Jsonb(data.get("detail"))))
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany("INSERT INTO command_results VALUES (%s, %s, %s, %s, %s, %s, %s, "
                                "%s) ON CONFLICT DO NOTHING", rows)

    def events(self, limit: int = 50, type_: str | None = None) -> list[dict[str, Any]]:
        """Return recent events (newest first).

        The last ten minutes first (the BRIN index finds them); everything only when they hold
        fewer than ``limit`` (a quiet receiver).
        """
        for since_ns in (time.time_ns() - RECENT_WINDOW_NS, 0):
            cur = self.conn.execute(
                "SELECT doc FROM events WHERE received_ns >= %s AND (%s::text IS NULL OR "
                "type = %s) ORDER BY received_ns DESC LIMIT %s", (since_ns, type_, type_, limit))
            rows = [dict(r[0]) for r in cur]
            if len(rows) >= limit:
                break
        return rows

    def event_count(self) -> int:
        """Return how many events are stored."""
        row = self.conn.execute("SELECT count(*) FROM events").fetchone()
        return int(row[0]) if row else 0

    def last_value(self, gw: str, device: str) -> dict[str, Any] | None:
        """Return a device's last value: its newest event by reading time (the assets row)."""
        rows = self._dicts(_SELECT_ASSETS + "WHERE a.gw = %s AND a.device = %s",
                           (gw, device))
        return rows[0] if rows else None

    def track(self, asset_code: str, day: dt.date) -> list[tuple[dt.datetime, float, float]]:
        """Return a vehicle's positions on a UTC day, oldest first (index ``positions_track``)."""
        start = dt.datetime.combine(day, dt.time(), tzinfo=dt.UTC)
        return [(r[0], float(r[1]), float(r[2])) for r in self.conn.execute(
            "SELECT ts_at, lat, lon FROM positions WHERE asset_code = %s AND ts_at >= %s AND "
            "ts_at < %s ORDER BY ts_at", (asset_code, start, start + dt.timedelta(days=1)))]

    def command_results(self, cmd_id: str) -> list[dict[str, Any]]:
        """Return what gateways reported for a command."""
        cur = self.conn.execute("SELECT gw, device, action, status, ts, detail FROM "
                                "command_results WHERE cmd_id = %s ORDER BY ts", (cmd_id,))
        return [{"gw": gw, "device": dev, "action": action, "status": status, "ts": ts,
                 "detail": detail} for gw, dev, action, status, ts, detail in cur]

    # ---- cases -------------------------------------------------------------------------------

    def _lock_cases(self) -> int:
        """Take the case counter row (until commit); return the last case number."""
        row = self.conn.execute("SELECT last_no FROM case_counter FOR UPDATE").fetchone()
        return int(row[0]) if row else 0

    def open_case(self, gw: str, event: dict[str, Any]) -> int | None:
        """Open a case for an alarm raise; return its number (None if it already has one)."""
        alarm, asset = event["alarm"], event.get("asset") or {}
        with self.transaction():
            last = self._lock_cases()
            early = self.conn.execute("DELETE FROM early_clears WHERE alarm_id = %s "
                                      "RETURNING closed_ts", (_clean(alarm["alarm_id"]),)
                                      ).fetchone()
            row = self.conn.execute(_INSERT_CASE, [_clean(v) for v in (
                last + 1, gw, alarm["alarm_id"], alarm["kind"], event.get("device"),
                asset.get("code"), asset.get("name"), asset.get("grid"),
                _number(asset.get("lat")), _number(asset.get("lon")), asset.get("class"),
                alarm.get("event_class"), _number(alarm.get("value")),
                "closed" if early else "open", str(event["ts"]), early[0] if early else None,
                time.time_ns())]).fetchone()
            if row is None:
                return None
            self.conn.execute("UPDATE case_counter SET last_no = %s", (last + 1,))
        return last + 1

    def close_case(self, alarm_id: str, ts: str) -> int | None:
        """Close the case of ``alarm_id``; return its number (None if none was open)."""
        alarm_id, ts = _clean(alarm_id), _clean(ts)
        with self.transaction():
            self._lock_cases()  # a raise being opened by another receiver commits first
            row = self.conn.execute("UPDATE cases SET state = 'closed', closed_ts = %s WHERE "
                                    "alarm_id = %s AND state = 'open' RETURNING case_no",
                                    (ts, alarm_id)).fetchone()
            if row is not None:
                return int(row[0])
            if self.conn.execute("SELECT 1 FROM cases WHERE alarm_id = %s",
                                 (alarm_id,)).fetchone() is None:
                self.conn.execute("INSERT INTO early_clears VALUES (%s, %s) "
                                  "ON CONFLICT DO NOTHING", (alarm_id, ts))
        return None

    def cases(self, state: str | None = None) -> list[dict[str, Any]]:
        """Return cases, newest first."""
        if state:
            cur = self.conn.execute(_SELECT_CASES + "WHERE state = %s ORDER BY case_no DESC",
                                    (state,))
        else:
            cur = self.conn.execute(_SELECT_CASES + "ORDER BY case_no DESC")
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def open_cases_in_grid(self, grid: str) -> list[dict[str, Any]]:
        """Return the open cases of one unit grid (index ``cases_open_grid``)."""
        cur = self.conn.execute(_SELECT_CASES + "WHERE grid = %s AND state = 'open' "
                                "ORDER BY case_no", (grid,))
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    # ---- gateways and gaps -------------------------------------------------------------------

    def set_gateway(self, gw: str, online: bool, state: dict[str, Any],
                    order: StateOrder | None = None) -> bool:
        """Record a gateway's birth/state/last will unless a newer one is stored (D70).

        Returns whether it was recorded. The condition is the upsert's ``WHERE``, so two
        receivers racing on one gateway's states keep the newest whichever commits last.
        """
        row = self.conn.execute(_UPSERT_GATEWAY, (
            _clean(gw), online, _json_text(state)[0], time.time_ns(),
            _clean(order.boot_id) if order else None, order.conn_ms if order else None,
            order.n if order else None)).fetchone()
        return row is not None

    def gateway(self, gw: str) -> dict[str, Any] | None:
        """Return one gateway with its last state (None if it never sent one)."""
        row = self.conn.execute("SELECT online, state, updated_ns FROM gateways WHERE gw = %s",
                                (_clean(gw),)).fetchone()
        if row is None:
            return None
        return {"gw": gw, "online": bool(row[0]), "state": row[1], "updated_ns": row[2]}

    def gateways(self) -> list[dict[str, Any]]:
        """Return every gateway with its last state."""
        return [{"gw": gw, "online": bool(on), "state": st, "updated_ns": up}
                for gw, on, st, up in self.conn.execute(
                    "SELECT gw, online, state, updated_ns FROM gateways ORDER BY gw")]

    def announce_gap(self, gw: str, first_seq: int, last_seq: int, reason: str) -> None:
        """Record a range the gateway said it dropped."""
        self.conn.execute("INSERT INTO gaps_announced VALUES (%s, %s, %s, %s)",
                          (_clean(gw), first_seq, last_seq, _clean(reason)))

    def seq_gaps(self, gw: str) -> list[tuple[int, int]]:
        """Return missing seq ranges below the highest seen, minus announced drops."""
        rows = self.conn.execute(
            "SELECT seq + 1, next_seq - 1 FROM (SELECT seq, lead(seq) OVER (ORDER BY seq) AS "
            "next_seq FROM events WHERE gw = %s) AS s WHERE next_seq > seq + 1 ORDER BY seq",
            (gw,)).fetchall()
        announced = self.conn.execute("SELECT first_seq, last_seq FROM gaps_announced "
                                      "WHERE gw = %s", (gw,)).fetchall()
        return [(int(low), int(high)) for low, high in rows
                if not any(a <= low and high <= b for a, b in announced)]

    def seq_count(self, gw: str) -> tuple[int, int, int]:
        """Return (distinct events, min seq, max seq) for a gateway."""
        row = self.conn.execute("SELECT count(*), min(seq), max(seq) FROM events WHERE gw = %s",
                                (gw,)).fetchone()
        if row is None:
            return 0, 0, 0
        return int(row[0]), int(row[1] or 0), int(row[2] or 0)

    # ---- the map page (the same methods and rows as ReceiverStore's) -------------------------

    def _dicts(self, query: Any, args: Sequence[Any]) -> list[dict[str, Any]]:
        cur = self.conn.execute(query, args)
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def map_assets(self, limit: int = MAP_MAX_ASSETS) -> list[dict[str, Any]]:
        """Return every device that sent an asset block (trackers excluded), newest event too.

        Keys: gw, device, code, name, class, grid, lat, lon, last_ts, last_type, last_data.
        """
        rows = self._dicts(
            _SELECT_ASSETS + "WHERE NOT EXISTS (SELECT 1 FROM vehicles v WHERE "  # noqa: S608
            "v.gw = a.gw AND v.device = a.device) ORDER BY a.gw, a.device LIMIT %s",
            (max(0, min(limit, MAP_MAX_ASSETS)),))
        for row in rows:
            row["last_data"] = row["last_data"] if row["last_data"] is not None else {}
        return rows

    def map_vehicles(self) -> list[dict[str, Any]]:
        """Return every tracker's newest position (gw, device, code, name, ts_ns, lat, lon, …)."""
        return self._dicts("SELECT v.gw, v.device, p.asset_code AS code, "
                           "e.doc->'asset'->>'name' AS name, v.ts_ns, p.lat, p.lon, "
                           "p.speed_kmh, p.course_deg FROM vehicles v JOIN positions p "
                           "ON p.gw = v.gw AND p.id = v.last_id "
                           "JOIN events e ON e.gw = v.gw AND e.id = v.last_id "
                           "ORDER BY v.gw, v.device LIMIT %s", (MAP_MAX_ASSETS,))

    def map_device_values(self, gw: str, device: str,
                          limit: int = MAP_MAX_VALUES) -> list[dict[str, Any]]:
        """Return a device's newest events, newest received first (``events_device``)."""
        return [dict(r[0]) for r in self.conn.execute(
            "SELECT doc FROM events WHERE gw = %s AND device = %s "
            "ORDER BY received_ns DESC LIMIT %s",
            (gw, device, max(0, min(limit, MAP_MAX_VALUES))))]

    def map_device_cases(self, gw: str, device: str,
                         limit: int = MAP_MAX_VALUES) -> list[dict[str, Any]]:
        """Return a device's cases, open and closed, newest first (case history)."""
        return self._dicts(_SELECT_CASES + "WHERE gw = %s AND device = %s "
                           "ORDER BY case_no DESC LIMIT %s",
                           (gw, device, max(0, min(limit, MAP_MAX_VALUES))))

    def map_track(self, gw: str, device: str, start_ns: int, end_ns: int,
                  limit: int = MAP_MAX_TRACK_POINTS) -> list[tuple[int, float, float,
                                                                  float | None, float | None]]:
        """Return a tracker's (ts_ns, lat, lon, speed_kmh, course_deg), oldest first.

        start_ns <= fix time < end_ns, the window clamped to ``MAP_MAX_TRACK_S`` and to
        ``MAP_MAX_TRACK_POINTS`` rows (the earliest), as ``ReceiverStore.map_track``.
        """
        end_ns = min(end_ns, start_ns + MAP_MAX_TRACK_S * 1_000_000_000)
        return [(int(t), float(la), float(lo), sp, co) for t, la, lo, sp, co in self.conn.execute(
            "SELECT ts_ns, lat, lon, speed_kmh, course_deg FROM positions WHERE gw = %s AND "
            "device = %s AND ts_ns >= %s AND ts_ns < %s ORDER BY ts_ns LIMIT %s",
            (gw, device, start_ns, end_ns, max(0, min(limit, MAP_MAX_TRACK_POINTS))))]

    def map_work_coverage(self) -> list[dict[str, Any]]:
        """Return the newest ``work_coverage`` of each (gw, device), newest first.

        As the SQLite store: a ``device.read`` result's running coverage counts when newer
        (``coverage_record``; issue 18 #7).
        """
        return newest_coverage((gw, dict(doc)) for gw, doc in self.conn.execute(
            "SELECT gw, doc FROM events WHERE type = 'work_coverage' OR (type = "
            "'command_result' AND doc::text LIKE '%%\"work_coverage\"%%') "
            "ORDER BY received_ns DESC LIMIT %s", (MAP_MAX_COVERAGE,)))


_COMPACT = (",", ":")


def _json_text(value: Any) -> tuple[str, bool]:
    """Return JSON that jsonb accepts, whatever a (signed) gateway sent, and if it was cleaned.

    jsonb has no non-finite numbers (``1e400`` parses as inf) and no U+0000: inf/NaN are
    stored as null and U+0000 as U+FFFD (the rare slow path).
    """
    try:
        # no cycle check (parsed JSON has none) and no spaces: 30 % less receiver CPU here
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, check_circular=False,
                          separators=_COMPACT)
    except ValueError:
        text = ""
    if text and "\\u0000" not in text:
        return text, False
    return json.dumps(_storable(value), ensure_ascii=False, allow_nan=False,
                      separators=_COMPACT), True


def _clean(value: Any) -> Any:
    """Return a str parameter without U+0000 (PostgreSQL text has none); others as they are."""
    return value.replace("\x00", "\ufffd") if isinstance(value, str) else value


def _storable(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_storable(v) for v in value]
    return value


def _fix(event: dict[str, Any]) -> dict[str, Any] | None:
    """Return a position's fix as the positions row wants it; None when it has no place."""
    data = event.get("data")
    data = data if isinstance(data, dict) else {}
    lat, lon = _number(data.get("lat")), _number(data.get("lon"))
    if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None  # kept as an event, not on the track
    at = _ts_at(event.get("ts"))
    ts_ns = None if at is None else int(at.timestamp()) * 1_000_000_000 + at.microsecond * 1000
    return {"id": event["id"], "ts_at": None if at is None else at.isoformat(), "lat": lat,
            "lon": lon, "speed_kmh": _number(data.get("speed_kmh")),
            "course_deg": _number(data.get("course_deg")), "ts_ns": ts_ns}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
