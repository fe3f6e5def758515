"""Disk full (reliability.md R7) on a real, tiny tmpfs: telemetry is shed with counters and a
gap event, no alarm is dropped, and the store recovers by itself when space returns."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.errors import StoreFullError
from tests.figures import figure
from tests.outbox_sql import sql_rows
from tests.outbox_util import ev, open_store

pytestmark = pytest.mark.reliability


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "fs"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root and must mount a tmpfs: {result.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(path: Path, leave_bytes: int) -> None:
    """Grow a filler file until only ``leave_bytes`` remain free."""
    with path.open("ab") as fh:
        while True:
            free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
            if free <= leave_bytes:
                return
            try:
                fh.write(b"\0" * min(65536, free - leave_bytes))
                fh.flush()
            except OSError:
                return


def test_disk_full_sheds_telemetry_keeps_alarms_and_recovers(small_fs: Path) -> None:
    store = open_store(small_fs / "outbox.db", quota_bytes=64 * 1024 * 1024)  # above the fs
    filler = small_fs / "filler"
    alarms: list[int] = []
    refused = 0
    # fill the file system to 100 % with telemetry and a filler file
    fill(filler, leave_bytes=2 * 1024 * 1024)
    for i in range(2000):
        try:
            result = store.append([ev(3, size=300) for _ in range(50)])
            refused += sum(result.refused.values())
        except StoreFullError:
            refused += 50
        if i % 20 == 0:
            alarms += store.append([ev(0, size=100)]).seqs
        if refused > 500:
            break
    fill(filler, leave_bytes=0)
    # at 100 %: alarms still get in (telemetry is evicted to make room), nothing crashes
    for _ in range(50):
        alarms += store.append([ev(0, size=100)]).seqs
    present = {r[0] for r in sql_rows(store, "SELECT seq FROM events")}
    assert set(alarms) <= present, "an alarm was dropped on a full disk"
    assert len(alarms) >= 50
    counters = store.counters()
    shed = sum(v for k, v in counters.items() if k.startswith("dropped."))
    assert shed > 0, counters
    gaps = [json.loads(r[0])["data"] for r in sql_rows(store,
        "SELECT payload FROM events WHERE prio = 0") if b'"gap"' in r[0]]
    assert gaps, "no gap event announced the shed telemetry"
    # DELETE still works on the full disk: the uplink can keep acking
    store.ack(alarms[:10])
    # space returns: telemetry is accepted again, by itself
    filler.unlink()
    with contextlib.suppress(StoreFullError):
        store.append([ev(3)])
    result = store.append([ev(3, size=300) for _ in range(20)])
    assert len(result.seqs) == 20 and not result.refused
    store._ballast_check_at = 0.0
    store.append([ev(3)])
    assert (small_fs / "outbox.db.ballast").exists(), "the reserve was not restored"
    assert sql_rows(store, "PRAGMA integrity_check")[0][0] == "ok"
    store.close()
    figure("R7", f"disk at 100 %: {shed} telemetry events shed (counted, {len(gaps)} gap events), "
                 f"0 of {len(alarms)} alarms dropped, DELETE worked, recovered by itself, 0 corrupt")
