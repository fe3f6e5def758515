"""Per-device state the drivers keep across restarts: one JSON document per device (D30, D87).

Two folders of ``state_dir`` hold them: ``schedules/`` (the light schedule a ``light.schedule``
command stored, ``{"steps": [...]}``) and ``coverage/`` (a truck's running work shift). A
driver is handed its ``DeviceStateStore`` and never touches the files; what a document means
stays the driver's.

Files, not tables in the outbox: the outbox is moved aside and replaced when it is found
corrupt or newer than the agent, and a lamp's schedule must outlive that (a technician can read
and delete a file, too). A write is atomic and durable (``write_private_atomic``): the platform
is told ``stored`` only after the rename is fsynced with its directory. A read is bounded and
never blocks on a FIFO (``read_small_state_file``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edge.atomic_file import read_small_state_file, remove_durably, write_private_atomic
from edge.errors import StoreCorruptError

# a device name as devices.yaml allows it (config.NAME_PATTERN; buffer does not import config):
# anything else could name a file outside the folder
_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,62}")  # fullmatch: no "name\n" either


class DeviceStateStore:
    """One folder of per-device JSON documents; every method blocks (call it in a thread)."""

    def __init__(self, folder: Path, *, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    def _file(self, device: str) -> Path:
        if _SAFE_NAME.fullmatch(device) is None:
            raise ValueError(f"{device!r} is not a device name")
        return self.folder / f"{device}.json"

    def load(self, device: str) -> dict[str, Any] | None:
        """Return ``device``'s document (a JSON object), or None when none is stored.

        Raises ``StoreCorruptError`` naming the file when it cannot be read, is over
        ``max_bytes``, not a regular file, or not a JSON object; the driver starts without it
        then. What the object holds is the driver's to check.
        """
        path = self._file(device)
        try:
            doc = json.loads(read_small_state_file(path, self.max_bytes))
        except FileNotFoundError:
            return None
        # RecursionError: json's C decoder on a deeply nested (corrupted) file
        except (OSError, ValueError, RecursionError) as exc:
            raise StoreCorruptError(f"{path.name}: {type(exc).__name__}: {exc}"[:300]) from None
        if not isinstance(doc, dict):
            raise StoreCorruptError(f"{path.name}: {type(doc).__name__}, not an object")
        return doc

    def save(self, device: str, doc: dict[str, Any] | None) -> None:
        """Replace ``device``'s document (None: remove it): atomic and durable on return."""
        path = self._file(device)
        if doc is None:
            remove_durably(path)  # a removed shift must not come back after a power cut
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        write_private_atomic(path, json.dumps(doc, allow_nan=False).encode("utf-8"))
