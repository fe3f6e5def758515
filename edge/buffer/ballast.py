"""The disk-full ballast: space kept in reserve beside the outbox (reliability.md R7).

A file of ``BALLAST_BYTES`` real blocks lies beside the store. On a full disk it is released so
that DELETE (eviction) and a WAL truncate can still run, and so that a restart on a full disk
can open the store instead of taking "disk I/O error" for corruption (issue 14 re-test f14 #1);
it is re-created once there is room for it twice over.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from edge.atomic_file import write_private_atomic

log = logging.getLogger(__name__)

BALLAST_BYTES = 2 * 1024 * 1024
NO_ROOM_BYTES = 256 * 1024  # below this free, an I/O error at open is a full disk (f14 #1)


def no_room(path: Path) -> bool:
    """Return whether the file system holding ``path`` has (almost) no free space left."""
    try:
        stat = os.statvfs(path.parent)
    except OSError:
        return False
    return stat.f_bavail * stat.f_frsize < NO_ROOM_BYTES


class Ballast:
    """The reserve file of the store at ``store_path`` (``<store>.ballast``)."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        # built once: pathlib interns a new path's parts, and a name interned and freed on
        # every check churns the interpreter's interned-string table until it doubles (RSS)
        self._path = store_path.with_name(store_path.name + ".ballast")

    @property
    def path(self) -> Path:
        """Return the reserve file's path."""
        return self._path

    def exists(self) -> bool:
        """Return whether the reserve is in place."""
        return self.path.exists()

    def restore(self) -> bool:
        """Create the reserve file when there is room for it twice over; return if present."""
        if self.path.exists():
            return True
        stat = os.statvfs(self.store_path.parent)
        if stat.f_bavail * stat.f_frsize < 3 * BALLAST_BYTES:
            return False
        try:  # real blocks, not a sparse hole; the helper removes a half-written tmp
            write_private_atomic(self.path, b"\0" * BALLAST_BYTES)
        except OSError:
            return False
        return True

    def release(self) -> bool:
        """Delete the reserve (the disk is full); return whether there was one."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        log.warning("outbox: disk full; released %d KiB of reserve to keep evicting",
                    BALLAST_BYTES // 1024)
        return True
