"""Ed25519 detached-signature envelopes (design/events.md §Batch and signature).

The only module that imports a signing library: PyNaCl (libsodium), which costs a third of the
memory ``cryptography`` does (docs/decisions.md D27). Pure: bytes in, bytes out; key files are
read and written by ``edge.security.keys``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

__all__ = ["Ed25519PrivateKey", "Ed25519PublicKey", "SignatureError", "Signer", "kid_of",
           "open_envelope", "public_key_from_raw", "raw_public_key"]


class SignatureError(ValueError):
    """An envelope is malformed or its signature does not verify.

    ``reason`` is the stable reason code (``malformed``, ``unknown_kid``, ``bad_signature``):
    callers branch on it, never on the message text.
    """

    def __init__(self, message: str, reason: str = "bad_signature") -> None:
        super().__init__(message)
        self.reason = reason


class Ed25519PublicKey:
    """A public key: verifies detached signatures."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise ValueError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        self.raw = bytes(raw)
        self._key = VerifyKey(self.raw)

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise SignatureError unless ``signature`` signs ``data``."""
        try:
            self._key.verify(data, signature)
        except (BadSignatureError, ValueError, TypeError) as exc:
            raise SignatureError("bad signature") from exc


class Ed25519PrivateKey:
    """A private key (its 32-byte seed): signs, and gives its public key."""

    def __init__(self, seed: bytes) -> None:
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
        self.seed = bytes(seed)
        self._key = SigningKey(self.seed)

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        """Return a new random key (libsodium's CSPRNG)."""
        return cls(bytes(SigningKey.generate()))

    def public_key(self) -> Ed25519PublicKey:
        """Return the matching public key."""
        return Ed25519PublicKey(bytes(self._key.verify_key))

    def sign(self, data: bytes) -> bytes:
        """Return the 64-byte detached signature of ``data``."""
        return bytes(self._key.sign(data).signature)

    def __repr__(self) -> str:
        return "Ed25519PrivateKey(<secret>)"  # never the seed, not even in a traceback


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    """Return the 32 raw bytes of a public key."""
    return key.raw


def public_key_from_raw(raw: bytes) -> Ed25519PublicKey:
    """Load a public key from its 32 raw bytes; raise SignatureError if malformed."""
    try:
        return Ed25519PublicKey(raw)
    except ValueError as exc:
        raise SignatureError(f"bad public key: {exc}") from exc


def kid_of(key: Ed25519PublicKey) -> str:
    """Return the key id: the first 16 hex chars of SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Signer:
    """Signs bodies with one private key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.kid = kid_of(key.public_key())

    def envelope(self, body: bytes) -> bytes:
        """Return the compact JSON envelope ``{kid, alg, sig, body}`` for ``body``."""
        sig = _b64url(self._key.sign(body))
        # body travels as a JSON string: the receiver verifies its exact UTF-8 bytes.
        return json.dumps({"kid": self.kid, "alg": "Ed25519", "sig": sig,
                           "body": body.decode("utf-8")},
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def open_envelope(raw: bytes, keys: dict[str, Ed25519PublicKey]) -> tuple[str, bytes]:
    """Verify an envelope against ``keys`` (kid → key); return ``(kid, body bytes)``.

    Raises SignatureError when it is malformed, the kid is unknown or the signature is bad.
    """
    try:
        env = json.loads(raw)
    except ValueError as exc:
        raise SignatureError(f"malformed envelope: {exc}", "malformed") from exc
    return verify_envelope(env, keys)


def verify_envelope(env: Any, keys: dict[str, Ed25519PublicKey]) -> tuple[str, bytes]:
    """Verify an envelope already parsed from JSON; as ``open_envelope`` otherwise.

    For a caller that parsed it anyway (the receiver checks it against the published schema
    first): a batch envelope carries the whole body as a string, parsing it twice costs.
    """
    try:
        kid, alg, sig, body = env["kid"], env["alg"], env["sig"], env["body"]
    except (KeyError, TypeError) as exc:
        raise SignatureError(f"malformed envelope: {exc}", "malformed") from exc
    if not isinstance(kid, str) or not isinstance(sig, str) or not isinstance(body, str):
        raise SignatureError("malformed envelope: kid, sig and body must be strings",
                             "malformed")
    if alg != "Ed25519":
        raise SignatureError(f"unsupported alg {alg!r}")
    key = keys.get(kid)
    if key is None:
        raise SignatureError(f"unknown kid {kid}", "unknown_kid")
    body_bytes = body.encode("utf-8")
    try:
        signature = _unb64url(sig)
    except ValueError as exc:
        raise SignatureError("bad signature") from exc
    key.verify(signature, body_bytes)
    return kid, body_bytes
