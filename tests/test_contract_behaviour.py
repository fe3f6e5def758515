"""Issue 20 part A: the contract's open questions, decided in code (docs/decisions.md D55-D60).

Each test here was seen failing against the behaviour it replaces: batch ids that restart at 1,
a birth without a seq baseline, ``state`` every 10 s, rejections without the command's id, a
counter shared by every platform instance of a key, a switch limit that counted commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import TimeQuality
from edge.model import UUID7_PATTERN, Event, EventType, WireBatch
from edge.uplink import mqtt as mqtt_uplink
from edge.uplink._paho import MqttLink
from edge.uplink.batches import BatchSource
from edge.uplink.mqtt import MqttUplink
from edge.uplink.signing import Ed25519PrivateKey, Signer, kid_of, open_envelope
from hil.broker import Mosquitto
from tests.helpers import wait_until
from tests.uplink_rig import GW, uplink_config


def _reading(n: int) -> Event:
    return Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED, device="dev",
                 data={"n": n})


@contextlib.asynccontextmanager
async def _outbox(path: Path) -> AsyncIterator[AsyncOutbox]:
    outbox = AsyncOutbox(Outbox(path), commit_max_wait_s=0.001)
    await outbox.open()
    writer = asyncio.create_task(outbox.run(), name="outbox.writer")
    try:
        yield outbox
    finally:
        writer.cancel()
        await outbox.drain()
        await outbox.close()


# ---- #3: the batch id ---------------------------------------------------------------------


async def test_batch_ids_stay_unique_across_an_agent_restart(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    pub = {kid_of(key.public_key()): key.public_key()}
    ids: list[str] = []
    for _start in range(2):  # the same outbox, a new agent process's BatchSource
        async with _outbox(tmp_path / "outbox.db") as outbox:
            source = BatchSource(outbox, gateway_id=GW, signer=Signer(key),
                                 replay_events_per_s=1e6)
            for n in range(3):
                await outbox.put(_reading(n))
                batch = await asyncio.wait_for(source.next(1, 65536), 5)
                await outbox.ack(batch.seqs)
                _kid, body = open_envelope(batch.envelope, pub)
                wire = WireBatch.model_validate_json(body)
                assert wire.batch == batch.batch_id  # the MQTT 5 user property's value too
                ids.append(batch.batch_id)
    assert all(re.match(UUID7_PATTERN, i) for i in ids), ids
    assert len(set(ids)) == len(ids) == 6


async def test_a_receiver_still_accepts_an_old_agents_counter_batch() -> None:
    body = json.dumps({"v": 1, "gw": GW, "batch": 7, "sent_at": "2026-11-26T03:15:00.000Z",
                       "events": [_reading(1).to_wire(1)]}, separators=(",", ":"))
    assert WireBatch.model_validate_json(body).batch == 7
    with pytest.raises(ValueError, match="pattern"):
        WireBatch.model_validate_json(body.replace('"batch":7', '"batch":"not-a-uuid"'))


# ---- #4, #5: the state message ------------------------------------------------------------


@dataclass
class StateRig:
    uplink: MqttUplink
    outbox: AsyncOutbox
    states: list[dict[str, Any]] = field(default_factory=list)
    provided: dict[str, Any] = field(default_factory=lambda: {"active_alarms": []})


@contextlib.asynccontextmanager
async def _state_rig(tmp_path: Path, broker: Mosquitto, **cfg: Any) -> AsyncIterator[StateRig]:
    key = Ed25519PrivateKey.generate()
    pub = {kid_of(key.public_key()): key.public_key()}
    async with _outbox(tmp_path / "outbox.db") as outbox:
        rig: StateRig

        async def provider() -> dict[str, Any]:
            return dict(rig.provided)

        uplink = MqttUplink(uplink_config(broker.port, **cfg), gateway_id=GW, boot_id="boot",
                            signer=Signer(key), outbox=outbox, base_dir=tmp_path,
                            state_provider=provider)
        rig = StateRig(uplink, outbox)
        sub = MqttLink(host="127.0.0.1", port=broker.port, client_id="state-watch",
                       protocol="5", keepalive_s=10, connect_timeout_s=5, tls=None)
        await sub.connect()
        assert await sub.subscribe(uplink.state_topic)

        async def collect() -> None:
            while True:
                item = await sub.inbound.get()
                _kid, body = open_envelope(item.payload, pub)  # signed (D39)
                rig.states.append(json.loads(body))

        tasks = [asyncio.create_task(collect(), name="state-watch"),
                 asyncio.create_task(uplink.run(boot_delay_s=0), name="uplink")]
        try:
            yield rig
        finally:
            for task in reversed(tasks):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await sub.close()


async def test_the_birth_carries_the_seq_baseline(tmp_path: Path,
                                                  plain_broker: Mosquitto) -> None:
    async with _outbox(tmp_path / "outbox.db") as outbox:  # a backlog from before the link
        await outbox.put_many([_reading(n) for n in range(10)])
        leased = await outbox.lease(4, 1 << 20)
        await outbox.ack([item.seq for item in leased])  # seqs 1-4 went to the platform
    async with _state_rig(tmp_path, plain_broker) as rig:
        await wait_until(lambda: rig.states, 10, "a birth")
        birth = rig.states[0]
        assert birth["online"] is True
        assert (birth["seq_low"], birth["seq_high"]) == (5, 10)
        # a late platform: seqs 1-4 came before it joined, 5-10 will still come
        await wait_until(lambda: rig.uplink.stats.events_acked == 6, 10, "the backlog sent")


async def test_an_empty_outbox_says_nothing_is_held(tmp_path: Path,
                                                    plain_broker: Mosquitto) -> None:
    async with _state_rig(tmp_path, plain_broker) as rig:
        await wait_until(lambda: rig.states, 10, "a birth")
        assert (rig.states[0]["seq_low"], rig.states[0]["seq_high"]) == (1, 0)


async def test_state_goes_on_change_and_on_the_heartbeat_only(
        tmp_path: Path, plain_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_uplink, "STATE_CHECK_S", 0.2)
    async with _state_rig(tmp_path, plain_broker, state_heartbeat_s=3600) as rig:
        await wait_until(lambda: rig.states, 10, "a birth")
        await asyncio.sleep(11)  # it used to go every 10 s
        assert len(rig.states) == 1, rig.states
        alarm = {"device": "manhole-12", "kind": "cover_open", "alarm_id": "a:1", "state":
                 "raised"}
        rig.provided = {"active_alarms": [alarm]}
        started = time.monotonic()
        await wait_until(lambda: len(rig.states) == 2, 5, "a state on the change")
        assert time.monotonic() - started < 2.0
        assert rig.states[1]["active_alarms"] == [alarm]
        assert "seq_low" in rig.states[1]
        await asyncio.sleep(1.0)
        assert len(rig.states) == 2  # no change, no heartbeat due: nothing more


async def test_the_heartbeat_refreshes_the_outbox_depth(
        tmp_path: Path, plain_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mqtt_uplink, "STATE_CHECK_S", 0.2)
    async with _state_rig(tmp_path, plain_broker, state_heartbeat_s=1.5) as rig:
        await wait_until(lambda: rig.states, 10, "a birth")
        await rig.outbox.put(_reading(1))
        await wait_until(lambda: rig.uplink.stats.events_acked == 1, 10, "the event sent")
        await wait_until(lambda: len(rig.states) >= 3, 6, "two heartbeats")
        assert rig.states[-1]["seq_high"] == 1
        assert rig.states[-1]["seq_low"] == 2  # nothing held any more
