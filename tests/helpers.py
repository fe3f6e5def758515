"""Helpers shared by tests: waiting, an agent process, a receiver for a gateway's key."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typing_extensions import override

from edge.config_file import LoadedConfig
from edge.drivers._mqtt_device import DeviceBroker
from edge.security.keys import describe, load_key
from edge.transports.mqtt import MqttLink
from edge.transports.serial import SerialPort
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.store import ReceiverStore

ROOT = Path(__file__).resolve().parents[1]
GATEWAY = "gw-320508-0007"


async def wait_until(predicate: Callable[[], Any], timeout_s: float,
                     what: str = "condition") -> float:
    """Poll ``predicate`` until truthy; return the seconds it took; fail after ``timeout_s``."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout_s:
            raise AssertionError(f"{what} not met within {timeout_s} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


def wait_until_sync(predicate: Callable[[], Any], timeout_s: float, what: str = "condition"
                    ) -> None:
    """The same, for tests that are not coroutines."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"{what} not met within {timeout_s} s"
        time.sleep(0.1)


class ObservedBroker(DeviceBroker):
    """A DeviceBroker that says when a driver's link is subscribed (its SUBACKs are in)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subscribed = asyncio.Event()

    @override
    async def connect(self, device: str, subscriptions: list[str], *,
                      client_id: str | None = None) -> MqttLink:
        """Connect and subscribe as the real one does, then set ``subscribed``."""
        link = await super().connect(device, subscriptions, client_id=client_id)
        self.subscribed.set()
        return link


class ObservedPort(SerialPort):
    """A SerialPort that says when the driver has opened it (pyserial's open() flushes input,
    so bytes written before that are lost)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.opened = asyncio.Event()

    @override
    async def open(self, device: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Open as the real one does, then set ``opened``."""
        streams = await super().open(device)
        self.opened.set()
        return streams


async def wait_event(event: asyncio.Event, timeout_s: float, what: str) -> None:
    """Wait for ``event``; fail saying ``what`` was awaited after ``timeout_s``."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        raise AssertionError(f"{what} not met within {timeout_s} s") from None


def start_agent(config: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Run ``edge run`` as its own process (stderr to ``log`` or discarded)."""
    out = log.open("ab") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config",
                                 str(config)], cwd=ROOT, stdout=out, stderr=out)
    finally:
        if log is not None:
            out.close()  # type: ignore[union-attr]


def stop_agent(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it does not stop."""
    if agent.poll() is None:
        agent.terminate()
        try:
            agent.wait(20)
        except subprocess.TimeoutExpired:
            agent.kill()
            agent.wait(5)


def receiver_for(loaded: LoadedConfig, db: Path) -> tuple[ReceiverStore, Receiver]:
    """A reference receiver that knows the gateway key of ``loaded``."""
    key = describe(load_key(loaded.resolve(loaded.config.gateway.key_file)))
    store = ReceiverStore(db)
    return store, Receiver(store, load_gateway_keys({GATEWAY: key["public_key_hex"]}))
