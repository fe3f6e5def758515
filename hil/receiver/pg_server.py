"""A private, throwaway PostgreSQL server for tests and benches (never the system instance).

``initdb`` in a fresh temporary folder, then ``postgres`` on a free loopback port with its
socket in that folder; ``stop()`` kills it and deletes everything. PostgreSQL refuses to run as
root, so as root the folder is given to the ``postgres`` account and the server runs as it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from hil.broker import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class PostgresMissingError(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def find_bindir() -> Path:
    """Return the folder of ``initdb`` and ``postgres`` (Debian keeps them out of PATH)."""
    found = shutil.which("initdb")
    if found:  # resolved: a symlink in /usr/local/bin has no pg_isready beside it
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parts[4]) if p.parts[4].isdigit() else 0)
    if not candidates:
        raise PostgresMissingError("PostgreSQL server is not installed (apt-get install "
                                   "postgresql)")
    return candidates[-1].parent


class PrivatePostgres:
    """One private PostgreSQL server; ``dsn`` names its ``postgres`` database."""

    def __init__(self, *, fsync: bool = True, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.port = port or free_port()
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        self._user: str | None = None
        entry = None
        if os.geteuid() == 0:
            self._user = "postgres"  # the account the Debian package creates
            try:
                entry = pwd.getpwnam(self._user)
            except KeyError:
                raise PostgresMissingError("running as root and there is no 'postgres' "
                                           "account to run the server as") from None
        self.root = Path(tempfile.mkdtemp(prefix="edge-pg-"))
        if entry is not None:
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    @property
    def dsn(self) -> str:
        """Connection string of the superuser ``edge`` to database ``postgres``."""
        return f"host=127.0.0.1 port={self.port} user=edge dbname=postgres"

    def dsn_for(self, dbname: str) -> str:
        """Return the connection string of another database of this server."""
        return f"host=127.0.0.1 port={self.port} user=edge dbname={dbname}"

    def _run(self, argv: list[str], timeout_s: float) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=timeout_s,
                       user=self._user, cwd=self.root)

    def start(self) -> None:
        """initdb, start the server and wait until it accepts connections."""
        data = self.root / "data"
        self._run([str(self.bindir / "initdb"), "-D", str(data), "-U", "edge", "--auth=trust",
                   "-E", "UTF8", "--locale=C", "--no-sync"], timeout_s=120)
        log = (self.root / "postgres.log").open("wb")
        # a test tool: fsync may be off for tests (the benches keep it on, honest figures)
        self.proc = subprocess.Popen(
            [str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port),
             "-k", str(self.root), "-c", "listen_addresses=127.0.0.1",
             "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "max_connections=50",
             # what a database under a steady insert stream is given anyway: checkpoints far
             # apart (each one makes every next page change write a full page image)
             "-c", "shared_buffers=256MB", "-c", "max_wal_size=4GB",
             "-c", "checkpoint_timeout=30min", "-c", "wal_buffers=16MB"],
            stdout=log, stderr=subprocess.STDOUT, user=self._user, cwd=self.root)
        log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}: "
                                   + (self.root / "postgres.log").read_text()[-2000:])
            ready = subprocess.run([str(self.bindir / "pg_isready"), "-q", "-h", "127.0.0.1",
                                    "-p", str(self.port), "-U", "edge", "-t", "2"],
                                   check=False, timeout=10)
            if ready.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start in {START_TIMEOUT_S:.0f} s")

    def stop(self) -> None:
        """Stop the server (fast shutdown, then kill) and delete its folder."""
        if self.proc is not None and self.proc.poll() is None:
            # SIGINT is the "fast" shutdown; SIGTERM ("smart") would wait for every client
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT_S)
        with contextlib.suppress(OSError):
            shutil.rmtree(self.root)
