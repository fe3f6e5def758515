"""The one way the agent replaces a state file: private, whole, and (by default) durable.

Review findings 4 + 15: six hand-written routines differed — the light schedule and the clock
floor renamed without fsyncing the directory, so after a power cut the old file could be back
while the platform had been told ``stored``. ``durable`` writes fsync the data, rename, then
fsync the directory (the rename is on disk before the call returns); a non-durable write (the
status file, rewritten every few seconds and only read by ``edge status``) skips both fsyncs
and is still atomic: a reader sees the old or the new file, whole.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path


def write_private_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``: mode 0600, atomic, fsynced with its directory if durable.

    Blocking (an SD card's fsync takes 10-300 ms): call it in a thread from the event loop.
    The temporary file ``<name>.tmp`` is removed when the write fails; the old file stays.
    """
    # a str, not a Path: pathlib interns a new path's parts, and a name interned and freed on
    # every write churns the interpreter's interned-string table until it doubles (RSS)
    tmp = os.fspath(path) + ".tmp"
    # owner-only even under a shell's umask 022 (security review 19 #11); fchmod also
    # tightens a tmp file an older agent left 0644
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            view = memoryview(data)
            while view:  # os.write may write less than asked (a signal, a full device)
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)  # noqa: PTH105 - tmp stays a str (above)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # noqa: PTH108 - tmp stays a str (above)
        raise
    if durable:
        fsync_dir(path.parent)


def remove_durably(path: Path) -> None:
    """Remove ``path`` if present; the removal is on disk (its directory fsynced) on return."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make the renames and removals in ``folder`` durable (blocking)."""
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_small_state_file(path: Path, max_bytes: int) -> bytes:
    """Return the bytes of a state file the agent wrote itself, bounded and never blocking.

    A damaged state dir must not stop the agent at start (issue 14 entry points): a FIFO or a
    device at the path would block ``open``/``read`` for ever, and a huge file would be read
    whole. Raises OSError for anything but a regular file, ValueError when over ``max_bytes``,
    FileNotFoundError when absent (callers tell "absent" from "damaged").
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ValueError(f"{path} is over {max_bytes} bytes")
    return data
