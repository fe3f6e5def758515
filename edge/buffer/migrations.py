"""The outbox's schema: the numbered ``schema/*.sql`` files and the migration that applies them.

``PRAGMA user_version`` holds the last file applied; opening a store applies the newer ones in
one transaction. A store newer than this agent is refused as corrupt (moved aside, never
downgraded); a failing migration is our bug, so the store is left unchanged and the error says
so.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path

from edge.errors import StoreCorruptError, StoreError

log = logging.getLogger(__name__)


def _schema_files() -> list[tuple[int, str]]:
    # beside this file, in the installed package too (package data, never a zip); not
    # importlib.resources, which loads zipfile and friends into the agent for good (D86)
    folder = Path(__file__).with_name("schema")
    return sorted((int(entry.name.split("_", 1)[0]), entry.read_text(encoding="utf-8"))
                  for entry in folder.iterdir() if entry.name.endswith(".sql"))


SCHEMA = _schema_files()
SCHEMA_VERSION = SCHEMA[-1][0]


def _statements(sql: str) -> Iterator[str]:
    """Yield the complete statements of a schema file (a trigger body holds ``;`` too)."""
    pending = ""
    for piece in sql.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""
    if pending.strip(" \n;"):
        yield pending


def migrate(db: sqlite3.Connection, schema: Sequence[tuple[int, str]]) -> None:
    """Apply the files of ``schema`` newer than the store's ``user_version``, all or none."""
    version = int(db.execute("PRAGMA user_version").fetchone()[0])
    if version > SCHEMA_VERSION:
        raise StoreCorruptError(f"schema version {version} is newer than this agent's "
                                f"{SCHEMA_VERSION}")
    pending = [(v, sql) for v, sql in schema if v > version]
    if not pending:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for v, sql in pending:
            for statement in _statements(sql):
                db.execute(statement)
            db.execute(f"PRAGMA user_version={v}")
        db.execute("COMMIT")
    except sqlite3.Error as exc:
        db.execute("ROLLBACK")
        # our bug, not a bad file: keep the data where it is and say so
        raise StoreError(f"schema migration {version} -> {pending[-1][0]} failed: {exc}; "
                         "the store is unchanged") from exc
    log.info("outbox schema migrated from version %d to %d", version, pending[-1][0])
