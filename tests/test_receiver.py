"""The reference receiver: verify, dedup, seq gaps, cases."""

from __future__ import annotations

import json
import time
from pathlib import Path

from edge.clock import TimeQuality
from edge.model import Alarm, Asset, Event, EventType, encode_batch, encode_event
from edge.uplink.signing import Ed25519PrivateKey, Signer, raw_public_key
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.store import ReceiverStore

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
