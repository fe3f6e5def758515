"""Platform keys that may sign commands: loaded all or nothing, from a file only its owner writes.

A platform keys file is an allow-list of who may switch lamps and speak in the street. A file
that others can write could have been given an extra all-roles key, and a file half of which
parses would silently run with half an allow-list: both are refused as a whole, every command is
then rejected (``unknown_kid``) and ``edge check`` says why (issue 19, finding 7).
"""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

from edge.config import EdgeConfig, PlatformKey
from edge.errors import PlatformKeysError
from edge.security.signing import Ed25519PublicKey, SignatureError, kid_of, public_key_from_raw
from edge.shape_check import check
from edge.shapes import ShapeError

log = logging.getLogger(__name__)

PlatformKeys = dict[str, tuple[Ed25519PublicKey, frozenset[str]]]
MAX_KEYS_FILE_BYTES = 256 * 1024


def keys_file_path(config: EdgeConfig, base_dir: Path) -> Path | None:
    """Return the configured platform keys file (relative to the config), if any."""
    file = config.gateway.platform_keys_file
    if file is None:
        return None
    return Path(file) if Path(file).is_absolute() else base_dir / file


def _check_owner_and_mode(path: Path, st: os.stat_result) -> None:
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PlatformKeysError(f"{path} has mode {stat.S_IMODE(st.st_mode):04o}: others can "
                                "write the command allow-list; chmod go-w")
    if st.st_uid not in {os.geteuid(), 0}:
        raise PlatformKeysError(f"{path} is owned by uid {st.st_uid}, not by the agent "
                                f"(uid {os.geteuid()}) or root")
    if not stat.S_ISREG(st.st_mode):
        raise PlatformKeysError(f"{path} is not a regular file")


def _read_file(path: Path) -> dict[str, PlatformKey]:
    try:
        # O_NONBLOCK: a FIFO planted at the path must not block the agent's start-up (the
        # fstat below then refuses it as not a regular file)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise PlatformKeysError(f"cannot open {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)  # the file we read is the file we checked (no swap in between)
        _check_owner_and_mode(path, st)
        if st.st_size > MAX_KEYS_FILE_BYTES:
            raise PlatformKeysError(f"{path} is {st.st_size} bytes (> {MAX_KEYS_FILE_BYTES})")
        data = os.read(fd, MAX_KEYS_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PlatformKeysError(f"{path} is not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise PlatformKeysError(f"{path} must be a JSON object {{kid: {{...}}}}")
    out: dict[str, PlatformKey] = {}
    for kid, entry in raw.items():
        try:
            out[str(kid)] = check(PlatformKey, entry)
        except ShapeError as exc:
            raise PlatformKeysError(f"{path}: entry {kid!r} is invalid "
                                    f"({len(exc.errors)} errors)") from exc
    return out


def _build(entries: dict[str, PlatformKey], where: str) -> PlatformKeys:
    out: PlatformKeys = {}
    for kid, entry in entries.items():
        try:
            key = public_key_from_raw(bytes.fromhex(entry.public_key_hex))
        except (ValueError, SignatureError) as exc:
            raise PlatformKeysError(f"{where}: key {kid!r} is not an Ed25519 key") from exc
        if kid_of(key) != kid:
            raise PlatformKeysError(f"{where}: key {kid!r} does not match its kid "
                                    f"({kid_of(key)})")
        out[kid] = (key, frozenset(entry.roles))
    return out


def read_platform_keys(config: EdgeConfig, base_dir: Path) -> PlatformKeys:
    """Return kid → (key, roles); raise PlatformKeysError when any entry or the file is bad.

    A missing file is no error (no key from it: every command is refused, and logged).
    """
    entries = dict(config.gateway.platform_keys)
    path = keys_file_path(config, base_dir)
    keys = _build(entries, "devices.yaml platform_keys")
    if path is None:
        return keys
    try:
        from_file = _read_file(path)
    except FileNotFoundError:
        log.warning("no platform keys file %s: only keys in devices.yaml may sign", path)
        return keys
    return {**keys, **_build(from_file, str(path))}


def load_platform_keys(config: EdgeConfig, base_dir: Path) -> PlatformKeys:
    """Return the platform keys, or none at all (logged) when they cannot all be trusted."""
    try:
        return read_platform_keys(config, base_dir)
    except PlatformKeysError as exc:
        log.error("platform keys refused, every command will be rejected: %s", exc)  # noqa: TRY400
        return {}


def platform_keys_problem(config: EdgeConfig, base_dir: Path) -> str | None:
    """Return why the platform keys are refused (``edge check``), or None when they load."""
    try:
        read_platform_keys(config, base_dir)
    except PlatformKeysError as exc:
        return str(exc)
    return None
