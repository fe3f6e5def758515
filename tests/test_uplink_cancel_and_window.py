"""Flap-time regressions found by R5 (50 flaps): nothing leased is orphaned by a cancel, and the
state message beside a full window does not make paho refuse a publish."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from edge.buffer.async_outbox import AsyncOutbox
from edge.errors import LinkUnavailableError
from edge.security.signing import Ed25519PrivateKey, Signer
from edge.transports.mqtt import BESIDE_WINDOW, MqttLink
from edge.uplink.batches import BatchSource
from hil.broker import Mosquitto
from hil.proxy import FaultProxy
from tests.helpers import wait_until
from tests.outbox_util import ev, open_store


async def test_a_batch_cancelled_mid_lease_goes_back_to_the_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The session ends (link lost) while the pump waits for a lease on the outbox thread: the
    thread finishes the lease anyway, so the events must be released, not leased forever (R5
    ended with two events never sent in a live session)."""
    store = open_store(tmp_path / "outbox.db")
    outbox = AsyncOutbox(store, commit_max_wait_s=0.001)
    writer = asyncio.create_task(outbox.run())
    try:
        await outbox.put_many([ev(0, n=1)])  # an alarm: the first lease takes it
        leasing, go_on = threading.Event(), threading.Event()
        real_lease = store.lease

        def slow_lease(*args: Any) -> Any:
            leasing.set()
            go_on.wait(5)  # the lease is on the outbox thread when the cancel comes
            return real_lease(*args)

        monkeypatch.setattr(store, "lease", slow_lease)
        source = BatchSource(outbox, gateway_id="gw", signer=Signer(Ed25519PrivateKey.generate()),
                             replay_events_per_s=1000)
        pump = asyncio.create_task(source.next(10, 100_000))
        await wait_until(leasing.is_set, 5)
        pump.cancel()
        await asyncio.sleep(0.05)
        go_on.set()
        with pytest.raises(asyncio.CancelledError):
            await pump
        monkeypatch.undo()
        again = await asyncio.wait_for(source.next(10, 100_000), 5)
        assert len(again.seqs) == 1
    finally:
        writer.cancel()
        await outbox.close()


async def test_state_beside_a_full_window_is_accepted(plain_broker: Mosquitto) -> None:
    """A window of max_inflight unacked batches plus the state message must not hit paho's
    queue limit (R5: "publish refused by the client: Message queue full" dropped a good link
    17 times); the limit still bounds paho's memory."""
    proxy = FaultProxy(plain_broker.port)
    await proxy.start()
    link = MqttLink(host="127.0.0.1", port=proxy.port, client_id="window", protocol="5",
                    keepalive_s=30, connect_timeout_s=3, tls=None, max_inflight=3)
    try:
        await link.connect()
        proxy.set_mode("blackhole")  # no PUBACK comes back: the window stays full
        for n in range(3):
            link.publish("edge/v1/gw/events", f"batch {n}".encode())
        link.publish("edge/v1/gw/state", b"{}", retain=True)
        for n in range(BESIDE_WINDOW - 1):
            link.publish("edge/v1/gw/state", f"more {n}".encode())
        with pytest.raises(LinkUnavailableError, match="queue"):
            link.publish("edge/v1/gw/events", b"one too many")
    finally:
        await link.close()
        await proxy.stop()
