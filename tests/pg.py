"""A real PostgreSQL for the receiver's tests: ``EDGE_TEST_PG_DSN``, or a private server.

When ``EDGE_TEST_PG_DSN`` is unset the session starts its own server (initdb in a temporary
folder, a free loopback port; hil/receiver/pg_server.py) — never the machine's instance. Each
test gets a fresh database on it. Without PostgreSQL the tests skip, except in CI
(``CI=true``), where a skipped real-peer test would hide a gap: there they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from hil.receiver.pg_server import PostgresMissingError, PrivatePostgres
from hil.receiver.pg_store import create_database, drop_database


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"CI must provide PostgreSQL (make test-deps): {why}")
    pytest.skip(f"PostgreSQL is not available: {why}")


@pytest.fixture(scope="session")
def pg_server_dsn() -> Iterator[str]:
    """DSN of a PostgreSQL server the tests may create databases on."""
    configured = os.environ.get("EDGE_TEST_PG_DSN")
    if configured:
        yield configured
        return
    try:
        server = PrivatePostgres(fsync=False)  # a test database: durability is not the point
    except PostgresMissingError as exc:
        _missing(str(exc))
        return
    try:
        server.start()
    except (RuntimeError, OSError) as exc:
        server.stop()
        _missing(f"the private server did not start: {exc}")
        return
    try:
        yield server.dsn
    finally:
        server.stop()


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> Iterator[str]:
    """DSN of a fresh, empty database (dropped after the test)."""
    name = f"edge_test_{uuid.uuid4().hex[:12]}"
    create_database(pg_server_dsn, name)
    try:
        yield _with_dbname(pg_server_dsn, name)
    finally:
        drop_database(pg_server_dsn, name)


def _with_dbname(dsn: str, name: str) -> str:
    """Return ``dsn`` (key=value form) pointing at database ``name``."""
    parts = [p for p in dsn.split() if not p.startswith("dbname=")]
    return " ".join([*parts, f"dbname={name}"])
