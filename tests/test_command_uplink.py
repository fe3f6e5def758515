"""The command path on a real broker (issue 19 #1, #8): hostile envelopes on the command topic,
retained or flooded, never end the uplink session, and never silently lose a valid command."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.clock import TimeQuality
from edge.ids import uuid7
from edge.model import Alarm, Event, EventType
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.transports.mqtt import MqttLink
from edge.uplink.mqtt import MqttUplink
from hil.broker import Mosquitto
from hil.commander import sign_command
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from tests.figures import figure
from tests.test_commands import GW, Harness
from tests.uplink_rig import uplink_config

pytestmark = pytest.mark.reliability


@dataclass
class CmdRig:
    harness: Harness
    uplink: MqttUplink
    store: ReceiverStore
    port: int

    async def publish(self, payloads: list[bytes], *, retain: bool = False) -> None:
        """Publish as anyone who can reach the command topic (QoS 1, waits for PUBACKs)."""
        link = MqttLink(host="127.0.0.1", port=self.port, client_id=f"attacker-{uuid7().hex[:8]}",
                        protocol="5", keepalive_s=10, connect_timeout_s=5, tls=None,
                        max_inflight=1000)
        await link.connect()
        try:
            acks = [link.publish(self.uplink.cmd_topic, p, retain=retain) for p in payloads]
            async with asyncio.timeout(30):
                await asyncio.gather(*acks)
        finally:
            await link.close()

    def received(self, event_id: str) -> bool:
        return bool(self.store.db.execute("SELECT 1 FROM events WHERE id=?",
                                          (event_id,)).fetchall())


@contextlib.asynccontextmanager
async def cmd_rig(tmp_path: Path, broker: Mosquitto, *, before_connect: tuple[bytes, ...] = (),
                  ) -> AsyncIterator[CmdRig]:
    harness = Harness(tmp_path)
    await harness.start()
    assert harness.outbox is not None
    assert harness.processor is not None
    key = Ed25519PrivateKey.generate()
    uplink = MqttUplink(uplink_config(broker.port, keepalive_s=5), gateway_id=GW,
                        boot_id="boot", signer=Signer(key), outbox=harness.outbox,
                        base_dir=tmp_path, on_command=_discard(harness.processor.handle),
                        on_command_tick=harness.processor.tick)
    rstore = ReceiverStore(tmp_path / "receiver.db")
    receiver = Receiver(rstore, load_gateway_keys({GW: raw_public_key(key.public_key()).hex()}))
    ready = asyncio.Event()
    rig = CmdRig(harness, uplink, rstore, broker.port)
    if before_connect:
        await rig.publish(list(before_connect), retain=True)  # there when the gateway subscribes
    tasks = [asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                          tls=None, ready=ready, retry_s=0.2), name="receiver"),
             asyncio.create_task(uplink.run(boot_delay_s=0), name="uplink")]
    try:
        await asyncio.wait_for(ready.wait(), 10)
        yield rig
    finally:
        for task in reversed(tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await harness.stop()
        rstore.close()


def _discard(handle: Callable[[bytes], Awaitable[object]]) -> Callable[[bytes], Awaitable[None]]:
    async def run(raw: bytes) -> None:
        await handle(raw)
    return run


def _hostile(lighting: Ed25519PrivateKey) -> list[bytes]:
    signed_huge = json.loads(sign_command(lighting, gateway=GW, device="lamp-07",
                                          action="light.set", params={"on": True})[1])
    body = json.loads(signed_huge["body"])
    body["ctr"] = 2**64
    return [
        b"[" * 8000,  # json.loads: RecursionError
        b'{"kid":"\\ud800","alg":"Ed25519","sig":"AA","body":"x"}',  # UnicodeEncodeError
        Signer(lighting).envelope(json.dumps(body).encode()),  # OverflowError in SQLite
        b"\xff" * 100,
    ]


async def _wait(cond: Any, timeout_s: float, what: str, state: Callable[[], object] = str,
                ) -> float:
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout_s, f"{what} not within {timeout_s} s: {state()}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def test_hostile_retained_envelopes_do_not_end_the_session(tmp_path: Path,
                                                                  plain_broker: Mosquitto) -> None:
    hostile = [b"[" * 8000]
    async with cmd_rig(tmp_path, plain_broker, before_connect=tuple(hostile)) as r:
        await _wait(lambda: r.uplink.stats.connected, 10, "the first connection")
        processor = r.harness.processor
        assert processor is not None
        await _wait(lambda: processor.counts.get("rejected.malformed", 0) >= 1, 5,
                    "the retained envelope's rejection")
        # the others, live, one of them signed with a registered key
        await r.publish(_hostile(r.harness.lighting), retain=False)
        await _wait(lambda: sum(v for k, v in processor.counts.items()
                                if k.startswith("rejected.")) >= 1 + 4, 5, "the rejections")
        alarm = Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED, device="manhole-12",
                      alarm=Alarm("cover_open", "raised", "a:1", 1))
        assert r.harness.outbox is not None
        await r.harness.outbox.put(alarm)
        latency_s = await _wait(lambda: r.received(alarm.id), 5, "the alarm at the platform")
        await asyncio.sleep(1.0)  # time for a session that ended to show as a reconnect
        assert r.uplink.stats.connects == 1, r.uplink.stats.failures
        assert r.uplink.commands_failed == 0
        assert r.uplink.stats.connected
    figure("R13", f"retained b'[' * 8000 + 4 hostile envelopes on the command topic: "
           f"1 session (no reconnect), cover-open alarm at the platform in {latency_s:.2f} s")


async def _subscribed() -> None:
    # the session starts its command reader once the cmd subscription's SUBACK is in
    await _wait(lambda: any(t.get_name() == "uplink.commands" for t in asyncio.all_tasks()),
                10, "the cmd subscription")


async def test_a_flood_does_not_silently_lose_a_valid_command(tmp_path: Path,
                                                              plain_broker: Mosquitto) -> None:
    async with cmd_rig(tmp_path, plain_broker) as r:
        await _subscribed()
        forger = Ed25519PrivateKey.generate()
        flood = [sign_command(forger, gateway=GW, device="lamp-07", action="light.set",
                              params={"on": True})[1] if i % 2 else b"[" * 7000
                 for i in range(250)]
        cmd_id, valid = sign_command(r.harness.lighting, gateway=GW, device="lamp-07",
                                     action="light.set", params={"on": True, "dim_pct": 40})
        start = time.monotonic()
        await r.publish([*flood, valid])
        processor = r.harness.processor
        assert processor is not None

        def settled() -> bool:
            c = processor.counts
            return sum(v for k, v in c.items() if k.startswith(("rejected.", "dropped.",
                                                                "executed"))) >= 251

        # a bound on correctness, not speed: on a loaded 2-core CI box 20 s was not enough
        await _wait(settled, 90, "every envelope executed, rejected or counted as dropped",
                    lambda: (processor.counts, r.uplink.commands_dropped,
                             r.uplink.stats.connects, r.uplink.stats.failures))
        elapsed_s = time.monotonic() - start
        counts = dict(processor.counts)
        audit = r.harness.audit()
        mine = [a for a in audit if a["cmd_id"] == cmd_id]
        dropped = counts.get("dropped.inbound_full", 0)
        assert [a["status"] for a in mine] == ["executed"]
        assert r.uplink.commands_dropped == dropped
        assert len([a for a in audit if a["status"] == "rejected"]) <= 2 * 5
        assert r.uplink.stats.connects == 1
    figure("R13", f"flood of 250 unsigned/forged + 1 valid light.set on a real broker: valid "
           f"{mine[-1]['status']}, {dropped} dropped unread "
           f"(counted, reported), {len(audit)} audit lines, settled in {elapsed_s:.1f} s")


async def test_drops_beyond_the_inbound_queue_are_counted_and_reported(
        tmp_path: Path, plain_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.uplink.mqtt.COMMAND_INBOUND_MAX", 5)  # a flood far beyond it
    async with cmd_rig(tmp_path, plain_broker) as r:
        # connected is not subscribed: a flood published before the SUBACK reaches nobody
        await _subscribed()
        await r.publish([b"[" * 7000] * 600)
        processor = r.harness.processor
        assert processor is not None

        def settled() -> bool:
            c = processor.counts
            return c.get("rejected.malformed", 0) + c.get("dropped.inbound_full", 0) >= 600

        await _wait(settled, 90, "every envelope rejected or counted as dropped",
                    lambda: (processor.counts, r.uplink.commands_dropped,
                             r.uplink.stats.connects, r.uplink.stats.failures))
        dropped = processor.counts.get("dropped.inbound_full", 0)
        assert dropped > 0
        assert dropped == r.uplink.commands_dropped
        await asyncio.sleep(0.1)
        reported = [a for a in r.harness.audit() if a["status"] == "dropped"]
        assert reported  # in the audit trail and as a command_result event, not only a counter
        assert r.uplink.stats.connects == 1
    figure("R13", f"600 envelopes into an inbound queue of 5: {dropped} dropped unread, counted "
           f"and reported ({len(reported)} audit lines), the session kept")
