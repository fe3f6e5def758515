"""Pure codecs: vectors from firmware_notes/ (and design/devices.md), and fuzzing: garbage
only ever raises ValueError, never anything else, never hangs."""

from __future__ import annotations

import contextlib
import datetime as dt
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.drivers._codecs import modbus_frames, nmea, sdm120, syn6288, witmotion

# pytest's 120 s default is close to a codec fuzzer at 100 k on a busy 2-core box
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(
    120 + int(os.environ.get("FUZZ_EXAMPLES", "3000")) // 250)]

# 10 k examples per parser in CI; make faults runs 100 k (R12)
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))
# a hang is a failure: each example must finish within 1 s (pure codecs take microseconds)
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=dt.timedelta(seconds=1),
                suppress_health_check=[HealthCheck.too_slow])


def test_modbus_crc_matches_the_published_request() -> None:
    assert modbus_frames.read_request(0x50, 3, 0x3D, 3) == bytes.fromhex("5003003D00039986")
    assert modbus_frames.read_request(1, 4, 0, 2) == bytes.fromhex("01040000000271CB")


def test_witmotion_reply_vector() -> None:
    reply = bytes.fromhex("5003060AABFE39400025B1")
    words = modbus_frames.parse_read_response(reply, 0x50, 3, 3)
    angles = witmotion.decode_angles([*words, 2000])
    assert angles["tilt_x_deg"] == pytest.approx(15.0, abs=0.01)
    assert angles["tilt_y_deg"] == pytest.approx(-2.5, abs=0.01)
    assert angles["yaw_deg"] == pytest.approx(90.0, abs=0.01)
    assert angles["temperature_c"] == 20.0


def test_witmotion_encode_decode_round_trip() -> None:
    words = witmotion.encode_angles(38.5, -2.1, 0, 21.5)
    values = witmotion.decode_angles(words)
    assert values["tilt_x_deg"] == pytest.approx(38.5, abs=0.01)
    assert witmotion.tilt_deg(values) == pytest.approx(38.5, abs=0.01)
    assert witmotion.tilt_deg(values, baseline_deg=3.0) == pytest.approx(35.5, abs=0.01)


def test_sdm120_float_is_high_word_first() -> None:
    reply = bytes.fromhex("010404436680006FDF")
    words = modbus_frames.parse_read_response(reply, 1, 4, 2)
    assert sdm120.float_abcd(*words) == pytest.approx(230.5)
    assert sdm120.float_abcd(words[1], words[0]) == pytest.approx(-2.4e-41, rel=0.1)


def test_bad_crc_and_wrong_unit_are_refused() -> None:
    reply = bytearray.fromhex("5003060AABFE39400025B1")
    reply[4] ^= 0x01
    with pytest.raises(ValueError, match="CRC"):
        modbus_frames.parse_read_response(bytes(reply), 0x50, 3, 3)
    other = modbus_frames.with_crc(bytes.fromhex("5103060AABFE394000"))
    with pytest.raises(ValueError, match="unit 81"):
        modbus_frames.parse_read_response(other, 0x50, 3, 3)


def test_syn6288_frames_match_published_vectors() -> None:
    assert syn6288.frame(syn6288.CMD_STATUS) == bytes.fromhex("FD000221DE")
    assert syn6288.frame(syn6288.CMD_STOP) == bytes.fromhex("FD000202FD")
    assert syn6288.speak("井盖异常") == bytes.fromhex("FD000B0100BEAEB8C7D2ECB3A3B6")
    assert syn6288.parse_frame(syn6288.speak("井盖异常"))[0] == syn6288.CMD_SPEAK
    assert syn6288.parse_status(b"\x41\x4e") is True


def test_syn6288_refuses_overlong_text() -> None:
    with pytest.raises(ValueError, match="200"):
        syn6288.speak("路" * 101)


def test_nmea_example_fix() -> None:
    line = "$GNRMC,021152.000,A,2929.000108,N,10629.000282,E,0.003,316.55,020717,,E,A*09"
    tracker = nmea.NmeaTracker()
    assert tracker.feed(nmea.parse_sentence(line)) is None  # its cycle may go on
    fix = tracker.flush()
    assert fix is not None
    assert fix.mode == 2  # RMC alone: no altitude
    assert fix.utc == dt.datetime(2017, 7, 2, 2, 11, 52, tzinfo=dt.UTC)
    assert fix.lat == pytest.approx(29.4833351, abs=1e-7)
    assert fix.lon == pytest.approx(106.4833380, abs=1e-7)
    assert fix.speed_kmh == pytest.approx(0.0056, abs=1e-4)


@pytest.mark.parametrize("line", [
    "$GPRMC,080919.091,V,,,,,0.00,0.00,231113,,,N*4F",
    "$GPGGA,080919.091,,,,,0,0,,,M,,M,,*49",
])
def test_nmea_no_fix_sentences_give_no_fix(line: str) -> None:
    tracker = nmea.NmeaTracker()
    assert tracker.feed(nmea.parse_sentence(line)) is None
    assert tracker.flush() is None


def test_nmea_rejects_null_island_and_bad_checksum() -> None:
    body = "GPRMC,120000.00,A,0000.0000,N,00000.0000,E,0.0,0.0,010126,,,A"
    with pytest.raises(ValueError, match="0,0"):
        nmea.NmeaTracker().feed(nmea.parse_sentence(f"${body}*{nmea.checksum(body)}"))
    with pytest.raises(ValueError, match="checksum"):
        nmea.parse_sentence(f"${body}*00")


def test_nmea_gga_after_midnight_takes_the_next_day() -> None:
    tracker = nmea.NmeaTracker()
    rmc = nmea.rmc(dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=dt.UTC), 31.3, 120.6, 10, 90)
    tracker.feed(nmea.parse_sentence(rmc))
    body = "GNGGA,000000.00,3118.0000,N,12036.0000,E,1,08,1.0,10.0,M,0.0,M,,"
    before = tracker.feed(nmea.parse_sentence(f"${body}*{nmea.checksum(body)}"))
    assert before is not None
    assert before.utc == dt.datetime(2026, 11, 25, 23, 59, 59, tzinfo=dt.UTC)
    fix = tracker.flush()
    assert fix is not None
    assert fix.utc == dt.datetime(2026, 11, 26, 0, 0, 0, tzinfo=dt.UTC)


@FUZZ
@given(st.binary(max_size=120))
def test_fuzz_modbus_response(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        modbus_frames.parse_read_response(data, 0x50, 3, 4)


@FUZZ
@given(st.lists(st.integers(-100, 0x1_0010), max_size=6))
def test_fuzz_witmotion_registers(words: list[int]) -> None:
    with contextlib.suppress(ValueError):
        witmotion.decode_angles(words)


@FUZZ
@given(st.lists(st.integers(0, 0xFFFF), min_size=14, max_size=14))
def test_fuzz_sdm120_registers(words: list[int]) -> None:
    try:
        values = sdm120.decode_meter(words)
    except ValueError:
        return
    assert all(abs(v) <= 1e6 for v in values.values())


@FUZZ
@given(st.binary(max_size=64))
def test_fuzz_syn6288_frames(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        syn6288.parse_frame(data)


@FUZZ
@given(st.text(alphabet=st.characters(codec="latin-1"), max_size=100)
       | st.builds(lambda b: f"$GNRMC,{b}", st.text(max_size=80)))
def test_fuzz_nmea(line: str) -> None:
    tracker = nmea.NmeaTracker()
    with contextlib.suppress(ValueError):
        tracker.feed(nmea.parse_sentence(line))


@FUZZ
@given(st.lists(st.sampled_from(["RMC", "GGA"]), max_size=5),
       st.lists(st.text(alphabet="0123456789.,NSEWAV-", max_size=12), min_size=14, max_size=14))
def test_fuzz_nmea_fields_with_valid_checksums(types: list[str], fields: list[str]) -> None:
    tracker = nmea.NmeaTracker()
    for kind in types:
        body = f"GN{kind}," + ",".join(fields)
        with contextlib.suppress(ValueError):
            tracker.feed(nmea.parse_sentence(f"${body}*{nmea.checksum(body)}"))
    tracker.flush()


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["RMC", "GGA", "GSA", "VTG", "GSV", "GLL", "GNS"]),
                          st.sampled_from(["040000.00", "040001.00", "", "235959.00"]),
                          st.lists(st.sampled_from(["A", "V", "1", "3", "12.0", "3118.0",
                                                    "N", "E", "261126", ""]), max_size=14)),
                max_size=30))
def test_fuzz_nmea_cycles(sentences: list[tuple[str, str, list[str]]]) -> None:
    """Cycles of mixed sentences: at most one fix per cycle time, modes 2 or 3 only."""
    tracker = nmea.NmeaTracker()
    fixes = []
    for kind, when, rest in sentences:
        body = f"GN{kind},{when}," + ",".join(rest)
        with contextlib.suppress(ValueError):
            fixes.append(tracker.feed(nmea.parse_sentence(f"${body}*{nmea.checksum(body)}")))
    fixes.append(tracker.flush())
    assert all(f.mode in (2, 3) for f in fixes if f is not None)


def test_vtg_speed_and_gsa_mode_feed_gga_fixes() -> None:
    tracker = nmea.NmeaTracker()
    rmc = nmea.rmc(dt.datetime(2026, 11, 26, 4, 0, 0, tzinfo=dt.UTC), 31.3, 120.6, 10, 90)
    tracker.feed(nmea.parse_sentence(rmc))
    gga = "GNGGA,040001.00,3118.0000,N,12036.0000,E,1,08,1.3,12.0,M,0.0,M,,"
    first = tracker.feed(nmea.parse_sentence(f"${gga}*{nmea.checksum(gga)}"))
    assert first is not None
    assert (first.speed_kmh, first.mode) == (18.52, 2)  # the RMC cycle
    for body in ("GNVTG,271.5,T,,M,20.0,N,37.0,K,A", "GNGSA,A,2,01,02,03,,,,,,,,,,2.5,1.3,2.1"):
        assert tracker.feed(nmea.parse_sentence(f"${body}*{nmea.checksum(body)}")) is None
    fix = tracker.flush()  # GGA, VTG and GSA of one cycle
    assert fix is not None
    assert (fix.speed_kmh, fix.course_deg, fix.mode) == (37.0, 271.5, 2)
    assert tracker.hdop == 1.3


def test_ip_speaker_status_codec() -> None:
    from edge.drivers._codecs import ip_speaker

    status = ip_speaker.decode_status(b'{"state":"idle","amp_fault":false,"id":"c1-1",'
                                      b'"result":"played"}')
    assert (status.playing, status.amp_fault, status.play_id, status.result) == \
        (False, False, "c1-1", "played")
    for bad in (b"", b"[]", b'{"state":"on"}', b'{"state":"idle","result":"maybe","id":"x"}'):
        with pytest.raises(ValueError):
            ip_speaker.decode_status(bad)
    assert b'"priority": "emergency"' in ip_speaker.encode_play("p", "疏散", 16, emergency=True)


@FUZZ
@given(st.binary(max_size=80) | st.builds(lambda d: __import__("json").dumps(d).encode(),
                                          st.dictionaries(st.sampled_from(
                                              ["state", "amp_fault", "id", "result"]),
                                              st.none() | st.booleans() | st.text(max_size=8))))
def test_fuzz_ip_speaker_status(data: bytes) -> None:
    from edge.drivers._codecs import ip_speaker

    with contextlib.suppress(ValueError):
        ip_speaker.decode_status(data)


def test_pzem004t_vector_low_word_first() -> None:
    from edge.drivers._codecs import pzem004t

    reply = bytes.fromhex("01041408FD01C40000 03D90000 11700001 01F4005F0000EE6E".replace(" ", ""))
    words = modbus_frames.parse_read_response(reply, 1, 4, 10)
    values = pzem004t.decode(words)
    assert values == {"voltage_v": 230.1, "current_a": 0.452, "power_w": 98.5,
                      "energy_wh": 70_000.0, "frequency_hz": 50.0, "power_factor": 0.95,
                      "alarm": False}


def test_sunspec304_vector() -> None:
    from edge.drivers._codecs import sunspec304

    words = [304, 6, 0x0000, 0x05FE, 0xFFFF, 0xFF06, 0, 0]
    assert sunspec304.decode(words) == {"tilt_x_deg": 15.34, "tilt_y_deg": -2.5,
                                        "tilt_z_deg": 0.0}
    with pytest.raises(ValueError, match="model id"):
        sunspec304.decode([1, 6, 0, 0, 0, 0, 0, 0])


@FUZZ
@given(st.lists(st.integers(-5, 0x1_0005), max_size=12))
def test_fuzz_pzem_and_sunspec(words: list[int]) -> None:
    from edge.drivers._codecs import pzem004t, sunspec304

    with contextlib.suppress(ValueError):
        pzem004t.decode(words)
    with contextlib.suppress(ValueError):
        sunspec304.decode(words)


@pytest.mark.parametrize("fields", [
    ("0000001E303", "A", "3118.0000", "N", "12036.0000", "E", "0", "0", "261126", "", ""),
    ("120000", "A", "31NAN", "N", "12036.0000", "E", "0", "0", "261126", "", ""),
    ("120000", "A", "3118.0000", "N", "12036.0000", "E", "inf", "0", "261126", "", ""),
], ids=["exponent-time", "nan-coordinate", "inf-speed"])
def test_nmea_numbers_are_plain_decimals(fields: tuple[str, ...]) -> None:
    """float() takes "1E303", "NAN" and "inf"; NMEA never sends them (found by fuzzing)."""
    from edge.drivers._codecs import nmea

    body = "GPRMC," + ",".join(fields)
    with pytest.raises(ValueError, match="bad"):
        nmea.NmeaTracker().feed(nmea.parse_sentence(f"${body}*{nmea.checksum(body)}"))
