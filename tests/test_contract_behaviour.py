"""Issue 20 part A: the contract's open questions, decided in code (docs/decisions.md D57-D60).

Each test here was seen failing against the behaviour it replaces: batch ids that restart at 1,
a birth without a seq baseline, ``state`` every 10 s, rejections without the command's id, a
counter shared by every platform instance of a key, a switch limit that counted commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import jsonschema
import pytest

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.store import Outbox
from edge.clock import TimeQuality
from edge.commands.processor import (
    ACTION_ROLES,
    MAX_FIELD_ERRORS,
    MAX_ISSUERS_PER_KID,
    PARAMS,
    REASONS,
    STATUSES,
    Outcome,
    action_catalogue,
    parse_command_time,
    reason_catalogue,
    role_catalogue,
)
from edge.commands.safety import SafetyRules
from edge.config import ROLES, ModbusTcpBus
from edge.config_loader import validate
from edge.drivers import streetlight as streetlight_mod
from edge.drivers._codecs import sdm120
from edge.drivers.streetlight import LightSet, StreetlightDriver
from edge.errors import DeviceUnavailableError
from edge.ids import uuid7
from edge.kinds.streetlight import LightStep, StreetlightDevice
from edge.model import UUID7_PATTERN, Event, EventType
from edge.security.signing import Ed25519PrivateKey, Signer, kid_of, open_envelope
from edge.shape_check import check
from edge.shapes import ShapeError
from edge.transports.modbus import ModbusBus
from edge.transports.mqtt import MqttLink
from edge.uplink import mqtt as mqtt_uplink
from edge.uplink.batches import BatchSource
from edge.uplink.mqtt import MqttUplink
from edge.wire import WireBatch
from hil.broker import Mosquitto, free_port, gateway_acl
from hil.demo import client_tls
from hil.pki import common_name, ensure_pki
from hil.sims.modbus_sim import ModbusTcpSim, lamp_unit
from tests.cfg import lamp_device, write_config
from tests.helpers import wait_until
from tests.outbox_sql import sql_rows, store_of
from tests.recording_sink import RecordingSink
from tests.test_commands import GW as CMD_GW
from tests.test_commands import ROOT, Harness
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


async def test_the_mqtt5_batch_id_property_is_the_bodys_batch(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    # mosquitto_sub prints MQTT 5 user properties (%P): a platform's view, not our client's
    sub = subprocess.Popen(  # a short-lived peer, reaped below; line-buffered into the pipe
        ["stdbuf", "-oL", "mosquitto_sub", "-h", "127.0.0.1", "-p", str(plain_broker.port),
         "-V", "mqttv5", "-t", f"edge/v1/{GW}/events", "-C", "2", "-F", "%P|%p", "-W", "20",
         "-d"], stdout=subprocess.PIPE)
    try:
        # subscribed before the first batch goes: -d prints the SUBACK (no fixed sleep,
        # review finding 14)
        assert sub.stdout is not None
        debug = await asyncio.to_thread(_read_until, sub.stdout, b"SUBACK")
        assert b"SUBACK" in debug, debug
        async with _state_rig(tmp_path, plain_broker) as rig:
            await rig.outbox.put(_reading(1))
            await wait_until(lambda: rig.uplink.stats.events_acked == 1, 10, "one batch")
            await rig.outbox.put(_reading(2))
            await wait_until(lambda: rig.uplink.stats.events_acked == 2, 10, "two batches")
            # the same buffered reader (communicate() would skip what it holds); EOF at -C 2
            out = await asyncio.to_thread(sub.stdout.read)
            await asyncio.to_thread(sub.wait, 20)
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait(5)
    ids = []
    for line in out.decode().splitlines():
        if not line.startswith("batch_id:"):
            continue  # -d's debug lines
        prop, _, envelope = line.partition("|")
        body = json.loads(json.loads(envelope)["body"])
        assert prop == f"batch_id:{body['batch']}"
        ids.append(body["batch"])
    assert len(set(ids)) == 2, out.decode()[-3000:]


def _read_until(stream: IO[bytes], marker: bytes) -> bytes:
    """Read lines from ``stream`` until one holds ``marker`` (or it ends: the peer's -W)."""
    seen = b""
    for line in iter(stream.readline, b""):
        seen += line
        if marker in line:
            break
    return seen


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
        # ten state checks with nothing changed and the heartbeat an hour away: still only
        # the birth (it used to go every 10 s; the check period is shortened, not waited out)
        await asyncio.sleep(10 * mqtt_uplink.STATE_CHECK_S)
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


# ---- #7, #8, #9: command results, time formats, action catalogue, counters ----------------


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    harness = Harness(tmp_path)
    await harness.start()
    yield harness
    await harness.stop()


def _stamp(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _body(**over: Any) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    body: dict[str, Any] = {
        "cmd_id": str(uuid7()), "aud": CMD_GW, "device": "lamp-07", "action": "light.set",
        "params": {"on": True}, "iat": _stamp(now), "exp": _stamp(now + dt.timedelta(minutes=5)),
        "ctr": time.time_ns() // 1000}
    body.update(over)
    return body


async def _send_body(h: Harness, key: Ed25519PrivateKey, body: dict[str, Any]) -> Outcome:
    raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert h.processor is not None
    return await h.processor.handle(Signer(key).envelope(raw))


def _results(h: Harness) -> list[dict[str, Any]]:
    assert h.outbox is not None
    return [json.loads(r[0])["data"] for r in sql_rows(store_of(h.outbox),
        "SELECT payload FROM events WHERE CAST(payload AS TEXT) LIKE '%command_result%' "
        "ORDER BY seq")]


async def test_unauthenticated_rejections_echo_the_cmd_id_unverified(h: Harness) -> None:
    body = _body()
    raw = json.dumps(body, separators=(",", ":")).encode()
    forged = json.loads(Signer(h.lighting).envelope(raw))
    forged["body"] = forged["body"].replace('"on":true', '"on":false')
    assert h.processor is not None
    bad_sig = await h.processor.handle(json.dumps(forged).encode())
    unknown = await _send_body(h, h.unknown, _body(cmd_id=body["cmd_id"]))
    bad_body = await _send_body(h, h.lighting, _body(cmd_id=body["cmd_id"], extra=1))
    for out, reason in ((bad_sig, "bad_signature"), (unknown, "unknown_kid"),
                        (bad_body, "bad_body")):
        assert (out.status, out.reason) == ("rejected", reason)
        assert out.cmd_id is None  # never presented as verified
        assert out.cmd_id_unverified == body["cmd_id"]
    results = _results(h)
    assert [r["cmd_id_unverified"] for r in results] == [body["cmd_id"]] * 3
    assert all(r["cmd_id"] is None for r in results)
    assert h.audit()[-1]["cmd_id_unverified"] == body["cmd_id"]
    # only a UUIDv7 is echoed: nothing else of an unauthenticated body is repeated
    junk = await _send_body(h, h.unknown, _body(cmd_id="<script>" * 10))
    assert junk.cmd_id_unverified is None
    assert "cmd_id_unverified" not in _results(h)[-1]


async def test_bad_body_names_its_field_errors_bounded(h: Harness) -> None:
    out = await _send_body(h, h.lighting, _body(exp=1795662900, colour="red"))
    assert out.reason == "bad_body"
    detail = out.detail["detail"]
    assert "exp: " in detail and "colour: " in detail, detail
    many = await _send_body(h, h.lighting, _body(**{f"x{i}": i for i in range(40)}))
    detail = many.detail["detail"]
    assert detail.endswith(f"+{40 - MAX_FIELD_ERRORS} more"), detail
    assert detail.count("; ") == MAX_FIELD_ERRORS
    assert len(detail) < MAX_FIELD_ERRORS * 200


async def test_every_reason_and_status_is_in_the_catalogue(h: Harness) -> None:
    source = "".join(path.read_text(encoding="utf-8")
                     for path in [*sorted((ROOT / "edge" / "commands").glob("*.py")),
                                  ROOT / "edge" / "security" / "signing.py"])
    used: set[str] = set()
    for pattern in (r'_reject\(\s*"([a-z_]+)"', r'Outcome\(\s*"[a-z]+",\s*"([a-z_]+)"',
                    r'(?:reason|problem) = "([a-z_]+)"', r'else "([a-z_]+)"',
                    r'return "([a-z_]+)"', r'reason: str = "([a-z_]+)"',
                    r'SignatureError\([^()]*(?:\([^()]*\)[^()]*)*,\s*"([a-z_]+)"\)'):
        used |= set(re.findall(pattern, source))
    assert len(used) >= len(REASONS) - 1  # the scan finds them (all but the summary's)
    assert used <= set(REASONS), used - set(REASONS)
    assert {status for status, _a, _t in REASONS.values()} <= set(STATUSES)
    catalogue = reason_catalogue()
    assert catalogue["bad_signature"] == {"status": "rejected", "authenticated": False,
                                          "rate_limited": True,
                                          "description": REASONS["bad_signature"][2]}
    # authenticated, yet anyone can replay a capture: rate-limited (D78); a refusal is not
    assert catalogue["duplicate"]["rate_limited"]
    assert not catalogue["bad_params"]["rate_limited"]
    # what the processor reports in practice is in it too
    outs = [await _send_body(h, h.lighting, _body(exp=1)),
            await _send_body(h, h.lighting, _body(aud="gw-other")),
            await _send_body(h, h.lighting, _body(action="light.dance"))]
    for out in outs:
        assert out.status in STATUSES and out.reason in REASONS


async def test_a_device_failure_has_a_stable_reason(h: Harness) -> None:
    assert h.processor is not None

    async def broken(_d: str, _a: str, _p: Any, _c: str | None = None) -> dict[str, Any]:
        raise DeviceUnavailableError("lamp-07", "no answer from unit 7")

    h.processor._execute = broken  # the driver fails as a real one
    out = await _send_body(h, h.lighting, _body())
    assert (out.status, out.reason) == ("failed", "device_error")
    assert "no answer" in out.detail["detail"]


@pytest.mark.parametrize("stamp", [
    "{d}T{t}Z", "{d}T{t}.5Z", "{d}T{t}.123Z", "{d}T{t}.123456789Z", "{d}T{t}+00:00",
    "{d}T{t}.250-00:00"])
async def test_accepted_command_time_formats(h: Harness, stamp: str) -> None:
    now = dt.datetime.now(dt.UTC)
    exp = now + dt.timedelta(minutes=5)
    body = _body(iat=stamp.format(d=f"{now:%Y-%m-%d}", t=f"{now:%H:%M:%S}"),
                 exp=stamp.format(d=f"{exp:%Y-%m-%d}", t=f"{exp:%H:%M:%S}"))
    out = await _send_body(h, h.lighting, body)
    assert out.status == "executed", out


async def test_an_offset_is_applied_not_ignored(h: Harness) -> None:
    now = dt.datetime.now(dt.UTC)
    cst = dt.timezone(dt.timedelta(hours=8))
    fresh = _body(iat=f"{now.astimezone(cst):%Y-%m-%dT%H:%M:%S}+08:00",
                  exp=f"{(now + dt.timedelta(minutes=5)).astimezone(cst):%Y-%m-%dT%H:%M:%S}+08:00")
    assert (await _send_body(h, h.lighting, fresh)).status == "executed"
    # the wall time of a minute from now, but in UTC-8: 8 h ago, expired
    stale = _body(exp=f"{now + dt.timedelta(minutes=1):%Y-%m-%dT%H:%M:%S}+08:00",
                  iat=f"{now - dt.timedelta(minutes=1):%Y-%m-%dT%H:%M:%S}+08:00")
    assert (await _send_body(h, h.lighting, stale)).reason == "expired"


@pytest.mark.parametrize("bad", [
    1795662900, 1795662900.5, "1795662900", "2026-11-26 03:15:00Z", "2026-11-26T03:15:00z",
    "2026-11-26t03:15:00Z", "2026-11-26T03:15:00", "2026-11-26T03:15Z", "2026-11-26",
    "2026-11-26T03:15:00.1234567890Z", "2026-11-26T03:15:00+0800", "20261126T031500Z",
    "2026-11-26T03:15:60Z", "2026-02-30T03:15:00Z", "2026-11-26T03:15:00+24:00", "",
    "2026-11-26T03:15:00.Z", "\uff12026-11-26T03:15:00Z"])
async def test_refused_command_time_formats(h: Harness, bad: Any) -> None:
    out = await _send_body(h, h.lighting, _body(iat=bad))
    assert (out.status, out.reason) == ("rejected", "bad_body"), out
    assert "iat" in out.detail.get("detail", ""), out
    assert not h.executed


def test_parse_command_time_is_exact_and_strict() -> None:
    assert parse_command_time("1970-01-01T00:00:00.000000001Z") == 1
    assert parse_command_time("2026-11-26T11:15:00.5+08:00") == \
        parse_command_time("2026-11-26T03:15:00.500Z")
    for bad in ("2026-02-30T03:15:00Z", "2026-11-26T03:15:00", "x"):
        with pytest.raises(ValueError):
            parse_command_time(bad)


def test_the_action_catalogue_describes_what_the_gateway_checks() -> None:
    catalogue = action_catalogue()
    assert set(catalogue) == set(PARAMS)
    assert catalogue["light.set"]["role"] == "lighting"
    assert catalogue["device.read"]["role"] == "read"
    assert catalogue["speaker.play_tts"]["kinds"] == ["loudspeaker"]
    samples = {"light.set": ({"on": True, "dim_pct": 60}, {"on": True, "dim_pct": 101}),
               "speaker.play_tts": ({"text": "hi"}, {"text": "hi", "volume": 17}),
               "speaker.play_clip": ({"clip": "a", "sha256": "0" * 64},
                                     {"clip": "a", "sha256": "0" * 63}),
               "light.schedule": ({"steps": [{"at": "18:00", "on": True}]}, {"steps": []}),
               "speaker.stop": ({}, {"x": 1}), "device.read": ({}, {"on": True}),
               "agent.state": ({}, {"x": 1})}
    assert set(samples) == set(PARAMS)
    for action, (good, bad) in samples.items():
        schema = catalogue[action]["params"]
        jsonschema.validate(good, schema)
        check(PARAMS[action], good)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
        with pytest.raises(ShapeError):
            check(PARAMS[action], bad)


async def test_two_platform_instances_sharing_a_key_do_not_lock_each_other_out(
        h: Harness) -> None:
    # instance a counts microseconds, instance b a small sequence: interleaved, both run
    a_ctr, b_ctr = time.time_ns() // 1000, 10
    outs = []
    for i in range(4):
        outs.append(await h.send(h.lighting, "device.read", {}, ctr=a_ctr + i, iss="a"))
        outs.append(await h.send(h.lighting, "device.read", {}, ctr=b_ctr + i, iss="b"))
    assert [o.status for o in outs] == ["executed"] * 8, [(o.reason, o.detail) for o in outs]
    # each instance's own counter still refuses its own replays
    assert (await h.send(h.lighting, "device.read", {}, ctr=b_ctr + 1, iss="b")).reason == \
        "counter_rollback"
    assert (await h.send(h.lighting, "device.read", {}, ctr=a_ctr, iss="a")).reason == \
        "counter_rollback"
    # a replayed capture moved to another instance's name is a different, signed body: it
    # needs the key; without iss the kid's own counter applies as before
    assert (await h.send(h.lighting, "device.read", {}, ctr=5)).status == "executed"
    assert (await h.send(h.lighting, "device.read", {}, ctr=4)).reason == "counter_rollback"
    await h.stop()
    await h.start()  # a restart keeps every (kid, iss) counter (the replay file)
    assert (await h.send(h.lighting, "device.read", {}, ctr=b_ctr + 3, iss="b")).reason == \
        "counter_rollback"
    assert (await h.send(h.lighting, "device.read", {}, ctr=b_ctr + 4, iss="b")).status == \
        "executed"


async def test_issuers_per_key_are_bounded(h: Harness) -> None:
    for i in range(MAX_ISSUERS_PER_KID):
        assert (await h.send(h.lighting, "device.read", {}, ctr=1, iss=f"i{i}")).status == \
            "executed"
    out = await h.send(h.lighting, "device.read", {}, ctr=1, iss="one-more")
    assert out.reason == "too_many_issuers"
    bad = await h.send(h.lighting, "device.read", {}, ctr=2, iss="a/b")
    assert bad.reason == "bad_body"


# ---- #10: the switch-rate limit counts what wears the relay ------------------------------


async def test_repeating_the_lamps_state_is_not_a_switch(h: Harness) -> None:
    outs = [await h.send(h.lighting, "light.set", {"on": True, "dim_pct": 50 + i})
            for i in range(8)]
    assert [o.status for o in outs] == ["executed"] * 8, [o.detail for o in outs]
    # real changes are still limited: off, on, off are 3 more (4 with the first on)
    changes = [await h.send(h.lighting, "light.set", {"on": i % 2 == 1}) for i in range(4)]
    assert [o.status for o in changes[:3]] == ["executed"] * 3
    assert changes[3].reason == "unsafe"
    assert "switched 4 times" in changes[3].detail["detail"]


async def test_scheduled_switches_count_and_repeats_do_not(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streetlight_mod, "SCHEDULE_TICK_S", 0.05)
    port = free_port()
    unit = lamp_unit(on=False)
    sim = ModbusTcpSim({1: unit}, port)
    await sim.start()
    bus_cfg = {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
               "timeout_s": 0.3}
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[bus_cfg],
                          devices=[lamp_device("lamp-1", "b", 1, max_switches_per_min=2)])
    cfg = loaded.config.device("lamp-1")
    assert isinstance(cfg, StreetlightDevice)
    bus = ModbusBus(validate(ModbusTcpBus, bus_cfg))
    driver = StreetlightDriver(cfg, bus, timeout_s=2.0)
    driver.utc_offset_h = 8.0
    rules = SafetyRules(loaded.config, clock_trusted=lambda: True,
                        relays=lambda name: driver.relay if name == "lamp-1" else None)
    sink = RecordingSink()
    try:
        await driver.poll()  # the relay is read: off
        local = dt.datetime.now(dt.UTC) + dt.timedelta(hours=8) - dt.timedelta(minutes=1)
        driver.schedule = [LightStep(at=f"{local:%H:%M}", on=True, dim_pct=100)]
        task = asyncio.create_task(driver.run_schedule(sink))
        try:
            await wait_until(lambda: sink.results, 10, "the schedule step")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert unit.coils[sdm120.RELAY_COIL] is True  # the schedule switched it: 1 switch
        for dim in (40, 60, 80):  # the lamp is on: dimming it never touches the relay
            assert rules.check("lamp-1", "light.set", LightSet(on=True, dim_pct=dim),
                               {"lighting"}) is None
            await driver.set_light(on=True, dim_pct=dim)
        assert rules.check("lamp-1", "light.set", LightSet(on=False), {"lighting"}) is None
        await driver.set_light(on=False, dim_pct=100)  # 2 switches in the minute
        why = rules.check("lamp-1", "light.set", LightSet(on=True), {"lighting"})
        assert why is not None and "switched 2 times" in why
        assert rules.check("lamp-1", "light.set", LightSet(on=False, dim_pct=50),
                           {"lighting"}) is None  # no change: still allowed
    finally:
        await bus.close()
        await sim.stop()


# ---- #11: the demo broker's per-gateway ACL ----------------------------------------------


async def test_a_gateways_certificate_cannot_touch_another_gateways_topics(
        tmp_path: Path) -> None:
    pki = ensure_pki(tmp_path / "pki", clients=("gw-a", "gw-b", "receiver"))
    assert common_name(pki.cert("gw-a")) == "gw-a"
    broker = Mosquitto(tmp_path / "broker", free_port(), pki, acl=gateway_acl("edge/v1"))
    broker.start()
    links: list[MqttLink] = []

    async def link(name: str) -> MqttLink:
        made = MqttLink(host="127.0.0.1", port=broker.port, client_id=f"{name}-{len(links)}",
                        protocol="5", keepalive_s=10, connect_timeout_s=5,
                        tls=client_tls(pki, name))
        await made.connect()
        links.append(made)
        return made

    try:
        gw_a, gw_b, platform = await link("gw-a"), await link("gw-b"), await link("receiver")
        for topic in ("edge/v1/+/events", "edge/v1/+/state"):
            assert await platform.subscribe(topic)
        assert await gw_a.subscribe("edge/v1/gw-a/cmd")
        for topic in ("edge/v1/gw-a/cmd", "edge/v1/gw-a/events", "edge/v1/gw-a/state"):
            await gw_b.subscribe(topic)  # refused, or granted and never delivered
        # gw-b writing as gw-a: not authorised (MQTT 5 PUBACK 0x87), never delivered
        assert await gw_b.publish("edge/v1/gw-a/events", b"forged") == 0x87
        assert await gw_b.publish("edge/v1/gw-a/state", b"forged", retain=True) == 0x87
        assert await gw_b.publish("edge/v1/gw-a/cmd", b"forged") == 0x87
        # what is allowed reaches only whom it is for
        assert await gw_a.publish("edge/v1/gw-a/events", b"batch-a") == 0
        assert await gw_b.publish("edge/v1/gw-b/events", b"batch-b") == 0
        assert await platform.publish("edge/v1/gw-a/cmd", b"cmd-a") == 0
        got_platform = {(await platform.next_inbound(5)).payload for _ in range(2)}
        assert got_platform == {b"batch-a", b"batch-b"}
        assert (await gw_a.next_inbound(5)).payload == b"cmd-a"
        await asyncio.sleep(0.5)
        assert gw_b.inbound.empty()  # gw-a's command and events never reached gw-b
        assert platform.inbound.empty()  # no forged message reached the platform
        assert await gw_a.publish("edge/v1/gw-b/cmd", b"x") == 0x87  # nor the other way
    finally:
        for made in links:
            await made.close()
        broker.stop()


def test_every_role_is_listed_once_read_included() -> None:
    roles = role_catalogue()
    assert set(roles) == set(ROLES) == {"lighting", "broadcast", "broadcast-emergency",
                                        "config", "read"}
    assert roles["read"] == ["device.read", "agent.state"]
    assert set(ACTION_ROLES.values()) <= set(ROLES)


# ---- issue 20 re-test: what a platform engineer had to guess from the contract -------------


def _schema_reason(body: dict[str, Any]) -> str | None:
    """The reason the published schema predicts (docs/contract/README.md §Validation)."""
    from hil.receiver.schemas import errors

    found = errors("command", body)
    if not found:
        return None
    about_params = [e.startswith("params") or '"params" is a required' in e for e in found]
    return "bad_params" if all(about_params) else "bad_body"


@pytest.mark.parametrize(("case", "over", "reason"), [
    ("no params", {"params": None}, "bad_params"),
    ("no device", {"device": None}, "bad_body"),
    ("empty device", {"device": ""}, "bad_body"),
    ("dim 140", {"params": {"on": True, "dim_pct": 140}}, "bad_params"),
    ("unknown param", {"params": {"on": True, "colour": "red"}}, "bad_params"),
    ("device on a gateway action", {"action": "agent.state", "params": {}}, "bad_body"),
    ("params on a gateway action", {"action": "agent.state", "device": None,
                                    "params": {"x": 1}}, "bad_params"),
    ("exp as a number", {"exp": 1795662900}, "bad_body"),
    ("params not an object", {"params": [True]}, "bad_params"),
    ("params null", {"params": "null"}, "bad_params"),
])
async def test_the_schema_and_the_gateway_agree_on_bad_body_and_bad_params(
        h: Harness, case: str, over: dict[str, Any], reason: str) -> None:
    """Re-test #4: the schema took a light.set without params or device; dim_pct 140 failed
    the body schema while the gateway said bad_params. Both now give the same split."""
    body = _body(**over)
    body = {k: v for k, v in body.items() if v is not None}  # None: the member is absent
    body = {k: None if v == "null" else v for k, v in body.items()}  # "null": JSON null
    out = await _send_body(h, h.lighting, body)
    assert (out.status, out.reason) == ("rejected", reason), (case, out)
    assert _schema_reason(body) == reason, (case, body)
    assert out.detail["detail"], case  # always says which member


async def test_an_unknown_device_is_named(h: Harness) -> None:
    out = await _send_body(h, h.lighting, _body(device="lamp-99"))
    assert out.reason == "unknown_device"
    assert "lamp-99" in out.detail["detail"]
    assert _schema_reason(_body(device="lamp-99")) is None  # a valid body for another gateway


async def test_a_bad_time_is_described_not_echoed_as_a_regex(h: Harness) -> None:
    """Re-test #8: the detail was cut mid-pattern (`…(Z|[+-][0-9]{2}:[0-9]{`)."""
    out = await _send_body(h, h.lighting, _body(iat="2026-11-26T03:12:45", cmd_id="x"))
    detail = out.detail["detail"]
    assert out.reason == "bad_body"
    assert "iat: must be an RFC 3339 time" in detail, detail
    assert "cmd_id: must be a lower-case UUIDv7" in detail, detail
    assert "[0-9]" not in detail
    assert "^" not in detail


@pytest.mark.parametrize(("iat_s", "exp_s", "reason", "words"), [
    (30, 1, "bad_body", "exp: must be after iat"),  # the re-test's case: it executed
    (0, 0, "bad_body", "exp: must be after iat"),
    (-10, 3590, "", ""),  # exactly the lifetime
    (-10, 3591, "bad_body", "exp: at most 3600 s after iat"),
    (-60, 86400, "bad_body", "exp: at most 3600 s after iat"),
])
async def test_exp_is_after_iat_within_the_command_lifetime(
        h: Harness, iat_s: int, exp_s: int, reason: str, words: str) -> None:
    """Re-test #9: iat 30 s ahead and exp 1 s ahead executed; an exp a year out was fine."""
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    body = _body(iat=_stamp(now + dt.timedelta(seconds=iat_s)),
                 exp=_stamp(now + dt.timedelta(seconds=exp_s)))
    out = await _send_body(h, h.lighting, body)
    assert out.reason == reason, out
    if words:
        assert words in out.detail["detail"]
        assert out.cmd_id == body["cmd_id"]  # a signed, parsed body: its id is verified


async def test_exp_before_iat_is_refused_with_an_unsynced_clock_too(h: Harness) -> None:
    assert h.processor is not None
    h.processor.clock.quality = lambda: TimeQuality.UNSYNCED  # type: ignore[method-assign]
    now = dt.datetime.now(dt.UTC)
    out = await _send_body(h, h.lighting, _body(iat=_stamp(now),
                                                exp=_stamp(now - dt.timedelta(seconds=5))))
    assert (out.reason, out.detail["detail"]) == ("bad_body", "exp: must be after iat")


async def test_agent_state_is_a_read_action_on_the_gateway(h: Harness) -> None:
    """Re-test #5: a late platform asks for a fresh seq baseline (agent.state, role read)."""
    entry = action_catalogue()["agent.state"]
    assert (entry["role"], entry["kinds"], entry["device"]) == ("read", [], False)
    assert "agent.state" in role_catalogue()["read"]
    out = await _send_body(h, h.lighting, _body(action="agent.state", device=None, params={}))
    assert (out.status, out.device) == ("executed", None), out
    assert h.executed[-1][:2] == ("", "agent.state")
    refused = await _send_body(h, h.broadcast, _body(action="agent.state", device=None))
    assert (refused.reason, refused.detail["detail"]) == ("wrong_role",
                                                          "agent.state needs role read")


async def test_agent_state_publishes_a_fresh_baseline_at_once(
        tmp_path: Path, plain_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's side of agent.state: a full state within STATE_CHECK_S, not at the
    heartbeat (900 s by default); its bytes are what the data budget counts."""
    monkeypatch.setattr(mqtt_uplink, "STATE_CHECK_S", 0.2)
    sizes: list[int] = []
    real_send = MqttUplink._send_state

    def counting(self: MqttUplink, link: MqttLink, state: dict[str, Any]) -> None:
        sizes.append(len(self._signed_state(state)))
        real_send(self, link, state)

    monkeypatch.setattr(MqttUplink, "_send_state", counting)
    async with _state_rig(tmp_path, plain_broker, state_heartbeat_s=3600) as rig:
        await wait_until(lambda: rig.states, 10, "a birth")
        await rig.outbox.put(_reading(1))
        await wait_until(lambda: rig.uplink.stats.events_acked == 1, 10, "the event sent")
        await asyncio.sleep(0.6)
        assert len(rig.states) == 1  # quiet: nothing until the heartbeat an hour away
        rig.uplink.request_state()
        started = time.monotonic()
        await wait_until(lambda: len(rig.states) == 2, 5, "a state on request")
        assert time.monotonic() - started < 3.0  # a 0.2 s check + a broker round trip; loaded CI
        assert (rig.states[1]["seq_low"], rig.states[1]["seq_high"]) == (2, 1)
        assert rig.states[1]["online"] is True
        print(f"agent.state: one state message of {sizes[-1]} bytes")
        assert sizes[-1] < 1024


async def test_reload_applies_a_new_platform_key_and_refuses_a_loose_file(
        tmp_path: Path) -> None:
    """Re-test #1: a key added to platform-keys.json was ignored until a restart while
    `edge reload` said ✔. Now the reload loads it (same checked, all-or-nothing loader); a
    loose file is refused by the reload, said so, and the running keys stay."""
    from edge.agent import Agent
    from hil.commander import register, sign_command

    keys_file = tmp_path / "platform-keys.json"
    old_key, new_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    register(keys_file, old_key, ["read"])
    loaded = write_config(tmp_path, broker_port=1, pki=None, devices=[], buses=[],
                          gateway={"platform_keys_file": "platform-keys.json"})
    agent = Agent(loaded, boot_delay_s=0)
    stop = asyncio.Event()
    run = asyncio.create_task(agent.run(stop))
    gw = loaded.config.gateway.id

    async def state_by(key: Ed25519PrivateKey) -> Outcome:
        assert agent.commands is not None
        _cmd, env = sign_command(key, gateway=gw, device=None, action="agent.state")
        return await agent.commands.handle(env)

    try:
        await asyncio.wait_for(agent.ready.wait(), 10)
        assert (await state_by(new_key)).reason == "unknown_kid"
        register(keys_file, new_key, ["read"])  # the platform adds a key
        assert await agent.reload() == []
        assert agent.last_reload["ok"] is True
        assert agent.last_reload["needs_restart"] == []  # applied: nothing left for a restart
        executed = await state_by(new_key)
        assert (executed.status, executed.detail) == ("executed", {"state": "requested"})
        keys_file.chmod(0o666)  # loose: refused as a whole, and said so
        register(keys_file, Ed25519PrivateKey.generate(), ["read"])
        keys_file.chmod(0o666)
        assert await agent.reload() == []
        [note] = agent.last_reload["needs_restart"]
        assert "refused" in note
        assert "others can write" in note
        assert "running keys stay" in note
        assert (await state_by(new_key)).status == "executed"  # the running keys stay
        assert (await state_by(old_key)).status == "executed"
    finally:
        stop.set()
        await run


async def test_every_result_detail_is_what_the_schema_describes(
        h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Re-test #8: `detail` was an unconstrained object. Each reason's members are in the
    schema now, the suppressed summary included (no ids), and nothing else passes."""
    from edge.commands import processor as commands_mod
    from hil.receiver.schemas import errors

    monkeypatch.setattr(commands_mod, "REJECT_WINDOW_S", 0.3)
    assert h.processor is not None
    await _send_body(h, h.lighting, _body())  # executed
    await _send_body(h, h.lighting, _body(device="lamp-99"))  # unknown_device
    await _send_body(h, h.lighting, _body(params={"on": True, "dim_pct": 140}))  # bad_params
    await _send_body(h, h.lighting, _body(action="agent.state", device=None))  # executed
    for _ in range(commands_mod.REJECT_BURST + 3):
        await _send_body(h, h.unknown, _body())  # unknown_kid, the last 3 only counted
    await asyncio.sleep(0.4)
    await h.processor.tick()
    results = _results(h)
    assert [r["reason"] for r in results][-1] == "suppressed"
    summary = results[-1]
    assert summary["detail"] == {"counts": {"unknown_kid": 3}, "window_s": 0.3}
    assert (summary["cmd_id"], summary["action"]) == (None, None)
    assert "cmd_id_unverified" not in summary
    for result in results:
        assert errors("command_result", result) == [], result
    rejected = next(r for r in results if r["reason"] == "unknown_device")
    assert errors("command_result", {**rejected, "detail": {"detail": "x", "extra": 1}})
    assert errors("command_result", {**summary, "detail": {"counts": {}}})
    assert errors("command_result", {**summary, "cmd_id": str(uuid7())})
