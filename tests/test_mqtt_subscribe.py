"""MqttLink.subscribe returns once the broker holds the subscription (its SUBACK), so callers
(drivers, the uplink's command topic, tests) wait for that instead of sleeping."""

from __future__ import annotations

import pytest

from edge.errors import LinkRefusedError
from edge.transports.mqtt import MqttLink
from hil.broker import Mosquitto


def link(port: int, client_id: str) -> MqttLink:
    return MqttLink(host="127.0.0.1", port=port, client_id=client_id, protocol="5",
                    keepalive_s=30, connect_timeout_s=5, tls=None)


async def test_a_message_published_after_subscribe_returns_arrives(
        plain_broker: Mosquitto) -> None:
    sub, pub = link(plain_broker.port, "sub"), link(plain_broker.port, "pub")
    await sub.connect()
    await pub.connect()
    try:
        for i in range(30):  # each round races the SUBSCRIBE against the next PUBLISH
            assert await sub.subscribe(f"t/{i}") is True
            assert await pub.publish(f"t/{i}", b"x") == 0
            got = await sub.next_inbound(2.0)
            assert got.topic == f"t/{i}", f"round {i}: the message beat the subscription"
    finally:
        await pub.close()
        await sub.close()



@pytest.mark.parametrize("topic", ["covers/#/1", "a+b/c", "$share/a+b/t"])
async def test_an_invalid_topic_filter_is_an_uplink_error_not_paho_s(
        topic: str, plain_broker: Mosquitto) -> None:
    sub = link(plain_broker.port, "sub")
    await sub.connect()
    try:
        with pytest.raises(LinkRefusedError, match="invalid topic filter"):
            await sub.subscribe(topic)
        assert await sub.subscribe("ok/topic") is True  # the link is still usable
    finally:
        await sub.close()
