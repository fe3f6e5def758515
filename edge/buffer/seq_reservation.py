"""The seq reservation: a high-water mark beside the outbox that every assigned seq stays below.

``seq`` is never reused, also after a corrupt store was replaced: before a seq is used, a file
``<store>.seq`` durably records ``{"reserved_upto": N}`` with N above it, reserved a block at a
time so that one write covers many appends.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from edge.atomic_file import read_small_state_file, write_private_atomic

SEQ_RESERVE_BLOCK = 100_000
SEQ_FILE_MAX_BYTES = 4096  # {"reserved_upto": N} is ~40 bytes: more is not ours


class SeqReservation:
    """The reservation file of the store at ``store_path`` and the mark it holds."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.reserved_upto = 0

    @property
    def path(self) -> Path:
        """Return the reservation file's path."""
        return self.store_path.with_name(self.store_path.name + ".seq")

    def load(self) -> int:
        """Read the mark from the file (0 when there is none); return it."""
        self.reserved_upto = self._read()
        return self.reserved_upto

    def _read(self) -> int:
        try:
            # bounded and never blocking, like every state file the agent wrote (D80)
            raw = read_small_state_file(self.path, SEQ_FILE_MAX_BYTES)
            return int(json.loads(raw.decode("ascii"))["reserved_upto"])
        except FileNotFoundError:
            return 0
        # RecursionError: a deeply nested file; OverflowError: int() of 1e400
        except (ValueError, KeyError, TypeError, OSError, RecursionError, OverflowError):
            # A damaged reservation file must not reuse seqs: fall back to a time-based floor
            # (microseconds since 2026 exceed any seq a gateway can have assigned).
            return int((time.time() - 1_767_225_600) * 1_000_000)

    def ensure(self, upto: int, next_seq: int) -> None:
        """Make seqs below ``upto`` usable: reserve a block more when the mark is not above it."""
        if upto > self.reserved_upto:
            self.reserve(upto, next_seq)

    def reserve(self, upto: int, next_seq: int) -> None:
        """Durably record that seqs up to ``upto`` may be used (before any is used)."""
        target = max(upto, next_seq) + SEQ_RESERVE_BLOCK
        write_private_atomic(self.path, json.dumps({"reserved_upto": target}).encode())
        self.reserved_upto = target
