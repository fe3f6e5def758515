"""The outbox's SQLite file: its lock, one writer connection, the checks and repair at open.

``StoreFile`` opens the file the way design/reliability.md §1 says (WAL, ``synchronous=FULL``,
``psow=0``, owner-only), runs ``quick_check`` and the schema migrations, moves a corrupt file
aside (never fatal), tells a full disk from a corrupt file (the ``ballast`` reserve), and gives
the queue and the typed stores kept in the same database one connection and its transactions.
``Outbox`` (``store``) is the queue on top of it. One thread uses it (``AsyncOutbox``'s).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from edge.buffer.ballast import Ballast, no_room
from edge.buffer.migrations import SCHEMA, migrate
from edge.errors import StoreCorruptError, StoreError, StoreFullError

log = logging.getLogger(__name__)

WAL_AUTOCHECKPOINT_PAGES = 256  # a small WAL: at most ~1 MiB must fit when the disk is full
# room for a DELETE to succeed on a full disk, above the quota (reliability.md R7)
HEADROOM_BYTES = 8 * 1024 * 1024
# Free file-system space the store never counts on: below it, telemetry is evicted as if the
# quota were reached, so the WAL always has room to checkpoint and DELETE always works.
FS_RESERVE_BYTES = 4 * 1024 * 1024


def held_by_an_agent(path: Path) -> bool:
    """Return whether a running agent holds the outbox at ``path`` (its ``.lock``).

    What ``edge check`` asks before it opens a serial bus: the status file may be stale or
    damaged while the agent runs (review finding 9), the lock is not. A shared lock is taken
    and dropped at once; an agent starting in that instant fails and is restarted.
    """
    try:
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False  # no lock file: no agent has opened this outbox
    except OSError:
        # not ours to open (0600, the service user's): assume an agent may hold it rather
        # than read a bus it may be driving
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing drops a lock we took
    return False


def _private(path: Path, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """Open (creating) ``path`` owner-only and return the fd; an older 0644 file is tightened.

    Outside systemd's UMask=0077 a shell umask made the outbox world-readable (security
    review 19 #11); SQLite gives its -wal and -shm files the database file's mode.
    """
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def is_full(exc: sqlite3.Error) -> bool:
    """Return whether SQLite failed for want of space (SQLITE_FULL)."""
    return isinstance(exc, sqlite3.OperationalError) and (
        "full" in str(exc) or getattr(exc, "sqlite_errorcode", 0) == sqlite3.SQLITE_FULL)


class StoreFile:
    """The outbox's database file; not thread-safe (one thread owns it)."""

    def __init__(self, path: Path, *, quota_bytes: int, synchronous: str = "FULL",
                 schema: Sequence[tuple[int, str]] = SCHEMA) -> None:
        self.path = path
        self.quota_bytes = quota_bytes
        self._synchronous = synchronous  # FULL; NORMAL exists only to prove tests can fail
        self._schema = schema
        self._db: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self.ballast = Ballast(path)  # the disk-full reserve beside the store
        self.page_size = 4096
        self.replaced_corrupt: Path | None = None  # set when open() moved a bad file aside
        self.corrupt_reason = ""

    def open(self) -> bool:
        """Open (creating, checking, migrating); return whether it held a store before.

        A corrupt file is moved aside and a fresh one created (False then), never fatal; a
        full disk is ``StoreFullError`` and the file stays where it is.
        """
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._take_lock()
        existed = self.path.exists() and self.path.stat().st_size > 0
        try:
            self._connect_and_check()
        except StoreCorruptError as exc:
            self._close_db()
            bad = self._open_on_full_disk(exc)
            if bad is not None:
                self._move_aside(bad)
                existed = False
                self._connect_and_check()
        self.ballast.restore()
        return existed

    def _open_on_full_disk(self, exc: StoreCorruptError) -> str | None:
        """Tell a full disk from a corrupt file at open: None once open, else why it is bad.

        A restart on a full disk got SQLite's "disk I/O error" (no room for the -shm file),
        took it for corruption and moved the store, with the alarms it held, aside (issue 14
        re-test f14 #1). On a full file system the reserve is released and the open retried;
        without a reserve the store is refused as full (StoreFullError) and left where it is.
        """
        if not no_room(self.path):
            return str(exc)  # room enough: the file is bad (open() moves it aside)
        if self.ballast.release():
            try:
                self._connect_and_check()
            except StoreCorruptError as again:
                self._close_db()
                if not no_room(self.path):
                    return str(again)
            else:
                return None
        raise StoreFullError(f"cannot open {self.path}: the disk is full ({exc})") from exc

    def _take_lock(self) -> None:
        if self._lock_fd is not None:
            return
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"{self.path} is in use by another agent") from exc
        self._lock_fd = fd

    def _connect_and_check(self) -> None:
        # psow=0: SD cards and eMMC do not promise powersafe overwrite (reliability.md §1).
        uri = f"file:{self.path}?psow=0"
        try:
            os.close(_private(self.path))  # before SQLite creates it (and -wal, -shm) 0644
            db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise StoreCorruptError(f"cannot open: {exc}") from exc
        self._db = db
        try:
            db.execute("PRAGMA busy_timeout=5000")
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"journal_mode is {mode}, WAL is required")  # noqa: TRY301
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            # INSERT OR REPLACE's implicit delete must fire the queue_depth triggers too
            db.execute("PRAGMA recursive_triggers=ON")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}")
            self.page_size = int(db.execute("PRAGMA page_size").fetchone()[0])
            # keep the WAL file's blocks after a checkpoint (up to 4x its normal size): a WAL
            # that rewinds into its own blocks needs no new space on a full disk
            db.execute("PRAGMA journal_size_limit="
                       f"{4 * WAL_AUTOCHECKPOINT_PAGES * self.page_size}")
            check = db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreCorruptError(f"quick_check: {check}")
            self._migrate_checked()
            # The file may never outgrow the quota plus headroom for a DELETE to succeed on a
            # full disk (the quota sits below the file-system limit: reliability.md R7).
            max_pages = (self.quota_bytes + HEADROOM_BYTES) // self.page_size
            db.execute(f"PRAGMA max_page_count={max_pages}")
        except StoreError:
            raise
        except sqlite3.DatabaseError as exc:
            if is_full(exc):
                raise StoreFullError(f"cannot open {self.path}: {exc}") from exc
            raise StoreCorruptError(str(exc)) from exc

    def _migrate_checked(self) -> None:
        try:
            migrate(self.conn(), self._schema)
        except StoreError:
            self._close_db()
            raise

    def _move_aside(self, reason: str) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(target) + suffix))
        log.error("outbox %s is corrupt (%s); moved aside to %s, starting a fresh store",
                  self.path, reason, target)
        self.replaced_corrupt = target
        self.corrupt_reason = reason

    def room_bytes(self) -> int:
        """Return the quota, lowered to what the file system can still hold minus a reserve."""
        try:
            stat = os.statvfs(self.path.parent)
        except OSError:
            return self.quota_bytes
        fs_free = stat.f_bavail * stat.f_frsize
        pages = int(self.conn().execute("PRAGMA page_count").fetchone()[0])
        return min(self.quota_bytes, pages * self.page_size + fs_free - FS_RESERVE_BYTES)

    def used_bytes(self) -> int:
        """Return the bytes the file's pages hold (its free list not counted)."""
        db = self.conn()
        pages = int(db.execute("PRAGMA page_count").fetchone()[0])
        free = int(db.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * self.page_size

    def conn(self) -> sqlite3.Connection:
        """Return the open connection (StoreError when closed)."""
        if self._db is None:
            raise StoreError("outbox is not open")
        return self._db

    def _close_db(self) -> None:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def close(self) -> None:
        """Checkpoint and close; releases the lock."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._close_db()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    @contextlib.contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: committed on exit, rolled back on an error."""
        db = self.conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
