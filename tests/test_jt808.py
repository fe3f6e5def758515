"""JT/T 808 codec: the worked frames of design/devices.md §3.2, framing, fuzzing."""

from __future__ import annotations

import contextlib
import datetime as dt
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.drivers._codecs import jt808

pytestmark = pytest.mark.reliability

LOCATION = bytes.fromhex(
    "7E0200002801380013800000020000000000 0C0003 01DE3DB2 072FF497 000C 0164 005A "
    "250101083000 010400003039 300119 31010C A07E".replace(" ", ""))
HEARTBEAT = bytes.fromhex("7E000200000138001380000001A97E")


def test_worked_location_frame() -> None:
    msg = jt808.decode(LOCATION)
    assert (msg.msg_id, msg.phone, msg.serial, len(msg.body)) == (0x0200, "13800138000", 2, 40)
    loc = jt808.parse_location(msg.body)
    assert loc.fixed
    assert loc.lat == pytest.approx(31.342002)
    assert loc.lon == pytest.approx(120.583319)
    assert (loc.altitude_m, loc.speed_kmh, loc.course_deg) == (12, 35.6, 90)
    assert loc.time_utc == dt.datetime(2025, 1, 1, 0, 30, tzinfo=dt.UTC)  # 08:30 GMT+8
    assert loc.extras == {"mileage_km": 1234.5, "rssi": 25, "satellites": 12}


def test_worked_heartbeat_frame_and_encode_round_trip() -> None:
    msg = jt808.decode(HEARTBEAT)
    assert (msg.msg_id, msg.serial, msg.body) == (0x0002, 1, b"")
    assert jt808.encode(0x0002, "013800138000", 1, b"") == HEARTBEAT
    assert jt808.encode(0x0200, "013800138000", 2, msg_body()) == LOCATION


def msg_body() -> bytes:
    return jt808.decode(LOCATION).body


def test_escaping() -> None:
    assert jt808.escape(bytes.fromhex("307E087D55")) == bytes.fromhex("307D02087D0155")
    assert jt808.unescape(bytes.fromhex("307D02087D0155")) == bytes.fromhex("307E087D55")
    with pytest.raises(ValueError, match="escape"):
        jt808.unescape(b"\x7d\x03")


def test_bad_checksum_is_refused() -> None:
    broken = bytearray(LOCATION)
    broken[20] ^= 0x01
    with pytest.raises(ValueError, match="checksum"):
        jt808.decode(bytes(broken))


def test_framer_splits_a_stream_fed_byte_by_byte_with_junk() -> None:
    framer = jt808.Framer()
    stream = b"\x01\x02junk" + LOCATION + HEARTBEAT + LOCATION[:10]
    frames = [f for byte in stream for f in framer.feed(bytes([byte]))]
    assert [jt808.decode(f).msg_id for f in frames] == [0x0200, 0x0002]


# a hang is a failure: each example must finish within 1 s
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "10000")),
          deadline=dt.timedelta(seconds=1),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80))
def test_fuzz_decode_and_location(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        jt808.parse_location(jt808.decode(data).body)
    with contextlib.suppress(ValueError):
        jt808.parse_location(data)
    jt808.Framer().feed(data)
