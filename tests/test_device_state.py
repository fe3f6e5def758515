"""The per-device state store (edge/buffer/device_state.py): light schedules, a truck's shift."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from edge.buffer.device_state import DeviceStateStore
from edge.errors import StoreCorruptError


def test_a_document_round_trips_private_and_whole(tmp_path: Path) -> None:
    store = DeviceStateStore(tmp_path / "schedules", max_bytes=1024)
    assert store.load("lamp-1") is None  # nothing stored yet: not an error
    old = os.umask(0o022)
    try:
        store.save("lamp-1", {"steps": [{"at": "18:00", "on": True, "dim_pct": 80}]})
    finally:
        os.umask(old)
    path = tmp_path / "schedules" / "lamp-1.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert store.load("lamp-1") == {"steps": [{"at": "18:00", "on": True, "dim_pct": 80}]}
    assert sorted(p.name for p in path.parent.iterdir()) == ["lamp-1.json"]  # no .tmp left
    store.save("lamp-1", None)
    assert not path.exists()
    store.save("lamp-1", None)  # removing what is gone is fine
    assert store.load("lamp-1") is None


@pytest.mark.parametrize(("content", "why"), [
    (b"not json", "JSONDecodeError"), (b"[1, 2]", "list, not an object"),
    (b"null", "NoneType, not an object"), (b'{"a": "\xc3\x28"}', "UnicodeDecodeError"),
    (b"{" + b" " * 2000 + b"}", "over 1024 bytes"),
    (b"[" * 100_000 + b"]" * 100_000, "RecursionError"),
])
def test_a_damaged_document_is_a_store_corrupt_error_naming_the_file(
        tmp_path: Path, content: bytes, why: str) -> None:
    (tmp_path / "lamp-1.json").write_bytes(content)
    with pytest.raises(StoreCorruptError) as info:
        DeviceStateStore(tmp_path, max_bytes=1024 if len(content) < 5000 else 1 << 20
                         ).load("lamp-1")
    assert "lamp-1.json" in str(info.value)
    assert why in str(info.value)


def test_a_fifo_in_place_of_the_file_does_not_block(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "lamp-1.json")
    with pytest.raises(StoreCorruptError, match="not a regular file"):
        DeviceStateStore(tmp_path, max_bytes=1024).load("lamp-1")


@pytest.mark.parametrize("name", ["../lamp", "a/b", "", ".hidden", "Lamp", "x" * 64,
                                  "lamp-1\n"])
def test_a_name_devices_yaml_would_refuse_names_no_file(tmp_path: Path, name: str) -> None:
    store = DeviceStateStore(tmp_path / "inside", max_bytes=1024)
    with pytest.raises(ValueError, match="not a device name"):
        store.save(name, {"a": 1})
    with pytest.raises(ValueError, match="not a device name"):
        store.load(name)
    assert list(tmp_path.iterdir()) == []


def test_the_names_it_takes_are_the_names_devices_yaml_takes() -> None:
    from edge.buffer.device_state import _SAFE_NAME
    from edge.kinds.device import NAME_PATTERN

    assert f"^{_SAFE_NAME.pattern}$" == NAME_PATTERN


def test_a_removal_is_durable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = DeviceStateStore(tmp_path, max_bytes=1024)
    store.save("truck-1", {"a": 1})
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.save("truck-1", None)
    assert not (tmp_path / "truck-1.json").exists()
    assert synced == [str(tmp_path)]
