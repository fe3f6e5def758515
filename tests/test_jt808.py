"""JT/T 808 codec: the worked frames of design/devices.md §3.2, framing, fuzzing."""

from __future__ import annotations

import contextlib
import datetime as dt
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.drivers._codecs import jt808

# pytest's 120 s default is close to a codec fuzzer at 100 k on a busy 2-core box
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(
    120 + int(os.environ.get("FUZZ_EXAMPLES", "3000")) // 250)]

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
@settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "3000")),
          deadline=dt.timedelta(seconds=1),
          suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=80))
def test_fuzz_decode_and_location(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        jt808.parse_location(jt808.decode(data).body)
    with contextlib.suppress(ValueError):
        jt808.parse_location(data)
    jt808.Framer().feed(data)


FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "3000")),
                deadline=dt.timedelta(seconds=1), suppress_health_check=[HealthCheck.too_slow])


# ---- issue 14 #4 -----------------------------------------------------------------------------
# Hand-computed from firmware_notes/jt808.md (header table) and design/devices.md §3.2; the XOR
# is worked out in the comment so the vector does not come from our own encoder.

# 2019 heartbeat: 0002 | attrs 4000 (bit 14, length 0) | version 01 |
# phone BCD[10] 00000000013800138000 | serial 0001 | XOR = 02^40^01^01^38^13^80^01 = E8
HEARTBEAT_2019 = bytes.fromhex("7E 0002 4000 01 00000000013800138000 0001 E8 7E".replace(" ", ""))
# platform general response 8001 to the location report (serial 2, id 0200, result 0 OK):
# 8001 | 0005 | 013800138000 | serial 0003 | 0002 0200 00 | XOR = 2D
RESPONSE_8001 = bytes.fromhex("7E 8001 0005 013800138000 0003 0002 0200 00 2D 7E".replace(" ", ""))


def _checked(payload: bytes) -> bytes:
    """Frame ``payload`` with its (correct) XOR, as a terminal would."""
    xor = 0
    for byte in payload:
        xor ^= byte
    return b"\x7e" + jt808.escape(payload + bytes([xor])) + b"\x7e"


def test_worked_2019_frame_decodes_and_the_2019_encoder_matches_it() -> None:
    msg = jt808.decode(HEARTBEAT_2019)
    assert (msg.msg_id, msg.version, msg.phone, msg.serial, msg.body) == (
        0x0002, 1, "13800138000", 1, b"")
    assert jt808.encode(0x0002, "13800138000", 1, b"", version=1) == HEARTBEAT_2019


def test_truncated_2019_frame_with_a_valid_checksum_is_a_value_error() -> None:
    """It raised struct.error: the 2019 header is 17 bytes, the 2013 minimum 12."""
    for cut in range(5, 17):
        frame = _checked(bytes.fromhex("0002400001000000000138001380000001")[:cut])
        with pytest.raises(ValueError, match="truncated"):
            jt808.decode(frame)


def test_sub_package_bit_without_package_fields_is_refused() -> None:
    """It was accepted as an empty message."""
    frame = _checked(bytes.fromhex("0200 2000 013800138000 0002".replace(" ", "")))
    with pytest.raises(ValueError, match="truncated"):
        jt808.decode(frame)


def test_a_body_cut_mid_field_is_truncated_not_a_bad_checksum() -> None:
    for cut in (20, 30, 40, len(LOCATION) - 3):
        with pytest.raises(ValueError, match="truncated"):
            jt808.decode(LOCATION[:cut])


def test_packages_are_exposed_and_reassembled_in_any_order() -> None:
    body = msg_body() * 3  # 120 bytes in three packages of 40
    parts = [jt808.encode(0x0704, "13800138000", 10 + i, body[i * 40:(i + 1) * 40],
                          packages=(3, i + 1)) for i in range(3)]
    # hand-checked header of the second package: 0704 | 2028 (bit 13, length 40) | phone |
    # serial 000B | total 0003 | index 0002
    assert parts[1][1:17] == bytes.fromhex(
        "0704 2028 013800138000 000B 0003 0002".replace(" ", ""))
    msgs = [jt808.decode(p) for p in parts]
    assert [m.packages for m in msgs] == [(3, 1), (3, 2), (3, 3)]
    asm = jt808.Reassembler()
    assert asm.feed(msgs[2], now_s=0) is None
    assert asm.feed(msgs[0], now_s=0) is None
    assert asm.feed(msgs[0], now_s=0) is None  # a resent package changes nothing
    whole = asm.feed(msgs[1], now_s=1)
    assert whole is not None
    assert (whole.msg_id, whole.serial, whole.body, whole.packages) == (0x0704, 10, body, None)
    assert asm.pending == 0
    single = jt808.decode(LOCATION)
    assert asm.feed(single, now_s=2) is single  # not sub-packaged: passes through


def test_reassembly_is_bounded_and_expires() -> None:
    asm = jt808.Reassembler(max_messages=2, timeout_s=30)
    for serial in (100, 200, 300):  # three messages started, none finished
        part = jt808.decode(jt808.encode(0x0704, "13800138000", serial, b"x", packages=(2, 1)))
        assert asm.feed(part, now_s=0) is None
    assert asm.pending == 2  # the oldest was dropped
    assert asm.dropped == 1
    late = jt808.decode(jt808.encode(0x0704, "13800138000", 1, b"x", packages=(2, 1)))
    assert asm.feed(late, now_s=31) is None
    assert asm.pending == 1  # the two stale ones expired
    with pytest.raises(ValueError, match="package"):
        jt808.decode(jt808.encode(0x0704, "13800138000", 1, b"x", packages=(2, 3)))
    with pytest.raises(ValueError, match="package"):
        jt808.decode(jt808.encode(0x0704, "13800138000", 1, b"x", packages=(0, 0)))


def test_general_response_8001() -> None:
    msg = jt808.decode(RESPONSE_8001)
    assert (msg.msg_id, msg.serial) == (0x8001, 3)
    reply = jt808.parse_general_response(msg.body)
    assert (reply.reply_serial, reply.reply_id, reply.result) == (2, 0x0200, 0)
    assert jt808.general_response(2, 0x0200, 0) == msg.body
    assert jt808.encode(0x8001, "13800138000", 3, msg.body) == RESPONSE_8001
    with pytest.raises(ValueError, match="5 bytes"):
        jt808.parse_general_response(b"\x00\x02\x02")


# 0100 register, 2013: province 002C (44) | city 0300 (768) | maker BYTE[5] "70111" |
# model BYTE[20] "BSJ-GF-06" + 11 x 00 | terminal id BYTE[7] "7654321" | colour 01 |
# plate GBK "粤B12345" = D4C1 42 3132333435
REGISTER_2013 = bytes.fromhex(
    "002C 0300 3730313131 4253 4A2D 4746 2D30 36 0000000000000000000000"
    " 37363534333231 01 D4C1 42 3132333435".replace(" ", ""))


def test_register_0100_both_versions() -> None:
    reg = jt808.parse_register(REGISTER_2013, version=None)
    assert (reg.province, reg.city, reg.maker, reg.model, reg.terminal_id, reg.plate_colour,
            reg.plate) == (44, 768, "70111", "BSJ-GF-06", "7654321", 1, "粤B12345")
    assert jt808.register_body(reg, version=None) == REGISTER_2013
    # 2019: maker BYTE[11], model BYTE[30], terminal id BYTE[30]
    body19 = jt808.register_body(reg, version=1)
    assert len(body19) == 2 + 2 + 11 + 30 + 30 + 1 + 8
    assert body19[4:15] == b"70111" + bytes(6)
    assert jt808.parse_register(body19, version=1) == reg
    with pytest.raises(ValueError, match="register"):
        jt808.parse_register(REGISTER_2013[:30], version=None)


def test_authenticate_0102_both_versions() -> None:
    assert jt808.parse_authenticate(b"AUTH-1234", version=None).code == "AUTH-1234"
    # 2019: length 09 | code | IMEI BYTE[15] | software version BYTE[20] (fixed, 00-padded;
    # the length-prefixed reading is disputed, design/devices.md §3.2, unverified)
    body19 = (bytes([9]) + b"AUTH-1234" + b"860000000000001" + b"V1.2.3" + bytes(14))
    auth = jt808.parse_authenticate(body19, version=1)
    assert (auth.code, auth.imei, auth.software_version) == ("AUTH-1234", "860000000000001",
                                                              "V1.2.3")
    assert jt808.authenticate_body(auth, version=1) == body19
    assert jt808.authenticate_body(auth, version=None) == b"AUTH-1234"
    with pytest.raises(ValueError, match="authenticate"):
        jt808.parse_authenticate(bytes([40]) + b"short", version=1)


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([None, 1]))
def test_fuzz_bodies_and_reassembly(data: bytes, version: int | None) -> None:
    with contextlib.suppress(ValueError):
        jt808.parse_general_response(data)
    with contextlib.suppress(ValueError):
        jt808.parse_register(data, version=version)
    with contextlib.suppress(ValueError):
        jt808.parse_authenticate(data, version=version)
    asm = jt808.Reassembler(max_messages=4)
    for frame in jt808.Framer().feed(b"\x7e" + data + b"\x7e"):
        with contextlib.suppress(ValueError):
            asm.feed(jt808.decode(frame), now_s=0)
    assert asm.pending <= 4


@FUZZ
@given(st.integers(0, 0xFFFF), st.from_regex(r"[0-9]{1,12}", fullmatch=True),
       st.integers(0, 0xFFFF), st.binary(max_size=60), st.sampled_from([None, 1]))
def test_fuzz_encode_decode_round_trip(msg_id: int, phone: str, serial: int, body: bytes,
                                       version: int | None) -> None:
    msg = jt808.decode(jt808.encode(msg_id, phone, serial, body, version=version))
    assert (msg.msg_id, msg.phone, msg.serial, msg.body, msg.version) == (
        msg_id, phone.lstrip("0") or "0", serial, body, version)


def test_a_truncated_frame_says_whether_the_header_or_the_body_is_short() -> None:
    """f14 #10: a location body cut mid-field said "the header needs 41"."""
    for cut in (20, 30, 40):
        with pytest.raises(ValueError, match=r"^truncated: \d+ bytes, the body needs \d+"):
            jt808.decode(LOCATION[:cut])
    frame = _checked(bytes.fromhex("0002400001000000000138001380000001")[:9])
    with pytest.raises(ValueError, match=r"^truncated: \d+ bytes, the header needs \d+"):
        jt808.decode(frame)
