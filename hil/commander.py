"""Sign and send downlink commands as the platform would (design/events.md §Commands)."""

from __future__ import annotations

import datetime as dt
import json
import ssl
import time
from pathlib import Path
from typing import Any, get_args

from edge.config import Role
from edge.ids import uuid7
from edge.security.keys import describe, init_key, load_key
from edge.security.signing import Ed25519PrivateKey, Signer
from edge.transports.mqtt import MqttLink

# every role the gateway knows (edge.config.Role), as the README promises for the demo's key:
# broadcast-emergency was missing, so the demo could not play an emergency message
ALL_ROLES: list[str] = list(get_args(Role))


def platform_key(path: Path) -> Ed25519PrivateKey:
    """Load the platform signing key, creating it (0600) the first time."""
    return load_key(path) if path.exists() else init_key(path)


def register(keys_file: Path, key: Ed25519PrivateKey, roles: list[str]) -> str:
    """Write the key into a gateway's ``platform_keys_file``; return its kid."""
    facts = describe(key)
    current: dict[str, Any] = {}
    if keys_file.exists():
        current = json.loads(keys_file.read_text(encoding="utf-8"))
    current[facts["kid"]] = {"public_key_hex": facts["public_key_hex"], "roles": roles}
    keys_file.parent.mkdir(parents=True, exist_ok=True)
    # 0644 whatever the umask: the agent refuses a keys file others can write (issue 19 #7)
    tmp = keys_file.with_name(keys_file.name + ".tmp")
    tmp.write_text(json.dumps(current, indent=1), encoding="utf-8")
    tmp.chmod(0o644)
    tmp.replace(keys_file)
    return facts["kid"]


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sign_command(key: Ed25519PrivateKey, *, gateway: str, device: str | None, action: str,
                 params: dict[str, Any] | None = None, ctr: int | None = None,
                 ttl_s: float = 300, iat: dt.datetime | None = None,
                 cmd_id: str | None = None, iss: str | None = None) -> tuple[str, bytes]:
    """Return (cmd_id, envelope bytes).

    ``ctr`` defaults to microseconds since the epoch, which grows without keeping state.
    ``iss`` names the platform instance: each (kid, iss) has its own counter (D59).
    """
    issued = iat or dt.datetime.now(dt.UTC)
    body = {"cmd_id": cmd_id or str(uuid7()), "aud": gateway, "device": device,
            "action": action, "params": params or {}, "iat": _stamp(issued),
            "exp": _stamp(issued + dt.timedelta(seconds=ttl_s)),
            "ctr": ctr if ctr is not None else time.time_ns() // 1000}
    if iss is not None:
        body["iss"] = iss
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    return str(body["cmd_id"]), Signer(key).envelope(raw)


async def send(envelope: bytes, *, host: str, port: int, tls: ssl.SSLContext | None,
               topic: str) -> None:
    """Publish one command at QoS 1 and wait for the broker's PUBACK."""
    link = MqttLink(host=host, port=port, client_id=f"platform-cmd-{uuid7().hex[:8]}",
                    protocol="5", keepalive_s=10, connect_timeout_s=5, tls=tls)
    try:
        await link.connect()
        code = await link.publish(topic, envelope)
        if code >= 0x80:
            raise RuntimeError(f"broker refused the command: reason {code:#04x}")
    finally:
        await link.close()
