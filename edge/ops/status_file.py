"""``status.json``: what ``edge status``, ``reload`` and ``check`` read of a running agent.

The agent composes the snapshot (it knows the parts); this module writes it every few seconds
and reads it back. Not durable on purpose: rewritten every ``STATUS_EVERY_S`` and read only by
the CLI, so a power cut may lose the last one (no fsync: flash wear) but never tear it
(atomic replace). Owner-only: status carries errors and alarm keys (security review 19 #11).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from edge.atomic_file import write_private_atomic
from edge.aux_writes import AuxWrites

STATUS_FILE = "status.json"
STATUS_EVERY_S = 2.0

# what `edge status`, `edge reload` and `edge check` read from it, with the types they need
_STATUS_SHAPE: dict[str, type | tuple[type, ...]] = {
    "written_at": (int, float), "version": str, "pid": int, "time_quality": str,
    "config": dict, "outbox": dict, "devices": dict}


class StatusFile:
    """Writes ``snapshot()`` to ``state_dir/status.json``; a failed write is counted, not fatal."""

    def __init__(self, state_dir: Path, snapshot: Callable[[], Awaitable[dict[str, Any]]],
                 aux_writes: AuxWrites) -> None:
        self.path = state_dir / STATUS_FILE
        self._snapshot = snapshot
        self._aux_writes = aux_writes

    async def write(self) -> None:
        """Write the snapshot now (off the loop); ENOSPC or EIO is counted (f14 #1)."""
        data = json.dumps(await self._snapshot(), ensure_ascii=False, indent=1).encode("utf-8")
        try:
            await asyncio.to_thread(functools.partial(write_private_atomic, self.path, data,
                                                      durable=False))
        except OSError as exc:  # never fatal; the helper removed its .tmp
            self._aux_writes.failed(STATUS_FILE, exc)
        else:
            self._aux_writes.written(STATUS_FILE)

    async def run(self) -> None:
        """Rewrite the file every ``STATUS_EVERY_S`` until cancelled."""
        while True:
            await self.write()
            await asyncio.sleep(STATUS_EVERY_S)


def read_status(state_dir: Path) -> dict[str, Any] | None:
    """Return the running agent's last status, or None when there is none or it is damaged.

    The agent writes it atomically, but a torn disk or a hand edit must read as "no status"
    (exit 1 with a message), not as a traceback.
    """
    try:
        status = json.loads((state_dir / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(status, dict) or not all(
            isinstance(status.get(key), kind) for key, kind in _STATUS_SHAPE.items()):
        return None
    if not math.isfinite(status["written_at"]) or isinstance(status["pid"], bool):
        return None
    return status
