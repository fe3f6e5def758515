"""Damaged state files the agent wrote itself never stop or stall a start (issue 14 entry
points; found while writing docs/inputs.md): a FIFO at the path, a huge file, a number JSON
reads as infinity, digits that are no date.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path

import pytest

from edge import clock as clock_mod
from edge.atomic_file import read_small_state_file, write_private_atomic
from edge.commands.replay import ReplayState


async def _bounded(fn: object, *args: object) -> object:
    """Run a blocking read in a thread; a FIFO that blocks fails the test in 5 s, not never."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), 5)  # type: ignore[arg-type]


async def test_a_fifo_at_a_state_file_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        await _bounded(read_small_state_file, fifo, 64)
    floor = tmp_path / clock_mod.FLOOR_FILE
    os.mkfifo(floor)
    assert await _bounded(clock_mod.read_floor, floor) is None


def test_a_state_file_over_its_bound_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big"
    path.write_bytes(b"x" * 65)
    with pytest.raises(ValueError, match="over 64 bytes"):
        read_small_state_file(path, 64)
    path.write_bytes(b"x" * 64)
    assert read_small_state_file(path, 64) == b"x" * 64
    with pytest.raises(FileNotFoundError):
        read_small_state_file(tmp_path / "absent", 64)


@pytest.mark.parametrize(("when", "kept"), [
    (dt.datetime(2026, 11, 26, tzinfo=dt.UTC), True),
    (dt.datetime(2050, 1, 1, tzinfo=dt.UTC), True),  # a long service life
    (dt.datetime(2025, 6, 1, tzinfo=dt.UTC), False),  # before this release was built
    (dt.datetime(5138, 1, 1, tzinfo=dt.UTC), False),  # digits from a damaged sector
])
def test_a_floor_that_is_no_date_is_no_floor(tmp_path: Path, when: dt.datetime,
                                             kept: bool) -> None:
    path = tmp_path / clock_mod.FLOOR_FILE
    ns = int(when.timestamp()) * 1_000_000_000
    clock_mod.write_floor(path, ns)
    assert clock_mod.read_floor(path) == (ns if kept else None)


@pytest.mark.parametrize("content", [
    b'{"counters": {"k": 1e400}}',  # int(inf): OverflowError ended every start
    b'{"counters": {"k": 1}, "floor_ns": -1e999}',
    b'{"counters": {"k": 1}}' + b" " * (17 << 20),
    None,  # a FIFO
])
async def test_a_damaged_replay_file_is_lost_state_not_a_crash(tmp_path: Path,
                                                               content: bytes | None) -> None:
    replay = ReplayState.beside(tmp_path / "outbox.db")
    if content is None:
        os.mkfifo(replay.path)
    else:
        replay.path.write_bytes(content)
    await _bounded(lambda: replay.load({"k": 7}, store_replaced=False))
    assert replay.lost  # fail closed: refused until the clock is trusted (D40)
    assert replay.counters["k"] == 7
    if content is None:
        replay.path.unlink()
    again = ReplayState.beside(tmp_path / "outbox.db")
    write_private_atomic(again.path, b'{"counters": {"k": 9}}')
    again.load({"k": 7}, store_replaced=False)
    assert not again.lost
    assert again.counters["k"] == 9


@pytest.mark.parametrize("content", [
    b"not json", b"\xff\xfe{}", b"[" * 100_000 + b"]" * 100_000,
    b'{"deadbeefdeadbeef": {"public_key_hex": "' + b"ab" * (200 << 10) + b'"}}',  # > 256 KiB
    b"[]", b'{"a": 1e400}'])
def test_a_keys_file_that_is_no_keys_document_is_refused_whole(tmp_path: Path,
                                                              content: bytes) -> None:
    """The platform keys file (docs/inputs.md): not JSON, deeply nested or over its cap."""
    from edge.commands.keys import load_platform_keys, platform_keys_problem
    from tests.test_command_hardening import HardHarness

    harness = HardHarness(tmp_path)
    keys_file = tmp_path / "platform-keys.json"
    assert load_platform_keys(harness.loaded.config, tmp_path) != {}  # the harness's: loaded
    keys_file.write_bytes(content)
    keys_file.chmod(0o600)
    assert load_platform_keys(harness.loaded.config, tmp_path) == {}
    problem = platform_keys_problem(harness.loaded.config, tmp_path)
    assert problem is not None
    assert "ab" * 8 not in problem  # never echoes the file
