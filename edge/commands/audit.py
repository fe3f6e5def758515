"""The command audit trail: one fsynced JSON line per outcome (edge.audit)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def clean(value: Any) -> Any:
    """Return ``value`` with every string made encodable (lone surrogates escaped)."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {clean(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    return value


def audited_before(path: Path) -> bool:
    """Return whether an audit log (or a rotated one) beside ``path`` has any record.

    The evidence of earlier operation that survives deleting the outbox files: the replay
    state is then lost, not new (issue 19 re-test #2; D66).
    """
    try:
        return any(p.stat().st_size > 0 for p in path.parent.glob(path.name + "*"))
    except OSError:
        return True  # cannot tell: fail closed


def append_audit(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync: the audit trail survives a power cut."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (json.dumps(record, ensure_ascii=False) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
