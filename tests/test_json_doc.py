"""Southbound JSON wording and duplicate keys (issue 14 re-test f14 #5, #9).

A technician reads ``last_error`` and the log: no internal class names. A payload that names
a key twice is refused (json keeps the last one silently: ``{"tilt": 1, "tilt": 90}`` would be
a cover that is open or shut depending on the parser), counted as a parse error.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from edge.drivers._codecs import json_doc
from edge.drivers.manhole_tilt import ManholeTiltMqttDriver
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto
from tests.helpers import wait_event
from tests.recording_sink import RecordingSink
from tests.test_mqtt_hostile import cover
from tests.test_southbound_mqtt import broker_for, until


@pytest.mark.parametrize("payload", [b'{"tilt": 1, "tilt": 90}',
                                     b'{"d": {"angle": 1, "angle": 2}, "bat": 3.6}',
                                     b'{"a": [{"x": 1, "x": 1}]}'])
def test_duplicate_keys_are_a_parse_error(payload: bytes) -> None:
    with pytest.raises(ValueError, match="duplicate key"):
        json_doc.loads(payload)


def test_distinct_keys_still_load() -> None:
    assert json_doc.loads(b'{"d": {"angle": 1}, "e": {"angle": 2}}') == {
        "d": {"angle": 1}, "e": {"angle": 2}}


@pytest.mark.parametrize(("payload", "why"), [
    (b'{"v": NaN}', "NaN or infinite"), (b'{"v": Infinity}', "NaN or infinite"),
    (b'{"v": -Infinity}', "NaN or infinite"), (b'{"v": 1e400}', "NaN or infinite"),
    (b'{"v": "3.6"}', "not a number: a string"), (b'{"v": [1]}', "not a number: a list"),
    (b'{"v": {"a": 1}}', "not a number: an object"), (b'{"v": true}', "not a number: true"),
    (b'{"v": 1e16}', "number out of range")])
def test_value_errors_say_what_the_device_sent(payload: bytes, why: str) -> None:
    with pytest.raises(ValueError, match="^" + why) as info:
        json_doc.finite_number(json_doc.loads(payload)["v"])
    assert "_" not in str(info.value), info.value  # no internal names (_NonFinite)


async def test_a_cover_sending_duplicate_keys_is_counted(plain_broker: Mosquitto) -> None:
    broker = broker_for(plain_broker)
    driver = ManholeTiltMqttDriver(cover("cover-3", "covers/3"), broker, timeout_s=30)
    sink = RecordingSink()
    task = asyncio.create_task(driver.run(sink))
    pub = MqttLink(host="127.0.0.1", port=plain_broker.port, client_id="dup", protocol="5",
                   keepalive_s=30, connect_timeout_s=5, tls=None)
    try:
        await pub.connect()
        await wait_event(broker.subscribed, 10, "the cover's subscription")
        await pub.publish("covers/3", b'{"tilt": 1.0, "tilt": 90.0}')
        await pub.publish("covers/3", b'{"tilt": 2.0, "battery": NaN}')
        await until(lambda: driver.stats.parse_errors == 1 and len(sink.readings) == 1, 10)
    finally:
        await pub.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sink.readings[0].values["tilt_deg"] == 2.0  # the duplicate report made none
    # (prefixed "earlier (until hh:mm)" once a good report follows)
    assert driver.stats.last_error.endswith("bad value for battery_v: NaN or infinite")
