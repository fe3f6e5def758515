"""What the simulated devices put on the wire, written from firmware_notes/ alone.

Independent of ``edge.drivers._codecs`` on purpose (issue 14 #9): when a simulator encodes with
the agent's own codec, a mistake made the same way on both sides (a swapped word order, a wrong
scale, a wrong register) passes every end-to-end test. Everything here is ``struct`` and the
register tables of the notes; tests/test_golden_images.py holds both sides to literal images
from the notes.
"""

from __future__ import annotations

import struct

# ---- Modbus RTU framing (firmware_notes/modbus-rtu-timing.md): CRC-16/MODBUS, poly 0xA001
# (reflected 0x8005), init 0xFFFF, appended low byte first


def modbus_crc(data: bytes) -> bytes:
    """Return the two CRC bytes a Modbus RTU frame ends with (low byte first)."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def with_modbus_crc(data: bytes) -> bytes:
    """Return ``data`` followed by its CRC."""
    return data + modbus_crc(data)


def modbus_crc_ok(frame: bytes) -> bool:
    """Return whether ``frame`` ends with the CRC of what precedes it."""
    return len(frame) >= 4 and modbus_crc(frame[:-2]) == frame[-2:]


# ---- the simulators' own control (no device has these): fault modes and lamp scenarios,
# written through Modbus itself. Here, not in modbus_sim.py, so that `python -m hil tilt`
# and its argument parser need not import pymodbus' server (which imports aiohttp: ~0.4 s)

MODBUS_FAULTS = ("none", "dead", "slow", "exception", "crc", "garbage", "wrong_unit")
# Modbus TCP has no CRC and one unit per connection's reply: crc, garbage and wrong_unit
# exist only on the RTU line simulator (hil.sims.rtu_sim)
TCP_FAULTS = ("none", "dead", "slow", "exception")
FAULT_REGISTER = 0x7F00
SCENARIO_REGISTER = 0x7F01
# lamp scenarios (design/devices.md §2.4, lamp-controller simulator faults)
LAMP_SCENARIOS = ("normal", "lamp_failure", "power_loss", "overcurrent")


# ---- WitMotion inclinometer (firmware_notes/witmotion-inclinometer.md#angles): holding
# 0x3D roll, 0x3E pitch, 0x3F yaw as big-endian int16 of deg / 180 x 32768; 0x40 temperature
# int16 in 0.01 degC

WITMOTION_ANGLE_REGISTER = 0x3D


def _int16_clamped(value: float) -> int:
    return max(-32768, min(32767, round(value)))


def witmotion_words(roll_deg: float, pitch_deg: float, yaw_deg: float = 0.0,
                    temperature_c: float = 20.0) -> list[int]:
    """Return registers 0x3D-0x40 of a sensor at these angles."""
    raw = struct.pack(">4h", *(_int16_clamped(d * 32768 / 180)
                               for d in (roll_deg, pitch_deg, yaw_deg)),
                      _int16_clamped(temperature_c * 100))
    return list(struct.unpack(">4H", raw))


# ---- SunSpec model 304 (firmware_notes/sunspec304.md): ID 304, L = 6 per group, then Inclx,
# Incly, Inclz as int32 high word first, scale factor -2 (hundredths of a degree)

SUNSPEC_MARKER = (0x5375, 0x6E53)  # "SunS"
SUNSPEC_304_ID = 304
SUNSPEC_END = 0xFFFF


def sunspec304_words(x_deg: float, y_deg: float, z_deg: float = 0.0) -> list[int]:
    """Return ID, L and one group (8 registers) of model 304."""
    raw = struct.pack(">HH3i", SUNSPEC_304_ID, 6, *(round(d * 100) for d in (x_deg, y_deg, z_deg)))
    return list(struct.unpack(">8H", raw))


# ---- Eastron SDM120 (firmware_notes/sdm120.md): input registers, float32 big-endian, high
# word first (ABCD); and our lamp controller: coil 0 relay, holding 0x0100 dim %

SDM120_VOLTAGE, SDM120_CURRENT, SDM120_POWER = 0x0000, 0x0006, 0x000C
LAMP_RELAY_COIL, LAMP_DIM_REGISTER = 0x0000, 0x0100


def float32_abcd(value: float) -> list[int]:
    """Return the two registers of a float32, high word first."""
    return list(struct.unpack(">2H", struct.pack(">f", value)))


# ---- PZEM-004T v3 (firmware_notes/pzem004t.md): input 0x0000 voltage 0.1 V; 32-bit current
# 0.001 A, power 0.1 W, energy 1 Wh LOW word first (CDAB); frequency 0.1 Hz, PF 0.01, alarm


def _u32_low_word_first(value: int) -> list[int]:
    high, low = struct.unpack(">2H", struct.pack(">I", value))
    return [low, high]


def pzem004t_words(*, voltage_v: float, current_a: float, power_w: float,
                   energy_wh: int = 0, frequency_hz: float = 50.0, power_factor: float = 0.95,
                   alarm: bool = False) -> list[int]:
    """Return input registers 0x0000-0x0009."""
    return [round(voltage_v * 10), *_u32_low_word_first(round(current_a * 1000)),
            *_u32_low_word_first(round(power_w * 10)), *_u32_low_word_first(energy_wh),
            round(frequency_hz * 10), round(power_factor * 100), 0xFFFF if alarm else 0]


# ---- SYN6288 TTS frames (firmware_notes/syn6288-tts.md): FD LenH LenL Cmd [Param] Data XOR;
# Len counts from Cmd through XOR; XOR over every byte before it, FD included

SYN_HEADER = 0xFD
SYN_SPEAK, SYN_STOP, SYN_STATUS = 0x01, 0x02, 0x21
SYN_IDLE, SYN_BUSY, SYN_OK, SYN_ERROR = b"\x41\x4f", b"\x41\x4e", b"\x41", b"\x45"
SYN_ENCODINGS = {0: "gb2312", 1: "gbk", 2: "big5", 3: "utf-16be"}


# not a SYN6288 command: the simulator's own fault switch, so `python -m hil fault` needs no
# side channel (as the Modbus simulators' fault register); payload: the mode in ASCII
SIM_CONTROL = 0x7F


def syn6288_frame(cmd: int, payload: bytes) -> bytes:
    """Return FD LenH LenL Cmd payload XOR."""
    body = bytes([SYN_HEADER]) + struct.pack(">H", len(payload) + 2) + bytes([cmd]) + payload
    xor = 0
    for byte in body:
        xor ^= byte
    return body + bytes([xor])


def syn6288_split(frame: bytes) -> tuple[int, bytes]:
    """Return (cmd, param + data) of one whole frame; ValueError when it is not one."""
    if len(frame) < 5 or frame[0] != SYN_HEADER:
        raise ValueError("not a frame")
    (length,) = struct.unpack(">H", frame[1:3])
    if length != len(frame) - 3:
        raise ValueError("length mismatch")
    xor = 0
    for byte in frame[:-1]:
        xor ^= byte
    if xor != frame[-1]:
        raise ValueError("bad XOR")
    return frame[3], frame[4:-1]


def syn6288_text(payload: bytes) -> str:
    """Return the text of a speak frame's param + data (param bits 0-2: the encoding)."""
    return payload[1:].decode(SYN_ENCODINGS[payload[0] & 0x07])


# ---- NMEA 0183 (firmware_notes/nmea-gnss.md): $ address , fields * XOR of everything between
# $ and *, two hex digits, CRLF


# a proprietary sentence ($P...) no receiver sends: the GPS simulator's fault switch
# ($PSIMF,<mode>), written to it by `python -m hil fault`
SIM_FAULT_SENTENCE = "PSIMF"


def nmea_sentence(body: str) -> str:
    """Return ``$body*hh`` and CRLF."""
    xor = 0
    for char in body.encode("ascii"):
        xor ^= char
    return f"${body}*{xor:02X}\r\n"


def _dm(value: float, width: int) -> str:
    whole = int(abs(value))
    return f"{whole:0{width}d}{(abs(value) - whole) * 60:09.6f}"


def nmea_rmc(hhmmss_cc: str, ddmmyy: str, lat_deg: float, lon_deg: float, *, knots: float,
             course_deg: float, talker: str = "GN", fix: bool = True) -> str:
    """Return an RMC: status A (``fix``) or V, ddmm.mmmmmm / dddmm.mmmmmm with hemispheres."""
    status, mode = ("A", "A") if fix else ("V", "N")
    return nmea_sentence(
        f"{talker}RMC,{hhmmss_cc},{status},{_dm(lat_deg, 2)},{'N' if lat_deg >= 0 else 'S'},"
        f"{_dm(lon_deg, 3)},{'E' if lon_deg >= 0 else 'W'},{knots:.3f},{course_deg:.2f},"
        f"{ddmmyy},,,{mode}")


def nmea_gga(hhmmss_cc: str, lat_deg: float, lon_deg: float, *, satellites: int,
             hdop: float, altitude_m: float = 12.0, talker: str = "GN",
             fix: bool = True) -> str:
    """Return a GGA: fix quality 1 (GPS) or 0 (no fix), satellites in use, HDOP, altitude."""
    return nmea_sentence(
        f"{talker}GGA,{hhmmss_cc},{_dm(lat_deg, 2)},{'N' if lat_deg >= 0 else 'S'},"
        f"{_dm(lon_deg, 3)},{'E' if lon_deg >= 0 else 'W'},{1 if fix else 0},"
        f"{satellites:02d},{hdop:.1f},{altitude_m:.1f},M,7.0,M,,")


def nmea_gsa(prns: list[int], *, pdop: float, hdop: float, vdop: float, talker: str = "GN",
             fix: bool = True) -> str:
    """Return a GSA: automatic mode, 3D fix (3) or none (1), up to 12 satellites used."""
    used = [f"{p:02d}" for p in prns[:12]] + [""] * (12 - min(12, len(prns)))
    return nmea_sentence(f"{talker}GSA,A,{3 if fix else 1},{','.join(used)},"
                         f"{pdop:.1f},{hdop:.1f},{vdop:.1f}")
