"""Simulated power loss (reliability.md R2): rebuild crash images from the real write/fsync
trace of the store and reopen them. FULL loses nothing acknowledged; NORMAL must be caught."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge.buffer.store import Outbox
from tests.figures import figure
from tests.outbox_sql import sql_rows
from tests.powerloss.replay import read_trace, sweep

pytestmark = pytest.mark.reliability

ROOT = Path(__file__).resolve().parents[1]
SHIM_SRC = ROOT / "tests" / "powerloss" / "plsim.c"


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have a C compiler for the power-loss shim (apt-get install gcc)")
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("shim") / "plsim.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SRC), "-ldl"],
                   check=True)
    return out


def traced_run(shim: Path, folder: Path, sync: str, commits: int) -> Path:
    trace = folder / "trace.bin"
    env = {**os.environ, "LD_PRELOAD": str(shim), "PLSIM_TRACE": str(trace),
           "PLSIM_MATCH": str(folder)}
    subprocess.run([sys.executable, "-m", "tests.powerloss.writer", str(folder), sync,
                    str(commits)], cwd=ROOT, env=env, check=True, timeout=120)
    return trace


def crash_images(shim: Path, folder: Path, sync: str, *, points: int, images: int,
                 commits: int) -> tuple[int, int, int]:
    """Return (images checked, images losing acknowledged events, corrupt images)."""
    folder.mkdir()
    ops, names = read_trace(traced_run(shim, folder, sync, commits))
    ids = {Path(n).name: i for i, n in names.items()}
    db_id, wal_id, marker_id = ids["outbox.db"], ids["outbox.db-wal"], ids["marker"]
    assert any(op.kind == "S" for op in ops), "the shim saw no fsync: it is not working"
    rng = random.Random(5)
    chosen = set(rng.sample(range(len(ops)), min(points, len(ops))))
    checked = lossy = corrupt = 0
    scratch = folder / "img"
    scratch.mkdir()
    for _i, disk in sweep(ops, chosen):
        # what had been acknowledged: the marker writes done so far (in process order)
        marker = bytes(disk.durable.get(marker_id, b""))
        for op in disk.pending.get(marker_id, []):
            marker = marker[:op.a] + op.data + marker[op.a + len(op.data):]
        acked = max((int.from_bytes(marker[k:k + 8], "little")
                     for k in range(0, len(marker) - 7, 8)), default=0)
        for n in range(images):
            for suffix in ("", "-wal", "-shm"):
                (scratch / f"outbox.db{suffix}").unlink(missing_ok=True)
            (scratch / "outbox.db").write_bytes(disk.image(db_id, rng, garbage=n == 2))
            (scratch / "outbox.db-wal").write_bytes(disk.image(wal_id, rng, garbage=n == 2))
            checked += 1
            why = ""
            try:
                db = sqlite3.connect(scratch / "outbox.db")
                why = db.execute("PRAGMA integrity_check").fetchone()[0]
                db.close()
            except sqlite3.DatabaseError as exc:
                why = str(exc)
            ok = why == "ok"
            present: set[int] = set()
            if ok:  # reopen it the agent's way: check, migrate, read
                store = Outbox(scratch / "outbox.db")
                store.open()
                ok = store.replaced_corrupt is None
                present = {r[0] for r in sql_rows(store, "SELECT seq FROM events")}
                store.close()
                for leftover in scratch.glob("outbox.db.corrupt-*"):
                    leftover.unlink()
            if not ok:
                corrupt += 1
                print(f"corrupt image at op {_i} ({ops[_i].kind} {names[ops[_i].file]}), "
                      f"image {n}, acked {acked}: {why}")
            elif not set(range(1, acked + 1)) <= present:
                lossy += 1
    return checked, lossy, corrupt


def test_full_sync_loses_no_acknowledged_event_at_500_crash_points(shim: Path,
                                                                   tmp_path: Path) -> None:
    checked, lossy, corrupt = crash_images(shim, tmp_path / "full", "FULL", points=500,
                                           images=3, commits=400)
    figure("R2", f"FULL: {checked} crash images, {lossy} lost acknowledged events, {corrupt} corrupt")
    assert checked >= 1500
    assert corrupt == 0
    assert lossy == 0


def test_normal_sync_is_caught_losing_acknowledged_events(shim: Path, tmp_path: Path) -> None:
    """Proves the test above can fail: NORMAL does not fsync the WAL at commit."""
    checked, lossy, _corrupt = crash_images(shim, tmp_path / "normal", "NORMAL", points=200,
                                            images=3, commits=200)
    figure("R2", f"NORMAL: {checked} crash images, {lossy} lost acknowledged events")
    assert lossy > 0
