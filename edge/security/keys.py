"""Gateway key files: created 0600 at provisioning, never logged, mode checked at load."""

from __future__ import annotations

import base64
import binascii
import os
import stat
from pathlib import Path

from edge.errors import KeyFileError
from edge.security.signing import Ed25519PrivateKey, kid_of, raw_public_key

# PKCS#8 for Ed25519 (RFC 8410): this fixed DER prefix, then the 32-byte seed. Files stay
# what `openssl genpkey -algorithm ed25519` writes and reads.
PKCS8_ED25519_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
PEM_BEGIN, PEM_END = b"-----BEGIN PRIVATE KEY-----", b"-----END PRIVATE KEY-----"


def to_pem(key: Ed25519PrivateKey) -> bytes:
    """Return the key as an unencrypted PKCS#8 PEM (the file is protected by its mode)."""
    body = base64.encodebytes(PKCS8_ED25519_PREFIX + key.seed)
    return PEM_BEGIN + b"\n" + body + PEM_END + b"\n"


def from_pem(data: bytes) -> Ed25519PrivateKey:
    """Parse an Ed25519 PKCS#8 PEM; raise ValueError for anything else."""
    text = data.strip()
    if not text.startswith(PEM_BEGIN) or not text.endswith(PEM_END):
        raise ValueError("not a PEM private key")
    try:
        der = base64.b64decode(text[len(PEM_BEGIN):-len(PEM_END)], validate=False)
    except binascii.Error as exc:
        raise ValueError("bad base64") from exc
    if len(der) != len(PKCS8_ED25519_PREFIX) + 32 or not der.startswith(PKCS8_ED25519_PREFIX):
        raise TypeError("not an Ed25519 key")
    return Ed25519PrivateKey(der[len(PKCS8_ED25519_PREFIX):])


def init_key(path: Path, *, force: bool = False) -> Ed25519PrivateKey:
    """Create a new Ed25519 key at ``path`` with mode 0600; refuse to overwrite unless ``force``."""
    if path.exists() and not force:
        raise KeyFileError(f"{path} exists; refusing to replace a provisioned key (use --force)")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = to_pem(key)
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
        return from_pem(data)
    except TypeError as exc:
        raise KeyFileError(f"{path} is not an Ed25519 key") from exc
    except ValueError as exc:
        raise KeyFileError(f"{path} is not a PEM private key") from exc


def describe(key: Ed25519PrivateKey) -> dict[str, str]:
    """Return the public facts of a key (``edge keys show``): kid and raw public key in hex."""
    public = key.public_key()
    return {"kid": kid_of(public), "public_key_hex": raw_public_key(public).hex(),
            "alg": "Ed25519"}
