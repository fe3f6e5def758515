"""Secrets from files: never defaults, never placeholders, never logged (reliability.md S1, R15)."""

from __future__ import annotations

import os
from pathlib import Path

from edge.errors import SecretError
from edge.security.keys import check_mode

PLACEHOLDERS = frozenset({"", "changeme", "change-me", "password", "passw0rd", "admin",
                          "secret", "default", "123456", "12345678", "edge", "root", "test",
                          "xxxxxx", "todo"})
MIN_LENGTH = 12
# path -> (stat signature, value): every southbound reconnect of every device asks again, on
# the event loop; a stat() is all a hit costs (issue 14 #7). Only accepted values are kept.
_CACHE: dict[Path, tuple[tuple[int, ...], str]] = {}


def file_signature(st: os.stat_result) -> tuple[int, ...]:
    """Return what changes when a file is rewritten, replaced or re-moded."""
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino, st.st_mode, st.st_uid)


def read_secret(path: Path, what: str) -> str:
    """Return the secret in ``path``; refuse placeholders, short values and loose modes.

    Read once, then again only when the file's stat signature changes (new content, a new
    file renamed over it, a chmod).
    """
    try:
        signature = file_signature(path.stat())
    except OSError as exc:
        _CACHE.pop(path, None)
        raise SecretError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    cached = _CACHE.get(path)
    if cached is not None and cached[0] == signature:
        return cached[1]
    try:
        value = path.read_text(encoding="utf-8").strip()
        problem = check_mode(path)
    except OSError as exc:
        raise SecretError(f"{what}: cannot read {path}: {exc.strerror}") from exc
    except UnicodeDecodeError:  # never echo the bytes: they may be the secret
        raise SecretError(f"{what}: {path} is not UTF-8 text") from None
    if problem:
        raise SecretError(f"{what}: {problem}")
    if value.lower() in PLACEHOLDERS or len(value) < MIN_LENGTH:
        raise SecretError(f"{what}: {path} holds a placeholder or a secret shorter than "
                          f"{MIN_LENGTH} characters; set a unique one")
    _CACHE[path] = (signature, value)
    return value
