"""Secrets from files: never defaults, never placeholders, never logged (reliability.md S1, R15)."""

from __future__ import annotations

from pathlib import Path

from edge.errors import EdgeError
from edge.keys import check_mode

PLACEHOLDERS = frozenset({"", "changeme", "change-me", "password", "passw0rd", "admin",
                          "secret", "default", "123456", "12345678", "edge", "root", "test",
                          "xxxxxx", "todo"})
MIN_LENGTH = 12


class SecretError(EdgeError):
    """A secret file is missing, too open, or holds a placeholder."""

    code = "secret.invalid"


def read_secret(path: Path, what: str) -> str:
    """Return the secret in ``path``; refuse placeholders, short values and loose modes."""
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
    return value
