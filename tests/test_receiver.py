"""The reference receiver: verify, dedup, seq gaps, cases."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from edge.clock import TimeQuality
from edge.model import Alarm, Asset, Event, EventType, encode_batch, encode_event
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto
from hil.receiver.core import BATCH_ATTEMPTS, Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from tests.helpers import wait_until

GW = "gw-320508-0007"
TOPIC = f"edge/v1/{GW}/events"
ASSET = Asset("3205080106000123", "0106", "320508001002003", "井盖", 31.3, 120.6)


def setup(tmp_path: Path) -> tuple[Receiver, Signer]:
    key = Ed25519PrivateKey.generate()
    store = ReceiverStore(tmp_path / "rx.db")
    return Receiver(store, load_gateway_keys({GW: raw_public_key(key.public_key()).hex()})), \
        Signer(key)


def batch(signer: Signer, events: list[tuple[Event, int]]) -> bytes:
    body = encode_batch(GW, 1, time.time_ns(), [encode_event(e, s) for e, s in events])
    return signer.envelope(body)


def reading() -> Event:
    return Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED, device="d",
                 asset=ASSET, data={"v": 1})


def alarm(state: str, alarm_id: str = "x:cover_open:1") -> Event:
    return Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED, device="d", asset=ASSET,
                 alarm=Alarm("cover_open", state, alarm_id, 1, 40.0, 15.0, "deg"))  # type: ignore[arg-type]


def test_duplicates_are_counted_once(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    events = [(reading(), 1), (reading(), 2)]
    first = rx.handle(TOPIC, batch(signer, events))
    again = rx.handle(TOPIC, batch(signer, events))
    assert (first.accepted, first.duplicates) == (2, 0)
    assert (again.accepted, again.duplicates) == (0, 2)
    assert rx.store.seq_count(GW)[0] == 2
    assert rx.store.counters()["events.duplicates"] == 2


def test_a_seq_gap_is_reported_unless_announced(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    rx.handle(TOPIC, batch(signer, [(reading(), 1), (reading(), 2), (reading(), 6)]))
    assert rx.store.seq_gaps(GW) == [(3, 5)]
    gap = Event(EventType.GAP, 0, time.time_ns(), TimeQuality.SYNCED,
                data={"reason": "quota", "dropped": {"3": 3}, "first_seq": 3, "last_seq": 5})
    rx.handle(TOPIC, batch(signer, [(gap, 7)]))
    assert rx.store.seq_gaps(GW) == []


def test_bad_signature_and_foreign_gateway_are_rejected(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    env = json.loads(batch(signer, [(reading(), 1)]))
    env["body"] = env["body"].replace('"v":1', '"v":2')
    out = rx.handle(TOPIC, json.dumps(env).encode())
    assert out.rejected == "bad signature"
    other = Signer(Ed25519PrivateKey.generate())
    assert "unknown kid" in rx.handle(TOPIC, batch(other, [(reading(), 1)])).rejected
    assert rx.handle("edge/v1/gw-unknown/events", batch(signer, [(reading(), 1)])).rejected
    assert rx.store.seq_count(GW)[0] == 0
    assert rx.store.counters()["rejected.signature"] == 2


def test_raise_opens_a_case_and_clear_closes_it(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    opened = rx.handle(TOPIC, batch(signer, [(alarm("raised"), 1)]))
    assert opened.opened == [1]
    again = rx.handle(TOPIC, batch(signer, [(alarm("raised"), 2)]))  # re-announced: same case
    assert again.opened == []
    closed = rx.handle(TOPIC, batch(signer, [(alarm("cleared"), 3)]))
    assert closed.closed == [1]
    assert rx.store.cases("closed")[0]["alarm_id"] == "x:cover_open:1"


def state_doc(alarm_id: str = "x:cover_open:7", **extra: object) -> dict[str, object]:
    return {"online": True, "gw": GW, "version": "0.1.0", "boot_id": "b",
            "outbox": {"depth": 0, "dead_letters": 0, "by_prio": {}}, "active_alarms": [
                {"device": "d", "kind": "cover_open", "alarm_id": alarm_id}],
            **extra}


STATE = f"edge/v1/{GW}/state"


def test_case_numbers_are_dense_with_duplicated_raises(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    first = alarm("raised", "a:cover_open:1")
    numbers = rx.handle(TOPIC, batch(signer, [(first, 1)])).opened
    for seq in (2, 3, 4):  # the same raise re-sent (after a reconnect) with new seqs
        assert rx.handle(TOPIC, batch(signer, [(alarm("raised", "a:cover_open:1"), seq)])
                         ).opened == []
    assert rx.handle(TOPIC, batch(signer, [(first, 1)])).duplicates == 1  # a replayed batch
    assert rx.handle(STATE, signer.envelope(json.dumps(
        state_doc("a:cover_open:1")).encode())).opened == []  # re-announced, already open
    numbers += rx.handle(TOPIC, batch(signer, [(alarm("raised", "b:cover_open:1"), 5),
                                               (alarm("raised", "b:cover_open:1"), 6)])).opened
    numbers += rx.handle(STATE, signer.envelope(json.dumps(
        state_doc("c:cover_open:1")).encode())).opened
    numbers += rx.handle(TOPIC, batch(signer, [(alarm("raised", "d:cover_open:1"), 7)])).opened
    assert numbers == [1, 2, 3, 4]
    assert sorted(c["case_no"] for c in rx.store.cases()) == [1, 2, 3, 4]


def test_an_unsigned_or_forged_state_opens_no_case(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    forged = rx.handle(STATE, json.dumps(state_doc()).encode())  # plain JSON: presence only
    assert forged.opened == []
    assert rx.store.gateways()[0]["online"] is True
    assert rx.store.gateways()[0]["state"]["signed"] is False
    other = Signer(Ed25519PrivateKey.generate())
    assert "unknown kid" in rx.handle(STATE, other.envelope(json.dumps(state_doc()).encode())
                                      ).rejected
    env = json.loads(signer.envelope(json.dumps(state_doc()).encode()))
    env["body"] = env["body"].replace("x:cover_open:7", "x:cover_open:8")
    assert rx.handle(STATE, json.dumps(env).encode()).rejected == "bad signature"
    mismatch = json.dumps(state_doc(gw="gw-other")).encode()
    assert "gw-other" in rx.handle(STATE, signer.envelope(mismatch)).rejected
    assert rx.store.cases() == []
    signed = rx.handle(STATE, signer.envelope(json.dumps(state_doc()).encode()))
    assert signed.opened == [1]  # the gateway's own word: a missed raise gets its case
    assert rx.store.gateways()[0]["state"]["signed"] is True
    counters = rx.store.counters()
    assert counters["state.unsigned"] == 1
    assert counters["rejected.signature"] == 2
    assert counters["rejected.gateway_mismatch"] == 1
    assert counters["alarms.reannounced"] == 1


def deep(n: int) -> bytes:
    return b"[" * n + b"]" * n


HOSTILE: list[tuple[str, bytes]] = [
    ("empty", b""), ("not json", b"hello"), ("array", b"[]"), ("null", b"null"),
    ("number", b"1"), ("string", b'"x"'), ("non-utf8", b"\xff\xfe{\x80}"),
    ("deep", deep(200_000)), ("deep under the size limit", deep(50_000)), ("deep object", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ("huge", b'{"online": true, "pad": "' + b"x" * (40 * 1024 * 1024) + b'"}'),
    ("nan", b'{"online": NaN}'),
    ("wrong types", b'{"online": "yes", "active_alarms": "x", "outbox": []}'),
    ("alarms of wrong types", b'{"online": true, "active_alarms": [1, [], {"alarm_id": 5, '
                              b'"kind": []}, {"alarm_id": "a", "kind": "k", "device": {}}]}'),
    ("envelope of wrong types", b'{"kid": 1, "alg": [], "sig": {}, "body": 2}'),
    ("envelope body not json", b'{"kid": "0123456789abcdef", "alg": "Ed25519", "sig": "AA", '
                               b'"body": "\\u0000"}'),
    # lone surrogates: a str Python's json makes but no encoder takes (issue 19 re-test #4)
    ("surrogate kid", b'{"kid":"\\ud800","alg":"Ed25519","sig":"AA","body":"{}"}'),
    ("surrogate body", b'{"kid":"0123456789abcdef","alg":"Ed25519","sig":"AA",'
                       b'"body":"{\\"online\\": \\"\\udfff\\"}"}'),
    ("surrogate sig", b'{"kid":"0123456789abcdef","alg":"Ed25519","sig":"\\udc00",'
                      b'"body":"{}"}'),
    ("surrogate in a plain state", b'{"online": "\\ud800", "gw": "\\ud800"}'),
]


@pytest.mark.parametrize("leaf", ["events", "state"])
@pytest.mark.parametrize(("name", "payload"), HOSTILE, ids=[n for n, _p in HOSTILE])
def test_a_hostile_payload_is_a_counted_rejection(tmp_path: Path, leaf: str, name: str,
                                                  payload: bytes) -> None:
    rx, signer = setup(tmp_path)
    before = sum(v for k, v in rx.store.counters().items() if k.startswith("rejected."))
    out = rx.handle(f"edge/v1/{GW}/{leaf}", payload)
    assert out.rejected, name
    assert out.opened == []
    after = sum(v for k, v in rx.store.counters().items() if k.startswith("rejected."))
    assert after == before + 1
    assert rx.store.cases() == []
    # and it keeps working
    assert rx.handle(TOPIC, batch(signer, [(alarm("raised"), 1)])).opened == [1]


SIGNED_HOSTILE: list[tuple[str, bytes]] = [
    ("array", b"[]"), ("null", b"null"), ("deep", deep(100_000)),
    ("wrong types", json.dumps(state_doc(online="yes", active_alarms="x")).encode()),
    ("alarm not a dict", json.dumps(state_doc() | {"active_alarms": [1, None, []]}).encode()),
    ("alarm fields of wrong types", json.dumps(state_doc() | {"active_alarms": [
        {"alarm_id": 5, "kind": "k"}, {"alarm_id": "a", "kind": ["k"]},
        {"alarm_id": "a", "kind": "k", "device": {}}, {"alarm_id": "a", "kind": "k",
                                                        "value": "hot"}]}).encode()),
]


@pytest.mark.parametrize(("name", "body"), SIGNED_HOSTILE, ids=[n for n, _b in SIGNED_HOSTILE])
def test_a_signed_but_malformed_state_is_a_counted_rejection(tmp_path: Path, name: str,
                                                             body: bytes) -> None:
    rx, signer = setup(tmp_path)
    out = rx.handle(STATE, signer.envelope(body))
    assert out.rejected, name
    assert rx.store.cases() == []
    assert rx.store.counters().get("rejected.state", 0) == 1


def test_a_signed_batch_with_odd_gap_data_is_a_counted_rejection(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    gap = Event(EventType.GAP, 0, time.time_ns(), TimeQuality.SYNCED,
                data={"reason": "quota", "first_seq": "three", "last_seq": [5]})
    out = rx.handle(TOPIC, batch(signer, [(reading(), 1), (gap, 2)]))
    assert out.rejected
    assert rx.store.seq_count(GW)[0] == 0  # the whole batch rolled back, nothing half-stored
    assert rx.handle(TOPIC, batch(signer, [(reading(), 3)])).accepted == 1


async def test_hostile_https_posts_are_counted_rejections(tmp_path: Path) -> None:
    from aiohttp import ClientSession

    from hil.broker import free_port
    from hil.receiver.web import serve

    rx, signer = setup(tmp_path)
    port = free_port()
    runner = await serve(rx.store, port=port, receiver=rx)
    url = f"http://127.0.0.1:{port}/v1/gateways/{GW}/events"
    try:
        async with ClientSession() as session:
            for _name, payload in HOSTILE:
                async with session.post(url, data=payload) as resp:
                    assert resp.status in {400, 413}, (_name, resp.status)
            async with session.post(url, data=b"[]" * (21 * 1024 * 1024)) as resp:
                assert resp.status == 413
            async with session.post(f"http://127.0.0.1:{port}/v1/gateways/gw-x/events",
                                    data=batch(signer, [(reading(), 1)])) as resp:
                assert resp.status == 400
            async with session.post(url, data=batch(signer, [(alarm("raised"), 1)])) as resp:
                assert resp.status == 200
    finally:
        await runner.cleanup()
    rejected = sum(v for k, v in rx.store.counters().items() if k.startswith("rejected."))
    assert rejected == len(HOSTILE) + 2
    assert [c["case_no"] for c in rx.store.cases()] == [1]


def test_signed_command_results_of_any_shape_never_stop_the_receiver(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    odd = Event(EventType.COMMAND_RESULT, 1, time.time_ns(), TimeQuality.SYNCED, device="d",
                data={"cmd_id": ["not", "a", "string"], "status": {"x": None}, "detail": 1e308})
    # signed, but not what the published command_result schema allows (edge/contract): a
    # counted rejection, and the receiver goes on
    assert "schema" in rx.handle(TOPIC, batch(signer, [(odd, 1)])).rejected
    deep_result = Event(EventType.COMMAND_RESULT, 1, time.time_ns(), TimeQuality.SYNCED,
                        device="d", data={"cmd_id": "c", "status": "ok", "detail": "DEEP"})
    body = encode_batch(GW, 1, time.time_ns(), [encode_event(deep_result, 2)])
    body = body.replace(b'"DEEP"', b'{"a":' * 5_000 + b"1" + b"}" * 5_000)
    out = rx.handle(TOPIC, signer.envelope(body))  # signed: the gateway's key, odd content
    assert out.rejected
    assert rx.store.counters().get("rejected.schema", 0) + \
        rx.store.counters().get("rejected.malformed", 0) == 2
    assert rx.handle(TOPIC, batch(signer, [(reading(), 3)])).accepted == 1


def test_surrogates_are_plain_rejections_without_a_traceback(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Issue 19 re-test #4: each one printed ~15 traceback lines (UnicodeEncodeError)."""
    rx, _signer = setup(tmp_path)
    payload = b'{"kid":"\\ud800","alg":"Ed25519","sig":"AA","body":"{}"}'
    for leaf in ("state", "events"):
        for _ in range(20):
            assert rx.handle(f"edge/v1/{GW}/{leaf}", payload).rejected
    assert sum(v for k, v in rx.store.counters().items() if k.startswith("rejected.")) == 40
    assert [r for r in caplog.records if r.exc_info] == []


def test_the_catch_all_logs_a_traceback_once_per_error_type_per_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    rx, signer = setup(tmp_path)

    def broken(_gw: str, _payload: bytes) -> None:
        raise KeyError("a receiver bug")

    monkeypatch.setattr(rx, "_events", broken)
    for _ in range(50):
        assert rx.handle(TOPIC, batch(signer, [(reading(), 1)])).rejected
    assert rx.store.counters()["rejected.malformed"] == 50
    assert len([r for r in caplog.records if r.exc_info]) == 1


def test_an_unsigned_state_cannot_downgrade_a_signing_gateway(tmp_path: Path) -> None:
    """Issue 19 re-test #5: an unsigned {"online": false} marked a signing gateway OFFLINE."""
    rx, signer = setup(tmp_path)
    assert not rx.handle(STATE, signer.envelope(json.dumps(state_doc()).encode())).rejected
    out = rx.handle(STATE, b'{"online": false}')
    assert "signs its state" in out.rejected
    assert rx.store.gateways()[0]["online"] is True
    assert rx.store.counters()["rejected.unsigned_state"] == 1
    assert "state.unsigned" not in rx.store.counters()
    # its own signed goodbye still works
    bye = {"online": False, "gw": GW, "boot_id": "b", "reason": "stopped"}
    assert not rx.handle(STATE, signer.envelope(json.dumps(bye).encode())).rejected
    assert rx.store.gateways()[0]["online"] is False


# ---- a store failure is never a rejection (review: acked and dropped after lock timeouts) -----


class LockedStore(ReceiverStore):
    """A SQLite store whose first ``fail`` batches meet "database is locked" (another writer)."""

    def __init__(self, path: Path, fail: int) -> None:
        super().__init__(path)
        self.fail = fail

    def add_events(self, gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        if self.fail > 0:
            self.fail -= 1
            raise sqlite3.OperationalError("database is locked")
        return super().add_events(gw, events)


def locked(tmp_path: Path, fail: int) -> tuple[Receiver[LockedStore], Signer]:
    key = Ed25519PrivateKey.generate()
    store = LockedStore(tmp_path / "rx.db", fail)
    return Receiver(store, load_gateway_keys({GW: raw_public_key(key.public_key()).hex()})), \
        Signer(key)


def test_a_locked_database_is_retried_then_raised_never_a_rejection(tmp_path: Path) -> None:
    rx, signer = locked(tmp_path, fail=2)
    assert rx.handle(TOPIC, batch(signer, [(reading(), 1)])).accepted == 1  # third attempt
    assert rx.store.counters()["store.retries"] == 2
    rx.store.fail = 1_000  # retries exhausted: the error propagates (not acknowledged)
    with pytest.raises(sqlite3.OperationalError):
        rx.handle(TOPIC, batch(signer, [(reading(), 2)]))
    with pytest.raises(sqlite3.OperationalError):
        rx.handle_many([(TOPIC, batch(signer, [(reading(), n)])) for n in (3, 4)])
    assert not {k for k in rx.store.counters() if k.startswith("rejected.")}
    assert rx.store.seq_count(GW)[0] == 1


class PoisonStore(ReceiverStore):
    """A SQLite store that refuses the data of batches holding seq 13 (as a value out of range
    would be refused by PostgreSQL): the same every time the message comes."""

    def add_events(self, gw: str, events: Sequence[dict[str, Any]]) -> list[bool]:
        if any(e.get("seq") == 13 for e in events):
            raise sqlite3.IntegrityError("value out of range")
        return super().add_events(gw, events)


def test_a_message_the_store_always_refuses_is_counted_not_redelivered_for_ever(
        tmp_path: Path) -> None:
    """Review 2 #3: a store refusal of one message's data stalled the subscription for ever."""
    key = Ed25519PrivateKey.generate()
    rx = Receiver(PoisonStore(tmp_path / "rx.db"),
                  load_gateway_keys({GW: raw_public_key(key.public_key()).hex()}))
    signer = Signer(key)
    out = rx.handle_many([(TOPIC, batch(signer, [(reading(), n)])) for n in (12, 13, 14)])
    assert [o.accepted for o in out] == [1, 0, 1]
    assert out[1].rejected.startswith("store refused")
    assert rx.store.counters()["rejected.store_refused"] == 1
    assert rx.store.seq_count(GW)[0] == 2
    # a lock is still no rejection (test above): only a refusal of the data itself is


async def test_a_locked_database_answers_503_never_400(tmp_path: Path) -> None:
    """A 400 counts toward dead-lettering on the gateway; a store failure must be retried."""
    from aiohttp import ClientSession

    from hil.broker import free_port
    from hil.receiver.web import serve

    rx, signer = locked(tmp_path, fail=1_000)
    port = free_port()
    runner = await serve(rx.store, port=port, receiver=rx)
    url = f"http://127.0.0.1:{port}/v1/gateways/{GW}/events"
    try:
        async with ClientSession() as session:
            async with session.post(url, data=batch(signer, [(reading(), 1)])) as resp:
                assert resp.status == 503
                assert resp.headers.get("Retry-After")
            rx.store.fail = 0
            async with session.post(url, data=batch(signer, [(reading(), 1)])) as resp:
                assert resp.status == 200
                assert (await resp.json())["accepted"] == 1
    finally:
        await runner.cleanup()
    assert not {k for k in rx.store.counters() if k.startswith("rejected.")}


async def test_a_batch_that_met_a_locked_database_is_not_acknowledged(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    """Retries exhausted on a real broker: the batch is not acked, so the broker sends it again
    (on the receiver's new connection) and it is stored then; it was rejected.malformed, acked
    and lost."""
    rx, signer = locked(tmp_path, fail=BATCH_ATTEMPTS + 1)  # more than one handling's retries
    ready = asyncio.Event()
    task = asyncio.create_task(run_mqtt(rx, host="127.0.0.1", port=plain_broker.port, tls=None,
                                        ready=ready, retry_s=0.1), name="receiver")
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="gw", protocol="5",
                   keepalive_s=30, connect_timeout_s=5, tls=None)
    try:
        await asyncio.wait_for(ready.wait(), 10)
        await pub.connect()
        assert await pub.publish(TOPIC, batch(signer, [(alarm("raised"), 1)])) == 0
        await wait_until(lambda: rx.store.seq_count(GW)[0] == 1, 15, "the redelivered batch")
        assert [c["case_no"] for c in rx.store.cases()] == [1]
        assert not {k for k in rx.store.counters() if k.startswith("rejected.")}
    finally:
        await pub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        rx.store.close()


# ---- gateway state order (review of 18-20 #3): shared subscriptions reorder a gateway's states --

WILL_N = 2**53 - 1  # the last will's rank in its connection: after everything of it


def signed_state(signer: Signer, boot: str, conn_ms: int, n: int, *, online: bool = True,
                 alarm_ids: tuple[str, ...] = ()) -> bytes:
    doc: dict[str, object] = {"online": online, "gw": GW, "boot_id": boot,
                              "order": [conn_ms, n]}
    if n != WILL_N:
        doc["active_alarms"] = [{"device": "d", "kind": "cover_open", "alarm_id": a}
                                for a in alarm_ids]
    return signer.envelope(json.dumps(doc).encode())


def check_state_order(rx: Receiver[Any], signer: Signer) -> None:
    """What both stores must do with reordered states (shared by test_receiver_pg.py)."""
    def shown() -> tuple[bool, object]:
        row = rx.store.gateway(GW)
        assert row is not None
        return row["online"], [a["alarm_id"] for a in row["state"].get("active_alarms", [])]

    def handle(payload: bytes) -> None:
        assert not rx.handle(STATE, payload).rejected

    # a change (alarm a) committed before the birth that preceded it: the change stays
    handle(signed_state(signer, "boot-1", 1000, 2, alarm_ids=("a",)))
    handle(signed_state(signer, "boot-1", 1000, 1))  # the birth, late
    assert shown() == (True, ["a"])
    # the will of that connection is after everything of it, even if signed before
    handle(signed_state(signer, "boot-1", 1000, WILL_N, online=False))
    assert shown() == (False, [])
    handle(signed_state(signer, "boot-1", 1000, 3))  # a late state of that connection
    assert shown() == (False, [])
    # a reconnect (same boot, new connection): its birth is after the old will
    handle(signed_state(signer, "boot-1", 5000, 1))
    assert shown() == (True, [])
    # a new boot's birth, then the old boot's will and a late state of the old boot
    handle(signed_state(signer, "boot-2", 20, 1, alarm_ids=("b",)))
    handle(signed_state(signer, "boot-1", 5000, WILL_N, online=False))
    handle(signed_state(signer, "boot-1", 5000, 2))
    assert shown() == (True, ["b"])
    # a will, then a birth of a NEW boot: online
    handle(signed_state(signer, "boot-2", 20, WILL_N, online=False))
    assert shown() == (False, [])
    handle(signed_state(signer, "boot-3", 10, 1))
    assert shown() == (True, [])
    assert rx.store.counters()["state.stale"] == 4


def test_a_restart_without_a_will_is_announced_online_again(tmp_path: Path) -> None:
    """make demo stopped gateway and broker together: no will, and the next start was silent."""
    rx, signer = setup(tmp_path)
    said: list[str] = []
    rx.echo = said.append
    for state in (signed_state(signer, "boot-1", 1000, 1), signed_state(signer, "boot-1", 1000, 2),
                  signed_state(signer, "boot-2", 20, 1),  # a new boot, the old one left no will
                  signed_state(signer, "boot-2", 20, 2), signed_state(signer, "boot-2", 900, 1)):
        assert not rx.handle(STATE, state).rejected
    online = [line for line in said if line.startswith(f"gateway {GW} online")]
    assert len(online) == 3  # the first birth, the new boot's, the reconnect's; not the changes


def test_reordered_states_keep_the_newest(tmp_path: Path) -> None:
    rx, signer = setup(tmp_path)
    check_state_order(rx, signer)


def test_a_state_of_an_unknown_gateway_is_refused(tmp_path: Path) -> None:
    """Anyone with publish rights on +/state created gateway rows without limit (plain JSON)."""
    rx, _signer = setup(tmp_path)
    for n in range(3):
        out = rx.handle(f"edge/v1/gw-stranger-{n}/state", b'{"online": true}')
        assert out.rejected
    assert rx.store.gateways() == []
    assert rx.store.gateway("gw-stranger-0") is None
    assert rx.store.counters()["rejected.unknown_gateway"] == 3
