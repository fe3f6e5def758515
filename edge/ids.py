"""UUIDv7 identifiers (RFC 9562): time-ordered idempotency keys for events and batches."""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7(now_ms: int | None = None) -> uuid.UUID:
    """Return a UUIDv7; ids made in one process are strictly increasing (12-bit counter)."""
    global _last_ms, _counter  # noqa: PLW0603 - one monotonic generator per process
    with _lock:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if ms <= _last_ms:
            _counter += 1
            if _counter > 0xFFF:  # counter exhausted within one ms: borrow the next ms
                _last_ms += 1
                _counter = 0
            ms = _last_ms
        else:
            _last_ms = ms
            _counter = int.from_bytes(os.urandom(2), "big") & 0x3FF  # room to count upwards
        rand_b = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80
        value |= 0x7 << 76 | _counter << 64 | 0b10 << 62 | rand_b
        return uuid.UUID(int=value)
