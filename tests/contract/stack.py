"""The demo stack on free loopback ports, for the contract tests and the example capture.

The repository's devices.yaml (one device of each kind) with every port moved to a free one, a
private PKI, a real mosquitto with TLS, required client certificates and the demo's
per-gateway ACL, the simulators, the
agent as its own process (``edge run``) and the reference receiver. Nothing is faked: what the
contract tests see is what a platform would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from edge.config_file import LoadedConfig
from edge.config_loader import load_config
from edge.security.keys import describe, init_key, load_key
from edge.security.signing import Ed25519PrivateKey, kid_of, public_key_from_raw
from hil.broker import Mosquitto, free_port, gateway_acl
from hil.commander import ALL_ROLES, platform_key, register
from hil.pki import Pki, ensure_pki
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from hil.sims.runner import SimSet

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-320508-0007"
PREFIX = "edge/v1"


@dataclass
class Stack:
    """A running demo stack; ``info()`` is what a platform is given (no Python needed)."""

    folder: Path
    loaded: LoadedConfig
    pki: Pki
    broker: Mosquitto
    sims: SimSet
    store: ReceiverStore
    platform_key: Ed25519PrivateKey
    platform_kid: str
    gateway_public_hex: str
    agent: subprocess.Popen[bytes] | None = None

    def start_agent(self) -> None:
        """Start ``edge run`` on the stack's config (its own process, log in the folder)."""
        with self.log_path.open("ab") as log:
            self.agent = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "--config", str(self.loaded.path),
                 "--boot-delay-s", "0"], stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, cwd=self.folder)

    @property
    def log_path(self) -> Path:
        """The agent's log (stdout and stderr)."""
        return self.folder / "agent.log"

    def tls(self, name: str = "receiver") -> ssl.SSLContext:
        """A client context with ``name``'s certificate, trusting only the stack's CA."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cafile=str(self.pki.cert("ca")))
        ctx.load_cert_chain(str(self.pki.cert(name)), str(self.pki.key(name)))
        return ctx

    def gateway_kid(self) -> str:
        """The gateway key's ``kid``."""
        return kid_of(public_key_from_raw(bytes.fromhex(self.gateway_public_hex)))

    def info(self) -> dict[str, Any]:
        """Connection facts and keys for a consumer in another language."""
        return {
            "host": "127.0.0.1", "port": self.broker.port, "prefix": PREFIX, "gateway": GATEWAY,
            "ca": str(self.pki.cert("ca")), "cert": str(self.pki.cert("receiver")),
            "key": str(self.pki.key("receiver")),
            "gateway_public_key_hex": self.gateway_public_hex,
            "platform_kid": self.platform_kid,
            # the platform's signing key as the demo keeps it: PKCS#8 PEM, mode 0600
            "platform_key_file": str(self.folder / "platform.key"),
            "devices": {d.name: d.kind for d in self.loaded.config.devices},
        }


def _config(folder: Path, pki: Pki, broker_port: int) -> LoadedConfig:
    yaml = YAML()
    doc: Any = yaml.load((ROOT / "devices.yaml").read_text(encoding="utf-8"))
    doc["gateway"].update({"key_file": "keys/gateway.key", "state_dir": "state",
                           "platform_keys_file": "platform-keys.json"})
    doc["uplink"].update({"port": broker_port, "keepalive_s": 5, "state_heartbeat_s": 2,
                          "reconnect_base_s": 0.2,
                          "reconnect_cap_s": 1.0, "tls": {
                              "ca_file": str(pki.cert("ca")),
                              "cert_file": str(pki.cert("gateway")),
                              "key_file": str(pki.key("gateway"))}})
    for bus in doc["buses"]:
        bus["port"] = free_port()
    for device in doc["devices"]:
        if str(device.get("port", "")).startswith("socket://"):
            device["port"] = f"socket://127.0.0.1:{free_port()}"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "devices.yaml"
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)
    init_key(folder / "keys" / "gateway.key")
    return load_config(path)


@contextlib.asynccontextmanager
async def demo_stack(folder: Path, *, start_agent: bool = True) -> AsyncIterator[Stack]:
    """Start broker, simulators, receiver and agent; stop them all on exit."""
    # as the demo: the gateway's certificate names it, the broker confines it to its own
    # topics (docs/scale.md's ACL); the platform's certificate is the receiver's
    pki = ensure_pki(folder / "pki", clients=("gateway", "receiver"), cns={"gateway": GATEWAY})
    broker = Mosquitto(folder / "mosquitto", free_port(), pki, acl=gateway_acl(PREFIX))
    loaded = _config(folder, pki, broker.port)
    pkey = platform_key(folder / "platform.key")
    kid = register(loaded.resolve("platform-keys.json"), pkey, ALL_ROLES)
    public_hex = describe(_gateway_key(loaded))["public_key_hex"]
    sims = SimSet.for_config(loaded.config)
    store = ReceiverStore(folder / "receiver.db")
    receiver = Receiver(store, load_gateway_keys({GATEWAY: public_hex}))
    broker.start()
    stack: Stack | None = None
    try:
        await sims.start()
        async with asyncio.TaskGroup() as tg:
            ready = asyncio.Event()
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(cafile=str(pki.cert("ca")))
            ctx.load_cert_chain(str(pki.cert("receiver")), str(pki.key("receiver")))
            rx = tg.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                         tls=ctx, prefix=PREFIX, ready=ready),
                                name="contract.receiver")
            async with asyncio.timeout(10):
                await ready.wait()
            stack = Stack(folder, loaded, pki, broker, sims, store, pkey, kid, public_hex)
            if start_agent:
                stack.start_agent()
            try:
                yield stack
            finally:
                rx.cancel()
    finally:
        agent = None if stack is None else stack.agent
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(timeout=5)
        await sims.stop()
        broker.stop()
        store.close()


def _gateway_key(loaded: LoadedConfig) -> Ed25519PrivateKey:
    return load_key(loaded.resolve(loaded.config.gateway.key_file))


def write_info(stack: Stack, path: Path) -> Path:
    """Write ``stack.info()`` as JSON for the Node consumer."""
    path.write_text(json.dumps(stack.info(), indent=1), encoding="utf-8")
    return path
