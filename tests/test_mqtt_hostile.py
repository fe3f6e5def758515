"""Southbound MQTT JSON devices against hostile payloads (issue 14 #1).

Covers, GPS trackers and IP speakers on a real mosquitto get NaN, ±Infinity, 1e400, deep
nesting, a 10 MB body, wrong types and non-UTF-8. Each is a counted rejection (``bad_values``
for a value, ``parse_errors`` for a payload), logged once; the driver keeps running, a
neighbouring device is unaffected, and every reading that leaves a driver encodes with
``allow_nan=False`` (what the event encoder uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config_loader import validate
from edge.drivers._codecs import ip_speaker, json_doc
from edge.drivers.base import Reading, stats_dict
from edge.drivers.gps import GpsMqttDriver
from edge.drivers.loudspeaker import LoudspeakerDriver
from edge.drivers.manhole_tilt import ManholeTiltMqttDriver
from edge.drivers.speaker_units import IpSpeakerUnit
from edge.errors import DeviceProtocolError
from edge.kinds.gps import GpsDevice
from edge.kinds.loudspeaker import LoudspeakerDevice
from edge.kinds.manhole_tilt import ManholeTiltDevice
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto
from hil.sims.ip_speaker import IpSpeakerSim
from tests.helpers import wait_event
from tests.recording_sink import RecordingSink
from tests.test_southbound_mqtt import ASSET, broker_for, until

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3000"))  # make faults: 100 k
FUZZ = settings(max_examples=FUZZ_EXAMPLES,
                deadline=timedelta(seconds=1), suppress_health_check=[HealthCheck.too_slow])

# (payload, what it is): whole payloads a device may never make a driver choke on
BAD_PAYLOADS: list[bytes] = [
    b"[" * 100_000,  # deep nesting: RecursionError inside json
    b"[" * 60_000,  # under the size cap, still too deep
    b'{"a": ' + b"[" * 5_000 + b"]" * 5_000 + b"}",
    b"{" + b" " * (10 * 1024 * 1024) + b"}",  # 10 MB
    b"\xff\xfe\xfd not utf-8",
    b'{"tilt": "\xff"}',
    b"[1, 2]",
    b"null",
    b'{"tilt": 1' + b"0" * 5_000 + b"}",  # an int literal past Python's 4,300 digits
]


def cover(name: str, topic: str) -> ManholeTiltDevice:
    return validate(ManholeTiltDevice, {
        "name": name, "kind": "manhole_tilt", "transport": "mqtt", "model": "mqtt_json",
        "topic": topic, "poll_interval_s": 30,
        "asset": {**ASSET, "code": "3205080106000999", "class": "0106"}})


def encodable(readings: list[Reading]) -> None:
    for r in readings:
        json.dumps(dict(r.values), allow_nan=False)


def test_reading_refuses_non_finite_and_out_of_type_values() -> None:
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError, match="battery_v"):
            Reading("d", {"battery_v": bad}, 0, 0)
    with pytest.raises(TypeError, match="nested"):
        Reading("d", {"nested": [1, 2]}, 0, 0)  # type: ignore[dict-item]
    Reading("d", {"ok": 1.5, "n": 3, "s": "x", "b": True, "none": None}, 0, 0)


async def test_hostile_cover_payloads_are_counted_and_the_driver_lives_on(
        plain_broker: Mosquitto, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="edge.drivers")
    brokers = [broker_for(plain_broker), broker_for(plain_broker)]
    victim = ManholeTiltMqttDriver(cover("cover-1", "covers/1"), brokers[0], timeout_s=30)
    bystander = ManholeTiltMqttDriver(cover("cover-2", "covers/2"), brokers[1], timeout_s=30)
    sink = RecordingSink()
    tasks = [asyncio.create_task(d.run(sink)) for d in (victim, bystander)]
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="evil", protocol="5",
                   keepalive_s=30, connect_timeout_s=5, tls=None)
    try:
        await pub.connect()
        for broker in brokers:
            await wait_event(broker.subscribed, 10, "both drivers' subscriptions")
        bad_values = [b'{"tilt": 2, "battery": NaN}', b'{"tilt": 2, "battery": Infinity}',
                      b'{"tilt": 2, "battery": -Infinity}', b'{"tilt": 2, "battery": 1e400}',
                      b'{"tilt": 2, "battery": "3.6"}', b'{"tilt": 2, "battery": [3.6]}',
                      b'{"tilt": 2, "battery": true}', b'{"tilt": 2, "battery": {"v": 1}}']
        for payload in [*bad_values, *BAD_PAYLOADS, b'{"tilt": NaN}']:
            await pub.publish("covers/1", payload)
            await pub.publish("covers/2", b'{"tilt": 1.0, "battery": 3.6}')
        await pub.publish("covers/1", b'{"tilt": 3.0, "battery": 3.5}')
        await until(lambda: sum(r.device == "cover-2" for r in sink.readings)
                    == len(bad_values) + len(BAD_PAYLOADS) + 1
                    and any(r.values.get("battery_v") == 3.5 for r in sink.readings), 30)
        assert all(not t.done() for t in tasks), "a driver died"
    finally:
        await pub.close()
        for t in tasks:
            t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await t
    encodable(sink.readings)
    mine = [r for r in sink.readings if r.device == "cover-1"]
    # a bad battery is refused on its own: the tilt of that report still counts
    assert len(mine) == len(bad_values) + 1
    assert all("battery_v" not in r.values for r in mine[:-1])
    assert victim.stats.bad_values == len(bad_values) + 1  # + the NaN tilt
    assert victim.stats.parse_errors == len(BAD_PAYLOADS) + 1  # + the report without tilt
    assert stats_dict(victim)["bad_values"] == victim.stats.bad_values  # status and metrics
    assert bystander.stats.bad_values == bystander.stats.parse_errors == 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.endswith("cover-1") and "battery_v" in r.getMessage()]
    assert len(warnings) == 1  # logged once, then DEBUG
    refusals = [r for r in caplog.records if r.levelno >= logging.WARNING
                and r.name.endswith("cover-1") and "message refused" in r.getMessage()]
    assert len(refusals) == 1


async def test_hostile_tracker_payloads(plain_broker: Mosquitto) -> None:
    device = validate(GpsDevice, {
        "name": "patrol-9", "kind": "gps", "transport": "mqtt", "model": "mqtt_json",
        "topic": "trackers/9", "min_distance_m": 0, "asset": ASSET})
    broker = broker_for(plain_broker)
    driver = GpsMqttDriver(device, broker)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="evil-gps",
                   protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
    base = '"lat": 31.3, "lon": 120.6'
    refused_fixes = ['{"lat": NaN, "lon": 120.6, "time": 1795000000}',
                     '{"lat": 1e400, "lon": 120.6}', '{"lat": 31.3, "lon": true}',
                     f'{{{base}, "time": 1e400}}', f'{{{base}, "time": 1e300}}',
                     f'{{{base}, "time": -1e15}}', f'{{{base}, "time": [1]}}',
                     f'{{{base}, "time": "2026-13-45"}}']
    value_only = [f'{{{base}, "speed_kmh": NaN}}', f'{{{base}, "course_deg": -Infinity}}',
                  f'{{{base}, "speed_kmh": "fast"}}']
    try:
        await pub.connect()
        await wait_event(broker.subscribed, 10, "the tracker's subscription")
        for text in [*refused_fixes, *value_only]:
            await pub.publish("trackers/9", text.encode())
        for payload in BAD_PAYLOADS:
            await pub.publish("trackers/9", payload)
        await pub.publish("trackers/9", f'{{{base}, "speed_kmh": 12.5}}'.encode())
        await until(lambda: any(r.values.get("speed_kmh") == 12.5 for r in sink.readings), 30)
        assert not task.done()
    finally:
        await pub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    encodable(sink.readings)
    assert len(sink.readings) == len(value_only) + 1
    assert driver.rejected == len(refused_fixes) + len(BAD_PAYLOADS)
    assert driver.stats.bad_values >= len(refused_fixes) + len(value_only) - 1
    assert sink.gnss == []


async def test_hostile_speaker_status_payloads(plain_broker: Mosquitto) -> None:
    sim = IpSpeakerSim("127.0.0.1", plain_broker.port, "speakers/x")
    await sim.start()
    device = validate(LoudspeakerDevice, {
        "name": "ipspk-9", "kind": "loudspeaker", "transport": "mqtt", "model": "ip_speaker",
        "topic": "speakers/x", "poll_interval_s": 0.5, "asset": {
            **ASSET, "code": "3205082105000009", "class": "2105"}})
    unit = IpSpeakerUnit("ipspk-9", broker_for(plain_broker), "speakers/x", stale_after_s=5)
    driver = LoudspeakerDriver(device, unit)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="evil-spk",
                   protocol="5", keepalive_s=30, connect_timeout_s=5, tls=None)
    bad = [*BAD_PAYLOADS, b'{"state": "idle", "amp_fault": NaN}',
           b'{"state": NaN, "amp_fault": false}', b'{"state": "idle", "amp_fault": 1}']
    try:
        await until(lambda: driver.stats.polls_ok >= 1)
        await pub.connect()
        for payload in bad:
            await pub.publish("speakers/x/status", payload)
        await until(lambda: unit.rejected == len(bad), 30)
        polls = driver.stats.polls_ok
        await until(lambda: driver.stats.polls_ok > polls + 2)  # the status reader lives on
        assert driver.stats.bad_values == len(bad)
        await driver.play_tts("请勿乱扔垃圾", 8, cmd_id="c1")
        await until(lambda: any(r["cmd_id"] == "c1" for r in sink.results))
        assert sink.results[-1]["status"] == "played"
    finally:
        await pub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        await sim.stop()
    encodable(sink.readings)


@pytest.mark.reliability  # make faults runs it at FUZZ_EXAMPLES=100000
@pytest.mark.timeout(120 + FUZZ_EXAMPLES // 100)  # 2.5-4 ms an example measured; ~3x over
@FUZZ
@given(st.one_of(st.binary(max_size=200),
                 st.recursive(st.none() | st.booleans() | st.floats() | st.integers()
                              | st.text(max_size=10),
                              lambda kids: st.lists(kids, max_size=4)
                              | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                              max_leaves=20).map(lambda d: json.dumps(d).encode())))
def test_fuzz_json_doc_and_speaker_status(payload: bytes) -> None:
    with contextlib.suppress(ValueError):
        doc = json_doc.loads(payload)
        for value in doc.values():
            with contextlib.suppress(ValueError):
                assert math.isfinite(json_doc.finite_number(value))
    with contextlib.suppress(ValueError):
        ip_speaker.decode_status(payload)


async def test_a_speaker_status_reader_that_dies_of_a_bug_is_seen(plain_broker: Mosquitto,
                                                                 monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """A reader task that dies of a bug must not leave the unit serving a stale status."""
    sim = IpSpeakerSim("127.0.0.1", plain_broker.port, "speakers/y")
    await sim.start()
    unit = IpSpeakerUnit("ipspk-8", broker_for(plain_broker), "speakers/y", stale_after_s=60)
    real = ip_speaker.decode_status

    def bug(payload: bytes) -> ip_speaker.Status:
        raise RuntimeError("bug")

    try:
        async with unit.running():  # as the driver's run holds it: the reader's TaskGroup
            await unit._connected()
            await until(lambda: unit._last is not None, 15)
            monkeypatch.setattr(ip_speaker, "decode_status", bug)
            reader = unit._reader
            assert reader is not None
            await until(reader.done, 15)  # the simulator reports every few seconds
            with pytest.raises(DeviceProtocolError, match="status reader died"):
                await unit.status()
            monkeypatch.setattr(ip_speaker, "decode_status", real)
            unit._last = None
            await unit._connected()  # a new reader on a new link
            await until(lambda: unit._last is not None, 15)
            assert (await unit.status())["amp_fault"] is False
    finally:
        await unit.close()
        await sim.stop()
