"""Gateway key files: created 0600 at provisioning, never logged, mode checked at load."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from edge.errors import EdgeError
from edge.uplink.signing import Ed25519PrivateKey, kid_of, raw_public_key


class KeyFileError(EdgeError):
    """A key file is missing, unreadable, too open, or not an Ed25519 key."""

    code = "keys.invalid"


def init_key(path: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """Create a new Ed25519 key at ``path`` with mode 0600; refuse to overwrite unless ``force``."""
    if path.exists() and not force:
        raise KeyFileError(f"{path} exists; refusing to replace a provisioned key (use --force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    tmp = path.with_name(path.name + ".tmp")
    # O_EXCL + 0600 from the first byte: the key is never readable by others, not even briefly.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
    return key


def check_mode(path: Path) -> str | None:
    """Return why ``path`` is too open for a secret, or None when only its owner can read it."""
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        return f"{path} has mode {stat.S_IMODE(mode):04o}; a secret must be 0600 or stricter"
    return None


def load_key(path: Path) -> Ed25519PrivateKey:
    """Load the gateway key; raise KeyFileError when missing, too open or of the wrong type."""
    try:
        problem = check_mode(path)
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read key {path}: {exc.strerror}") from exc
    if problem:
        raise KeyFileError(problem)
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} is not an Ed25519 key")
    return key


def describe(key: Ed25519PrivateKey) -> dict[str, str]:
    """Return the public facts of a key (``edge keys show``): kid and raw public key in hex."""
    public = key.public_key()
    return {"kid": kid_of(public), "public_key_hex": raw_public_key(public).hex(),
            "alg": "Ed25519"}
