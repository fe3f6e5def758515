"""The event loop drives paho (D84): packets a TLS record brought are all read at once.

``add_reader`` wakes on the kernel socket. A TLS record holding several MQTT packets is
decrypted whole into the SSL object while paho's ``loop_read`` takes only as many packets as
it has messages in flight (one, when idle): the rest waits in ``SSLSocket.pending()``, where
epoll cannot see it, until the broker happens to send something else (a PINGRESP, a keep-alive
later). A broker that coalesces writes must not delay a command by a keep-alive period.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator

from edge.config import TlsConfig
from edge.transports.mqtt import MqttLink
from edge.transports.tls import client_context
from hil.pki import Pki

CONNACK_V5 = bytes([0x20, 0x03, 0x00, 0x00, 0x00])  # session present 0, success, no properties


def publish_qos0_v5(topic: str, payload: bytes) -> bytes:
    body = len(topic).to_bytes(2, "big") + topic.encode() + b"\x00" + payload
    assert len(body) < 128  # one-byte remaining length
    return bytes([0x30, len(body)]) + body


@contextlib.asynccontextmanager
async def coalescing_broker(pki: Pki) -> AsyncIterator[int]:
    """Answer CONNECT with CONNACK and two PUBLISHes in one write (one TLS record), then wait."""
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(pki.cert("broker"), pki.key("broker"))

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.read(4096)  # the CONNECT
            writer.write(CONNACK_V5 + publish_qos0_v5("cmd/a", b"1")
                         + publish_qos0_v5("cmd/b", b"2"))
            await writer.drain()
            while await reader.read(4096):  # PINGREQ, DISCONNECT: never answered
                pass
        writer.close()

    server = await asyncio.start_server(session, "127.0.0.1", 0, ssl=server_tls)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_packets_of_one_tls_record_arrive_without_more_traffic(pki: Pki) -> None:
    tls = client_context(TlsConfig(ca_file=str(pki.cert("ca")), cert_file=None, key_file=None))
    async with coalescing_broker(pki) as port:
        link = MqttLink(host="127.0.0.1", port=port, client_id="tls-reads", protocol="5",
                        keepalive_s=30, connect_timeout_s=3, tls=tls)
        try:
            await link.connect()
            first = await link.next_inbound(2.0)
            second = await link.next_inbound(2.0)  # keep-alive is 30 s: no other wake-up
            assert (first.topic, second.topic) == ("cmd/a", "cmd/b")
        finally:
            await link.close()
