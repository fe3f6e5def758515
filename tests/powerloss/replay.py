"""Rebuild the files a power cut could leave, from a plsim trace.

Model: at a crash point every write that a completed fsync covered is on disk; each write
after the file's last fsync is independently on disk, lost, torn (a prefix of its 512-byte
sectors) or — with ``garbage`` — replaced by random bytes in the sectors it did not finish.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512
_HEAD = struct.Struct("<cBqq")


@dataclass
class Op:
    """One traced operation."""

    kind: str
    file: int
    a: int
    data: bytes = b""


def read_trace(path: Path) -> tuple[list[Op], dict[int, str]]:
    """Parse a trace into ops and file names."""
    raw = path.read_bytes()
    ops: list[Op] = []
    names: dict[int, str] = {}
    pos = 0
    while pos + _HEAD.size <= len(raw):
        kind_b, fid, a, b = _HEAD.unpack_from(raw, pos)
        pos += _HEAD.size
        kind = kind_b.decode()
        if kind == "O":
            names[fid] = raw[pos:pos + b].decode()
            pos += b
        elif kind == "W":
            ops.append(Op("W", fid, a, raw[pos:pos + b]))
            pos += b
        else:
            ops.append(Op(kind, fid, a))
    return ops, names


def _apply(img: bytearray, op: Op) -> None:
    if op.kind == "W":
        end = op.a + len(op.data)
        if len(img) < end:
            img.extend(b"\0" * (end - len(img)))
        img[op.a:end] = op.data
    elif op.kind == "T":
        del img[op.a:]


@dataclass
class Disk:
    """Durable and pending state per file while sweeping the trace."""

    durable: dict[int, bytearray] = field(default_factory=dict)
    pending: dict[int, list[Op]] = field(default_factory=dict)

    def step(self, op: Op) -> None:
        """Take one op into account."""
        img = self.durable.setdefault(op.file, bytearray())
        if op.kind == "S":
            for p in self.pending.pop(op.file, []):
                _apply(img, p)
        else:
            self.pending.setdefault(op.file, []).append(op)

    def image(self, fid: int, rng: random.Random, *, garbage: bool) -> bytes:
        """Return one possible on-disk content of file ``fid`` after a cut now."""
        img = bytearray(self.durable.get(fid, b""))
        for op in self.pending.get(fid, []):
            fate = rng.random()
            if fate < 0.4:
                _apply(img, op)
            elif fate < 0.7 or op.kind != "W":
                continue  # lost
            else:
                sectors = max(1, len(op.data) // SECTOR)
                keep = rng.randrange(sectors) * SECTOR
                torn = op.data[:keep]
                if garbage:
                    torn += rng.randbytes(len(op.data) - keep)
                _apply(img, Op("W", fid, op.a, torn))
        return bytes(img)


def sweep(ops: list[Op], points: set[int]) -> Iterator[tuple[int, Disk]]:
    """Yield (index, disk) right after each op whose index is in ``points``."""
    disk = Disk()
    for i, op in enumerate(ops):
        disk.step(op)
        if i in points:
            yield i, disk
