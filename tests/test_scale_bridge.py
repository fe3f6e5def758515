"""docs/scale.md's tested example: two mosquitto brokers bridged, per-gateway ACLs on the
gateway-facing one, and two platform receivers on a shared subscription — every event from
every gateway handled exactly once, and a gateway cannot publish under another's id."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import TimeQuality
from edge.config import UplinkConfig
from edge.config_loader import validate
from edge.model import Event, EventType
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.transports.mqtt import MqttLink
from edge.uplink.mqtt import MqttUplink
from hil.broker import Mosquitto, free_port
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from tests.figures import figure
from tests.helpers import wait_until

GATEWAYS = ("gw-320508-0001", "gw-320508-0002", "gw-320508-0003")
# docs/scale.md: each gateway authenticates as its id (its certificate's CN in production,
# use_identity_as_username) and may write only under its own prefix
ACL = ("pattern write edge/v1/%u/events\npattern write edge/v1/%u/state\n"
       "pattern read edge/v1/%u/cmd\n")


async def test_bridged_brokers_and_shared_subscription_handle_each_event_once(
        tmp_path: Path) -> None:
    platform = Mosquitto(tmp_path / "platform", free_port(), None)
    platform.start()
    edge_port = free_port()
    street = Mosquitto(tmp_path / "street", edge_port, None, acl=ACL, extra=(
        "connection platform", f"address 127.0.0.1:{platform.port}",
        "topic edge/v1/+/events out 1", "topic edge/v1/+/state out 1",
        "topic edge/v1/+/cmd in 1", "cleansession false", "try_private true"))
    street.start()
    keys = {gw: Ed25519PrivateKey.generate() for gw in GATEWAYS}
    registry = load_gateway_keys({gw: raw_public_key(k.public_key()).hex()
                                  for gw, k in keys.items()})
    stores = [ReceiverStore(tmp_path / f"receiver{i}.db") for i in range(2)]
    ready = [asyncio.Event(), asyncio.Event()]
    tasks = [asyncio.create_task(run_mqtt(Receiver(store, registry), host="127.0.0.1",
                                          port=platform.port, tls=None, ready=ready[i],
                                          client_id=f"receiver-{i}", share_group="platform"))
             for i, store in enumerate(stores)]
    outboxes: list[AsyncOutbox] = []
    produced: set[str] = set()
    try:
        for event in ready:
            await asyncio.wait_for(event.wait(), 10)
        for gw in GATEWAYS:
            outbox = AsyncOutbox(Outbox(tmp_path / f"{gw}.db"), commit_max_wait_s=0.01)
            await outbox.open()
            outboxes.append(outbox)
            cfg = validate(UplinkConfig, {
                "host": "127.0.0.1", "port": edge_port, "tls": False, "username": gw,
                "boot_delay_max_s": 0, "reconnect_base_s": 0.2, "reconnect_cap_s": 1.0})
            uplink = MqttUplink(cfg, gateway_id=gw, boot_id="b", signer=Signer(keys[gw]),
                                outbox=outbox, base_dir=tmp_path)
            tasks += [asyncio.create_task(outbox.run()),
                      asyncio.create_task(uplink.run(boot_delay_s=0))]
            events = [Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED,
                            device="dev", data={"n": n}) for n in range(300)]
            await outbox.put_many(events)
            produced |= {e.id for e in events}

        def ids(store: ReceiverStore) -> set[str]:
            return {r[0] for r in store.db.execute("SELECT id FROM events")}

        await wait_until(lambda: produced <= ids(stores[0]) | ids(stores[1]), 30,
                         "every event at one of the receivers")
        await asyncio.sleep(1.0)  # a second delivery, if any, would arrive now
        first, second = ids(stores[0]), ids(stores[1])
        # an impostor: gateway 1's credentials writing under gateway 2's id
        impostor = MqttLink(host="127.0.0.1", port=edge_port, client_id="impostor",
                            protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None,
                            username=GATEWAYS[0])
        await impostor.connect()
        code = await impostor.publish(f"edge/v1/{GATEWAYS[1]}/events", b"{}")
        await impostor.close()
        figure("SCALE", f"2 bridged brokers, 2 receivers sharing a subscription: "
                        f"{len(first)} + {len(second)} of {len(produced)} events, "
                        f"{len(first & second)} handled twice; impostor PUBACK {code:#x}")
        assert not first & second, "an event was handled by both receivers"
        assert first and second, "the shared subscription did not split the load"
        assert (first | second) >= produced
        assert code == 0x87  # not authorized: a gateway writes only under its own id
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for outbox in outboxes:
            await outbox.close()
        for store in stores:
            store.close()
        street.stop()
        platform.stop()
