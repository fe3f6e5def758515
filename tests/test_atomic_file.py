"""One atomic, private, durable file write for every state file (review findings 4 + 15).

Six hand-written routines had different durability: the light schedule's rename was not
fsynced in its directory, so a power cut could leave the old schedule in force while the
platform had been told ``stored``.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from edge.atomic_file import write_private_atomic


def _count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    counts = {"file": 0, "dir": 0}
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        counts["dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"] += 1
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return counts


def test_a_durable_write_is_private_whole_and_fsynced_in_its_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _count_fsyncs(monkeypatch)
    path = tmp_path / "state" / "x.json"
    path.parent.mkdir()
    (path.parent / "x.json.tmp").write_bytes(b"left by an older agent")
    (path.parent / "x.json.tmp").chmod(0o644)
    old = os.umask(0o022)
    try:
        write_private_atomic(path, b"first")
        write_private_atomic(path, b"second" * 10_000)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"second" * 10_000
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]  # no tmp left behind
    assert counts == {"file": 2, "dir": 2}


def test_a_non_durable_write_is_private_and_never_fsyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _count_fsyncs(monkeypatch)
    path = tmp_path / "status.json"
    write_private_atomic(path, b"{}", durable=False)
    assert path.read_bytes() == b"{}"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert counts == {"file": 0, "dir": 0}


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def short_write(fd: int, data: bytes | memoryview) -> int:
        return real_write(fd, bytes(data[:7]))  # a signal or a full pipe: a partial write

    monkeypatch.setattr(os, "write", short_write)
    path = tmp_path / "replay.json"
    write_private_atomic(path, b"0123456789" * 100)
    assert path.read_bytes() == b"0123456789" * 100


def test_a_failed_write_keeps_the_old_file_and_leaves_no_tmp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "floor"
    write_private_atomic(path, b"old")

    def no_space(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", no_space)
    with pytest.raises(OSError, match="No space"):
        write_private_atomic(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["floor"]


async def test_a_stored_light_schedule_is_durable_before_it_is_reported(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule's rename is fsynced in its directory before ``store_schedule`` returns."""
    from edge.kinds.streetlight import LightStep
    from tests.test_light_schedule import _config, _driver

    driver, bus = _driver(_config(tmp_path, 1), 1, tmp_path / "state" / "schedules")
    counts = _count_fsyncs(monkeypatch)
    try:
        driver.store_schedule([LightStep(at="sunset+15", on=True, dim_pct=80)])
    finally:
        await bus.close()
    assert counts == {"file": 1, "dir": 1}


@pytest.mark.parametrize("writer", ["clock_floor", "coverage", "replay", "seq"])
def test_every_state_file_writer_fsyncs_its_directory(
        writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _count_fsyncs(monkeypatch)
    if writer == "clock_floor":
        from edge.clock import write_floor
        write_floor(tmp_path / "clock_floor", 1)
    elif writer == "coverage":
        from edge.buffer.device_state import DeviceStateStore
        DeviceStateStore(tmp_path / "coverage", max_bytes=1024).save("truck-1", {"a": 1})
    elif writer == "replay":
        from edge.commands.replay import ReplayState
        ReplayState(tmp_path / "replay.json").write()
    else:
        from edge.buffer.store import Outbox
        store = Outbox(tmp_path / "outbox.db")
        store.open()
        counts["dir"] = 0
        store._reserve(10)
        store.close()
    assert counts["dir"] >= 1
