"""Golden register images from the vendor notes, against the codec AND the simulator (issue 14 #9).

Every image is a literal, worked out by hand from the note it cites (the arithmetic is in the
comment), never produced by our code. Each is checked twice: the agent's codec decodes it to
the note's values, and the simulator serves exactly it for those values. The simulators encode
with hil/sims/wire.py, never with the agent's codecs, so a mistake made the same way on both
sides cannot pass (the last test keeps it that way).
"""

from __future__ import annotations

import ast
import asyncio
import datetime as dt
import os
from pathlib import Path

import pytest

from edge.drivers._codecs import (
    ip_speaker,
    modbus_frames,
    nmea,
    pzem004t,
    sdm120,
    sunspec304,
    syn6288,
    witmotion,
)
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto, free_port
from hil.sims import modbus_sim, wire
from hil.sims.ip_speaker import IpSpeakerSim
from hil.sims.rtu_sim import RtuLineSim
from hil.sims.serial_sims import GpsSim, TtsSim

ROOT = Path(__file__).resolve().parents[1]

# Source: firmware_notes/witmotion-inclinometer.md, section Angles: the angle is the int16
# times 180 over 32768, register 0x40 the temperature in hundredths of a degree C.
# 15.00 deg -> 2730.7 -> 2731 = 0x0AAB; -2.50 -> -455.1 -> -455 = 0xFE39; 90 -> 16384 = 0x4000;
# 20.00 degC -> 2000 = 0x07D0 (the note's vector, plus the temperature register)
WITMOTION_0X3D = [0x0AAB, 0xFE39, 0x4000, 0x07D0]
WITMOTION_VALUES = {"tilt_x_deg": 15.0, "tilt_y_deg": -2.5, "yaw_deg": 90.0,
                    "temperature_c": 20.0}
# 40.00 -> 7281.8 -> 7282 = 0x1C72; -30.00 -> -5461.3 -> -5461 = 0xEAAB; 0 -> 0;
# -5.25 degC -> -525 = 0xFDF3
WITMOTION_0X3D_B = [0x1C72, 0xEAAB, 0x0000, 0xFDF3]
WITMOTION_VALUES_B = {"tilt_x_deg": 40.0, "tilt_y_deg": -30.0, "yaw_deg": 0.0,
                      "temperature_c": -5.25}

# firmware_notes/sunspec304.md: "SunS" 5375 6E53 at 40000, model 1 (ID 1, L 66, zeros),
# model 304 at 40070: ID 0x0130, L 6, Inclx 15.34 -> 1534 = 0x0000 05FE,
# Incly -2.50 -> -250 = 0xFFFF FF06, Inclz 0; end marker FFFF 0000 at 40078
SUNSPEC_IMAGE = {40000: 0x5375, 40001: 0x6E53, 40002: 1, 40003: 66,
                 **{40004 + i: 0 for i in range(66)},
                 40070: 0x0130, 40071: 6, 40072: 0x0000, 40073: 0x05FE, 40074: 0xFFFF,
                 40075: 0xFF06, 40076: 0x0000, 40077: 0x0000, 40078: 0xFFFF, 40079: 0x0000}
SUNSPEC_VALUES = {"tilt_x_deg": 15.34, "tilt_y_deg": -2.5, "tilt_z_deg": 0.0}

# firmware_notes/sdm120.md: input 0x00 voltage, 0x06 current, 0x0C power, float32 ABCD.
# 230.5 = 1.80078125 x 2^7: exp 134 (0x86), mantissa 0x668000 -> 0x4366 8000 (the note's vector)
# 0.5 = 1.0 x 2^-1: exp 126 -> 0x3F00 0000; 98.5 = 1.5390625 x 2^6: exp 133, mantissa 0x450000
# -> 0x42C5 0000
SDM120_0X00 = [0x4366, 0x8000, 0, 0, 0, 0, 0x3F00, 0x0000, 0, 0, 0, 0, 0x42C5, 0x0000]
SDM120_VALUES = {"voltage_v": 230.5, "current_a": 0.5, "power_w": 98.5}

# lamp controller (firmware_notes/sdm120.md#lamp-controller): coil 0 relay, holding 0x0100 dim.
# 100 W lamp on 200 V at dim 50 %: 50 W, 0.25 A. 200.0 = 1.5625 x 2^7 -> 0x4348 0000;
# 0.25 = 2^-2 -> 0x3E80 0000; 50.0 = 1.5625 x 2^5 -> 0x4248 0000
LAMP_DIM50_0X00 = [0x4348, 0, 0, 0, 0, 0, 0x3E80, 0, 0, 0, 0, 0, 0x4248, 0]
# scenario power_loss: 150 V and dark. 150.0 = 1.171875 x 2^7 -> mantissa 0x160000 -> 0x4316 0000
LAMP_POWER_LOSS_0X00 = [0x4316, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]

# firmware_notes/pzem004t.md, the note's reply: 230.1 V -> 2301 = 0x08FD; 0.452 A -> 452 =
# 0x01C4 (low word), 0x0000; 98.5 W -> 985 = 0x03D9, 0x0000; 70,000 Wh = 0x0001 1170 -> low
# 0x1170, high 0x0001; 50.0 Hz -> 0x01F4; PF 0.95 -> 0x005F; alarm off 0x0000
PZEM_0X00 = [0x08FD, 0x01C4, 0x0000, 0x03D9, 0x0000, 0x1170, 0x0001, 0x01F4, 0x005F, 0x0000]
PZEM_VALUES = {"voltage_v": 230.1, "current_a": 0.452, "power_w": 98.5, "energy_wh": 70000.0,
               "frequency_hz": 50.0, "power_factor": 0.95, "alarm": False}

# firmware_notes/syn6288-tts.md vectors: status FD 00 02 21 (XOR FD^00^02^21 = DE);
# stop FD 00 02 02 (XOR = FD); "井盖异常" GB2312 BEAE B8C7 D2EC B3A3, Len 0x0B, param 00
SYN_STATUS = bytes.fromhex("FD000221DE")
SYN_STOP = bytes.fromhex("FD000202FD")
SYN_SPEAK = bytes.fromhex("FD000B0100BEAEB8C7D2ECB3A3B6")

# firmware_notes/witmotion-inclinometer.md: request 50 03 003D 0003 + CRC 99 86; reply
# 50 03 06 0AAB FE39 4000 + CRC 25 B1
WITMOTION_REQUEST = bytes.fromhex("5003003D00039986")
WITMOTION_REPLY = bytes.fromhex("5003060AABFE39400025B1")
# the request the codec really sends (f14 #8): 0x3D-0x40, 4 registers, CRC D8 44 by hand
# (CRC-16/MODBUS: init 0xFFFF, poly 0xA001 reflected, low byte first); the reply carries
# WITMOTION_0X3D (roll 15.00, pitch -2.50, yaw 90.00, 20.00 degC), CRC 95 28 by hand
WITMOTION_REQUEST_4 = bytes.fromhex("5003003D0004D844")
WITMOTION_REPLY_4 = bytes.fromhex("5003080AABFE39400007D09528")

# firmware_notes/ip-speaker.md, the topics table and its vectors: UTF-8 JSON, keys in the
# table's order. 井盖异常 = U+4E95 U+76D6 U+5F02 U+5E38; three-byte UTF-8 (1110xxxx 10xxxxxx
# 10xxxxxx): 4E95 -> E4 BA 95, 76D6 -> E7 9B 96, 5F02 -> E5 BC 82, 5E38 -> E5 B8 B8
IP_SPEAKER_PLAY = (b'{"id": "c1", "text": "\xe4\xba\x95\xe7\x9b\x96\xe5\xbc\x82\xe5\xb8\xb8", '
                   b'"volume": 8, "priority": "emergency"}')
IP_SPEAKER_PLAYED = b'{"id": "c1", "result": "played", "state": "idle", "amp_fault": false}'
IP_SPEAKER_IDLE = b'{"state": "idle", "amp_fault": false}'
IP_SPEAKER_PLAYING = b'{"state": "playing", "amp_fault": false}'
IP_SPEAKER_AMP_FAULT = b'{"state": "idle", "amp_fault": true}'


def _block(unit: modbus_sim.SimUnit, table: str, start: int, count: int) -> list[int]:
    regs = unit.holding if table == "holding" else unit.inputs
    return [int(regs[a]) for a in range(start, start + count)]


@pytest.mark.parametrize(("image", "values", "angles"), [
    (WITMOTION_0X3D, WITMOTION_VALUES, (15.0, -2.5, 90.0, 20.0)),
    (WITMOTION_0X3D_B, WITMOTION_VALUES_B, (40.0, -30.0, 0.0, -5.25)),
])
def test_witmotion_golden(image: list[int], values: dict[str, float],
                          angles: tuple[float, float, float, float]) -> None:
    assert witmotion.decode_angles(image) == pytest.approx(values)
    assert wire.witmotion_words(*angles) == image
    if angles[2:] == (0.0, 20.0):  # what tilt_unit serves (yaw 0, 20 degC)
        unit = modbus_sim.tilt_unit(angles[0], angles[1])
        assert _block(unit, "holding", 0x3D, 4) == image
    unit = modbus_sim.tilt_unit(15.0, -2.5)
    assert _block(unit, "holding", 0x3D, 4) == [0x0AAB, 0xFE39, 0x0000, 0x07D0]


def test_sunspec304_golden() -> None:
    assert sunspec304.decode([SUNSPEC_IMAGE[40070 + i] for i in range(8)]) == \
        pytest.approx(SUNSPEC_VALUES)
    unit = modbus_sim.sunspec_unit(15.34, -2.5)
    assert {a: unit.holding[a] for a in SUNSPEC_IMAGE} == SUNSPEC_IMAGE


def test_sdm120_golden() -> None:
    assert sdm120.decode_meter(SDM120_0X00) == pytest.approx(SDM120_VALUES)
    unit = modbus_sim.SimUnit()
    modbus_sim.set_lamp(unit, voltage_v=230.5, current_a=0.5, power_w=98.5)
    assert _block(unit, "inputs", 0, 14) == SDM120_0X00


def test_lamp_controller_golden() -> None:
    unit = modbus_sim.lamp_unit(on=True, power_w=100.0)
    assert unit.lamp is not None
    unit.lamp.supply_v = 200.0
    unit.write(unit.holding, 0x0100, [50])  # dim 50 %, as light.set writes it
    assert unit.coils[0x0000] is True
    assert unit.holding[0x0100] == 50
    assert _block(unit, "inputs", 0, 14) == LAMP_DIM50_0X00
    assert sdm120.decode_meter(LAMP_DIM50_0X00) == pytest.approx(
        {"voltage_v": 200.0, "current_a": 0.25, "power_w": 50.0})
    unit.control(modbus_sim.SCENARIO_REGISTER, 2)  # power_loss
    assert _block(unit, "inputs", 0, 14) == LAMP_POWER_LOSS_0X00
    assert sdm120.decode_meter(LAMP_POWER_LOSS_0X00) == pytest.approx(
        {"voltage_v": 150.0, "current_a": 0.0, "power_w": 0.0})


def test_pzem004t_golden() -> None:
    assert pzem004t.decode(PZEM_0X00) == pytest.approx(PZEM_VALUES)
    unit = modbus_sim.pzem_unit(voltage_v=230.1, current_a=0.452, power_w=98.5, energy_wh=70000)
    assert _block(unit, "inputs", 0, 10) == PZEM_0X00


def test_modbus_rtu_golden_crc_both_sides() -> None:
    assert modbus_frames.read_request(0x50, 3, 0x3D, 3) == WITMOTION_REQUEST
    assert wire.with_modbus_crc(WITMOTION_REQUEST[:-2]) == WITMOTION_REQUEST
    assert wire.modbus_crc_ok(WITMOTION_REPLY)
    assert modbus_frames.parse_read_response(WITMOTION_REPLY, 0x50, 3, 3) == \
        WITMOTION_0X3D[:3]


def test_syn6288_golden_codec() -> None:
    assert syn6288.frame(syn6288.CMD_STATUS) == SYN_STATUS
    assert syn6288.frame(syn6288.CMD_STOP) == SYN_STOP
    assert syn6288.speak("井盖异常") == SYN_SPEAK
    assert wire.syn6288_split(SYN_SPEAK) == (0x01, bytes.fromhex("00BEAEB8C7D2ECB3A3"))


async def test_syn6288_golden_simulator() -> None:
    """The simulator, fed the note's literal frames, answers as the note says."""
    port = free_port()
    sim = TtsSim(port)
    await sim.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(SYN_STATUS)
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\x41\x4f"  # idle
        writer.write(SYN_SPEAK)
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x41"
        writer.write(SYN_STATUS)
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\x41\x4e"  # busy
        writer.write(SYN_STOP)
        assert await asyncio.wait_for(reader.readexactly(1), 5) == b"\x41"
        writer.close()
    finally:
        await sim.stop()
    assert sim.spoken == ["井盖异常"]


def test_ip_speaker_golden_codec() -> None:
    # the note: engine tags are stripped, volume is the only volume
    assert ip_speaker.encode_play("c1", "[v16]井盖异常", 8, emergency=True) == IP_SPEAKER_PLAY
    assert ip_speaker.decode_status(IP_SPEAKER_PLAYED) == ip_speaker.Status(
        playing=False, amp_fault=False, play_id="c1", result="played")
    assert ip_speaker.decode_status(IP_SPEAKER_PLAYING) == ip_speaker.Status(
        playing=True, amp_fault=False)
    assert ip_speaker.decode_status(IP_SPEAKER_AMP_FAULT) == ip_speaker.Status(
        playing=False, amp_fault=True)
    note = (ROOT / "firmware_notes" / "ip-speaker.md").read_text(encoding="utf-8")
    for body in (IP_SPEAKER_PLAY, IP_SPEAKER_PLAYED, IP_SPEAKER_IDLE, IP_SPEAKER_PLAYING,
                 IP_SPEAKER_AMP_FAULT):
        assert f"`{body.decode()}`" in note, body


async def test_ip_speaker_golden_simulator(plain_broker: Mosquitto) -> None:
    """The simulator, sent the note's literal play body, answers with the note's bytes."""
    topic = "speakers/golden"
    sim = IpSpeakerSim("127.0.0.1", plain_broker.port, topic)
    gateway = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="golden-gw",
                       protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
    await gateway.connect()
    assert await gateway.subscribe(f"{topic}/status")
    await sim.start()
    seen: list[bytes] = []

    async def until(body: bytes) -> None:
        while not seen or seen[-1] != body:
            seen.append((await gateway.next_inbound(10)).payload)

    try:
        await asyncio.wait_for(until(IP_SPEAKER_IDLE), 10)
        assert await gateway.publish(f"{topic}/play", IP_SPEAKER_PLAY) == 0
        await asyncio.wait_for(until(IP_SPEAKER_PLAYED), 10)
        sim.amp_fault = True
        await asyncio.wait_for(until(IP_SPEAKER_AMP_FAULT), 10)
    finally:
        await gateway.close()
        await sim.stop()
    # every byte the simulator sent is one of the note's bodies (a "playing" one only if a
    # periodic status fell within the 0.2 s of speech)
    assert set(seen) <= {IP_SPEAKER_IDLE, IP_SPEAKER_PLAYING, IP_SPEAKER_PLAYED,
                         IP_SPEAKER_AMP_FAULT}, seen
    assert sim.spoken == ["井盖异常"]


def test_gps_simulator_rmc_golden() -> None:
    # firmware_notes/nmea-gnss.md: checksum = XOR of the body. 31.3105 N = 31 deg 18.630000';
    # 120.6302 E = 120 deg 37.812000'; 10 kn, 90 deg, 2026-11-25 23:59:58. The body is
    # tests/data/nmea/midnight-ga.log's first RMC with talker GN for GA: *76 ^ ('A' ^ 'N' = 0F)
    golden = ("$GNRMC,235958.00,A,3118.630000,N,12037.812000,E,10.000,90.00,251126,,,A*79"
              "\r\n")
    when = dt.datetime(2026, 11, 25, 23, 59, 58, tzinfo=dt.UTC)
    assert GpsSim(0).rmc(when, 31.3105, 120.6302, knots=10.0, course_deg=90.0) == golden
    fix = nmea.NmeaTracker()
    fix.feed(nmea.parse_sentence(golden))
    got = fix.flush()
    assert got is not None
    assert got.utc == when
    assert (got.lat, got.lon, got.speed_kmh) == pytest.approx((31.3105, 120.6302, 18.52))


def test_simulators_do_not_import_the_agent_codecs() -> None:
    """Issue 14 #9: a simulator encoding with the agent's codec hides symmetric mistakes."""
    offenders = []
    for path in [*sorted((ROOT / "hil" / "sims").glob("*.py")), ROOT / "hil" / "tilt.py"]:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module == "edge.drivers":
                names = [f"edge.drivers.{a.name}" for a in node.names]
            offenders += [f"{path.name}: {n}" for n in names
                          if n.startswith("edge.drivers._codecs")]
    assert offenders == []


def test_witmotion_rtu_golden_four_registers_codec_and_simulator() -> None:
    """The note's vector read 3 registers while the codec reads 4 (f14 #8)."""
    block = witmotion.BLOCKS[0]
    assert (block.address, block.count) == (0x3D, 4)
    # the codec: the request it builds, the reply it parses, the values it decodes
    assert modbus_frames.read_request(0x50, block.function, block.address, block.count) == \
        WITMOTION_REQUEST_4
    words = modbus_frames.parse_read_response(WITMOTION_REPLY_4, 0x50, 3, 4)
    assert words == WITMOTION_0X3D
    assert witmotion.decode_angles(words) == pytest.approx(WITMOTION_VALUES)
    # the simulator (its own CRC, hil/sims/wire.py): the same frames both ways
    assert wire.with_modbus_crc(WITMOTION_REQUEST_4[:-2]) == WITMOTION_REQUEST_4
    assert wire.modbus_crc_ok(WITMOTION_REPLY_4)
    unit = modbus_sim.tilt_unit(15.0, -2.5)
    unit.holding[0x3F] = 0x4000  # yaw 90.00
    sim = RtuLineSim({0x50: unit})
    try:
        assert sim._reply(unit, 0x50, 3, WITMOTION_REQUEST_4[:-2]) == WITMOTION_REPLY_4
    finally:
        os.close(sim._master)
        os.close(sim._slave)
    # and the note says the same frames
    note = (ROOT / "firmware_notes" / "witmotion-inclinometer.md").read_text(encoding="utf-8")
    for frame in (WITMOTION_REQUEST_4, WITMOTION_REPLY_4):
        assert frame.hex(" ").upper() in note, frame.hex(" ")
