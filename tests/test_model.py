"""Event model: round trips, schema validation, signatures."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from edge.clock import TimeQuality, parse_rfc3339, rfc3339_ms
from edge.ids import uuid7
from edge.model import (
    Alarm,
    Asset,
    Event,
    EventType,
    encode_batch,
    encode_event,
    json_schemas,
)
from edge.security.signing import Ed25519PrivateKey, SignatureError, Signer, kid_of, open_envelope
from edge.wire import WireBatch, WireEvent

ASSET = Asset("3205080106000123", "0106", "320508001002003", "路灯井盖 干将东路 12号",
              31.3105, 120.6302)


def alarm_event() -> Event:
    return Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED, device="manhole-12",
                 asset=ASSET, data={"tilt_x_deg": 38.5},
                 alarm=Alarm("cover_open", "raised", "3205080106000123:cover_open:17", 1,
                             38.5, 15.0, "deg"))


def test_event_round_trips_through_json_and_the_wire_model() -> None:
    event = alarm_event()
    raw = encode_event(event, 48213)
    wire = WireEvent.model_validate_json(raw)
    assert wire.seq == 48213
    assert wire.id == event.id
    assert wire.asset is not None and wire.asset.name == ASSET.name
    assert wire.alarm is not None and wire.alarm.alarm_id.endswith(":17")
    assert json.loads(raw)["asset"]["class"] == "0106"
    assert "路灯" in raw.decode()  # readable UTF-8, not \\u escapes


def test_encoded_events_and_batches_validate_against_the_exported_schema() -> None:
    from hil.receiver.schemas import errors

    assert set(json_schemas()) >= {"event", "batch", "envelope", "state", "command"}
    events = [encode_event(alarm_event(), 1),
              encode_event(Event(EventType.READING, 3, time.time_ns(), TimeQuality.UNSYNCED,
                                 device="x", data={"v": 1}, mono=("boot", 1234)), 2)]
    for raw in events:
        assert errors("event", json.loads(raw)) == []
    body = encode_batch("gw-320508-0007", 7, time.time_ns(), events)
    assert errors("batch", json.loads(body)) == []
    assert WireBatch.model_validate_json(body).batch == 7


def test_schema_rejects_a_broken_event() -> None:
    from hil.receiver.schemas import errors

    doc = json.loads(encode_event(alarm_event(), 1))
    doc["prio"] = 7
    assert errors("event", doc) != []


def test_signature_verifies_and_a_flipped_byte_fails() -> None:
    key = Ed25519PrivateKey.generate()
    signer = Signer(key)
    body = encode_batch("gw-1", 1, time.time_ns(), [encode_event(alarm_event(), 1)])
    env = signer.envelope(body)
    keys = {kid_of(key.public_key()): key.public_key()}
    kid, got = open_envelope(env, keys)
    assert kid == signer.kid and got == body
    doc = json.loads(env)
    tampered = doc["body"].replace("38.5", "38.6", 1)
    assert tampered != doc["body"]
    with pytest.raises(SignatureError, match="bad signature"):
        open_envelope(json.dumps({**doc, "body": tampered}).encode(), keys)
    sig = bytearray(doc["sig"].encode())
    sig[5] = ord("A") if sig[5] != ord("A") else ord("B")
    with pytest.raises(SignatureError):
        open_envelope(json.dumps({**doc, "sig": sig.decode()}).encode(), keys)
    with pytest.raises(SignatureError, match="unknown kid"):
        open_envelope(env, {})


def test_kid_is_first_16_hex_of_sha256_of_raw_key() -> None:
    import hashlib

    from edge.security.signing import raw_public_key

    key = Ed25519PrivateKey.generate().public_key()
    assert kid_of(key) == hashlib.sha256(raw_public_key(key)).hexdigest()[:16]


def test_uuid7_is_time_ordered_and_versioned() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert all(u.version == 7 for u in ids)


def test_rfc3339_round_trip() -> None:
    ns = 1_795_660_365_120_000_000
    text = rfc3339_ms(ns)
    assert text.endswith("Z") and "." in text
    assert parse_rfc3339(text) == ns


def test_gateway_key_files_are_the_pkcs8_openssl_writes_and_reads(tmp_path: Path) -> None:
    """Keys move between our tools and openssl (provisioning, HSM exports) unchanged."""
    import shutil
    import subprocess

    from edge.security.keys import init_key, load_key
    from edge.security.signing import raw_public_key

    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl is part of every Debian base system"
    theirs = tmp_path / "theirs.pem"
    subprocess.run([openssl, "genpkey", "-algorithm", "ed25519", "-out", str(theirs)], check=True)
    theirs.chmod(0o600)
    public_der = subprocess.run([openssl, "pkey", "-in", str(theirs), "-pubout", "-outform",
                                 "DER"], check=True, capture_output=True).stdout
    assert raw_public_key(load_key(theirs).public_key()) == public_der[-32:]
    ours = tmp_path / "ours.pem"
    key = init_key(ours)
    public_der = subprocess.run([openssl, "pkey", "-in", str(ours), "-pubout", "-outform",
                                 "DER"], check=True, capture_output=True).stdout
    assert raw_public_key(key.public_key()) == public_der[-32:]
