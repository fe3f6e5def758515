"""Devices on the southbound broker: a JSON tracker with a path map, an IP speaker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from pathlib import Path
from typing import Any

import pytest

from edge.config import SouthboundMqttConfig
from edge.config_loader import validate
from edge.drivers.gps import GpsMqttDriver
from edge.drivers.loudspeaker import LoudspeakerDriver
from edge.drivers.speaker_units import IpSpeakerUnit
from edge.errors import DeviceUnavailableError
from edge.kinds.gps import GpsDevice
from edge.kinds.loudspeaker import LoudspeakerDevice
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto
from hil.sims.ip_speaker import IpSpeakerSim
from tests.helpers import ObservedBroker, wait_event
from tests.recording_sink import RecordingSink

ASSET = {"code": "3205082190000003", "class": "2190", "grid": "320508001002003", "name": "x"}


def broker_for(mq: Mosquitto) -> ObservedBroker:
    from pathlib import Path

    return ObservedBroker(SouthboundMqttConfig(host="127.0.0.1", port=mq.port, tls=False),
                        base_dir=Path(), gateway_id="gw-1")


async def until(predicate: Any, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.05)


async def test_json_tracker_with_a_path_map(plain_broker: Mosquitto) -> None:
    device = validate(GpsDevice, {
        "name": "patrol-1", "kind": "gps", "transport": "mqtt", "model": "mqtt_json",
        "topic": "trackers/patrol-1", "min_distance_m": 0, "overspeed_kmh": 60,
        "json_map": {"lat": "gps.lat", "lon": "gps.lng", "speed_kmh": "gps.spd", "time": "ts"},
        "asset": ASSET})
    broker = broker_for(plain_broker)
    driver = GpsMqttDriver(device, broker)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="tracker", protocol="5",
                   keepalive_s=30, connect_timeout_s=5, tls=None)
    try:
        await pub.connect()
        await wait_event(broker.subscribed, 10, "the driver's subscription")
        for i in range(5):
            doc = {"ts": 1_795_000_000_000 + i * 1000,
                   "gps": {"lat": 31.31 + i * 1e-3, "lng": 120.63, "spd": 80.0}}
            await pub.publish("trackers/patrol-1", json.dumps(doc).encode())
        await pub.publish("trackers/patrol-1", b"not json")
        await pub.publish("trackers/patrol-1", b'{"gps": {"lat": 0, "lng": 0}}')
        await until(lambda: len(sink.readings) == 5 and driver.rejected == 2)
    finally:
        await pub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sink.readings[0].values["lat"] == 31.31
    assert sink.readings[0].values["fix_utc"] == "2026-11-18T11:06:40+00:00"  # epoch ms
    assert [a.kind for a in sink.alarms if a.state == "raised"] == ["overspeed"]
    assert driver.rejected == 2
    assert sink.gnss == []  # a remote tracker never sets the gateway's clock (issue 19 #3)


async def test_ip_speaker_plays_reports_amp_fault_and_goes_offline(
        plain_broker: Mosquitto) -> None:
    sim = IpSpeakerSim("127.0.0.1", plain_broker.port, "speakers/guanqian")
    await sim.start()
    device = validate(LoudspeakerDevice, {
        "name": "ipspk-1", "kind": "loudspeaker", "transport": "mqtt", "model": "ip_speaker",
        "topic": "speakers/guanqian", "poll_interval_s": 0.5, "asset": {
            **ASSET, "code": "3205082105000009", "class": "2105"}})
    unit = IpSpeakerUnit("ipspk-1", broker_for(plain_broker), "speakers/guanqian",
                         stale_after_s=1.5)
    driver = LoudspeakerDriver(device, unit)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    try:
        await until(lambda: driver.stats.polls_ok >= 1)
        await driver.play_tts("请勿乱扔垃圾", 8, cmd_id="c1")
        await until(lambda: any(r["cmd_id"] == "c1" for r in sink.results))
        assert sink.results[-1]["status"] == "played"
        assert sim.spoken == ["请勿乱扔垃圾"]
        sim.amp_fault = True
        await until(lambda: ("ipspk-1", "amplifier_fault") in sink.active)
        sim.amp_fault = False
        await until(lambda: ("ipspk-1", "amplifier_fault") not in sink.active)
        sim.silent = True
        await until(lambda: ("ipspk-1", "speaker_offline") in sink.active, 15)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await driver.close()
        await sim.stop()


async def test_the_speaker_status_reader_lives_and_ends_with_the_drivers_run(
        plain_broker: Mosquitto) -> None:
    """The reader is a task of the TaskGroup the driver's run holds (issue 13): none outside a
    run, and a cancelled run leaves neither the task nor its link behind."""
    sim = IpSpeakerSim("127.0.0.1", plain_broker.port, "speakers/nanmen")
    await sim.start()
    device = validate(LoudspeakerDevice, {
        "name": "ipspk-2", "kind": "loudspeaker", "transport": "mqtt", "model": "ip_speaker",
        "topic": "speakers/nanmen", "poll_interval_s": 0.5, "asset": {
            **ASSET, "code": "3205082105000010", "class": "2105"}})
    unit = IpSpeakerUnit("ipspk-2", broker_for(plain_broker), "speakers/nanmen",
                         stale_after_s=1.5)
    driver = LoudspeakerDriver(device, unit)
    task: asyncio.Task[None] | None = None
    try:
        await driver.stop_playback()  # a speaker.stop between two runs: a link, no reader
        assert unit._link is not None
        assert unit._reader is None
        task = asyncio.create_task(driver.run(RecordingSink()))
        await until(lambda: driver.stats.polls_ok >= 1)
        reader = unit._reader
        assert reader is not None
        assert not reader.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert reader.cancelled()
        assert unit._reader is None
        assert unit._link is None
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await driver.close()
        await sim.stop()


async def test_a_refused_subscription_says_so_and_closes_the_link(
        plain_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """A broker whose ACL refuses the device's topic (SUBACK 0x87, injected: mosquitto 2.0.11
    grants a denied filter and delivers nothing) must not leave a silent device behind."""
    real_subscribe = MqttLink.subscribe

    async def refusing(self: MqttLink, topic: str) -> bool:
        granted = await real_subscribe(self, topic)  # the real round trip to the broker
        return granted and not topic.startswith("trackers/")

    closed: list[MqttLink] = []
    real_close = MqttLink.close

    async def spied_close(self: MqttLink) -> None:
        closed.append(self)
        await real_close(self)

    monkeypatch.setattr(MqttLink, "subscribe", refusing)
    monkeypatch.setattr(MqttLink, "close", spied_close)
    broker = broker_for(plain_broker)
    with pytest.raises(DeviceUnavailableError,
                       match=r"refused the subscription to trackers/patrol-1 \(check the "):
        await broker.connect("patrol-1", ["trackers/patrol-1"])
    assert len(closed) == 1  # the refused device's link is closed, not left behind
    link = await broker.connect("speaker-1", ["speakers/speaker-1/status"])  # granted
    await link.close()


async def test_a_stop_the_broker_never_acknowledges_is_the_speaker_unavailable(
        plain_broker: Mosquitto, monkeypatch: pytest.MonkeyPatch) -> None:
    """review of D87: the PUBACK of a play or stop was awaited without a bound, and a
    LinkError from publish escaped the executor as a driver bug."""
    from edge.drivers import speaker_units
    from hil.proxy import FaultProxy

    monkeypatch.setattr(speaker_units, "PUBACK_TIMEOUT_S", 0.5)
    proxy = FaultProxy(plain_broker.port)
    await proxy.start()
    unit = IpSpeakerUnit("ipspk-3", ObservedBroker(SouthboundMqttConfig(
        host="127.0.0.1", port=proxy.port, tls=False), base_dir=Path(), gateway_id="gw-1"),
        "speakers/beimen", stale_after_s=1.5)
    try:
        await unit.stop()  # connects and publishes: the broker acknowledges
        proxy.set_mode("blackhole")  # the link looks up; nothing comes back
        started = time.monotonic()
        with pytest.raises(DeviceUnavailableError, match="no PUBACK for the stop"):
            await unit.stop()
        assert time.monotonic() - started < 3
    finally:
        await unit.close()
        await proxy.stop()
