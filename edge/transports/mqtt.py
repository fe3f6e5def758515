"""MqttLink: the only module that imports paho-mqtt.

One ``MqttLink`` is one connection. It is never reconnected: the uplink makes a new one, so
paho's in-memory resend of unacknowledged messages (which it does even with a clean session,
design/reliability.md §2.2) can never happen; everything unacknowledged is re-sent from the
outbox instead. The event loop drives paho, with no thread per link (D84, as aiomqtt does):
the blocking TCP + TLS connect runs in ``asyncio.to_thread``, then the socket is watched with
``add_reader``/``add_writer`` (``loop_read``/``loop_write``, registered and dropped by paho's
``on_socket_*`` callbacks) and ``loop_misc`` runs once a second on a timer. Every paho callback
therefore runs on the loop and resolves our futures directly.

paho facts this relies on (paho-mqtt 2.2, reliability.md §2.2): ``on_publish`` fires on PUBACK
whatever its reason code, so the code is checked here; server Receive Maximum is ignored by
paho, so it is read from CONNACK and returned to the caller; keep-alive PINGREQ without a
PINGRESP within another keep-alive closes the socket, checked by ``loop_misc`` (a silent drop
is seen in ≤ 2 × keepalive + 2 s: two 1 s ticks); ``loop_read`` takes at most one packet per
unacknowledged message, and a TLS record may bring more, decrypted into the SSL object where
epoll cannot see them, so reading goes on while ``pending()`` says so; paho turns
SSLWantRead/WantWrite into "try again" itself and asks for the writer when it needs one.
Without ``loop_start`` paho opens no loopback socket pair and polls nothing with ``select()``
(the loop's epoll has no FD_SETSIZE limit): one descriptor per link, which ``close()`` still
closes itself, not the GC (R5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from edge.errors import LinkRefusedError, LinkTLSError, LinkUnavailableError
from edge.transports.lean_import import without_proxy_lookup

with without_proxy_lookup():  # paho's urllib.request: 1.5 MiB we never use (lean_import, D90)
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger(__name__)

# CONNACK / DISCONNECT codes that ask a client to go away for a while (reliability.md §3)
BUSY_CODES = frozenset({0x89, 0x97, 0x9F})
# paho's keep-alive and its PINGRESP timeout are checked by loop_misc: once a second, as
# paho's own loop thread did (its select() timeout)
MISC_PERIOD_S = 1.0
# messages a link may carry beside the batch window: state reports (one each 10 s, two keep-alive
# periods before a silent link is dropped), the goodbye and command replies
BESIDE_WINDOW = 8


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen: whoever awaits it sees it; nobody may not."""
    if not fut.cancelled():
        fut.exception()


@dataclass(frozen=True, slots=True)
class Will:
    """Last will: published by the broker when the link dies without a DISCONNECT."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message that arrived on a subscription."""

    topic: str
    payload: bytes
    mid: int = 0  # for ack() on a manual_ack link
    qos: int = 0


@dataclass(frozen=True, slots=True)
class Connected:
    """What the broker told us in CONNACK."""

    receive_maximum: int  # 65535 when the broker sets no limit (MQTT 3.1.1 too)


class MqttLink:
    """One MQTT connection; paho is driven by the event loop (no thread once connected)."""

    # paho publish() calls refused with "not connected" since start, all links (R5's metric:
    # it should stay 0, publish() checks paho's state first; paho would queue the message)
    publishes_while_disconnected: ClassVar[int] = 0

    def __init__(self, *, host: str, port: int, client_id: str, protocol: str,
                 keepalive_s: int, connect_timeout_s: float, tls: ssl.SSLContext | None,
                 username: str | None = None,
                 password: str | None = None, will: Will | None = None,
                 max_inflight: int = 20, inbound_max: int = 100,
                 session_expiry_s: int = 0, manual_ack: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self.host, self.port = host, port
        self._v5 = protocol == "5"
        # MQTT 3.1.1 has clean_session on the client; MQTT 5 has clean_start on CONNECT
        if self._v5:
            self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                       protocol=mqtt.MQTTv5, reconnect_on_failure=False,
                                       manual_ack=manual_ack)
        else:
            self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                       protocol=mqtt.MQTTv311, reconnect_on_failure=False,
                                       clean_session=session_expiry_s == 0,
                                       manual_ack=manual_ack)
        # manual_ack: an inbound QoS 1 message is acknowledged only by ack(), once the caller
        # has stored it (a platform receiver killed -9 then loses nothing: the broker resends)
        self._manual_ack = manual_ack
        self._keepalive_s = keepalive_s
        # 0: a clean session (the gateway: its outbox is the session). A platform subscriber
        # keeps one so messages wait at the broker while it reconnects.
        self._session_expiry_s = session_expiry_s
        self._client.connect_timeout = connect_timeout_s
        self._connect_timeout_s = connect_timeout_s
        self._client.max_inflight_messages_set(max_inflight)
        # paho must never queue unboundedly; its limit counts every unacked message, so the
        # state messages beside a full window of batches need room too (R5: a full window plus
        # the 10 s state made paho refuse and dropped a good link 17 times in one run)
        self._client.max_queued_messages_set(max_inflight + BESIDE_WINDOW)
        if tls is not None:
            self._client.tls_set_context(tls)
        if username is not None:
            self._client.username_pw_set(username, password)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=1, retain=True)
        self._connack: asyncio.Future[Connected] = self._loop.create_future()
        self._connack.add_done_callback(_retrieve)
        self.closed: asyncio.Future[str] = self._loop.create_future()
        self._pending: dict[int, asyncio.Future[int]] = {}
        self.inbound: asyncio.Queue[Inbound] = asyncio.Queue(maxsize=inbound_max)
        self.inbound_dropped = 0
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message
        self._client.on_log = self._on_log
        # Set before the connect thread runs: paho then queues the CONNECT (asks for a writer)
        # instead of writing it from that thread; _drive() registers the socket on the loop.
        self._client.on_socket_close = self._on_socket_close
        self._client.on_socket_register_write = self._on_register_write
        self._client.on_socket_unregister_write = self._on_unregister_write
        self._tls_failure: str | None = None
        # paho's socket (an SSLSocket with TLS) while the loop watches it
        self._polled: socket.socket | None = None
        self._misc: asyncio.TimerHandle | None = None
        self._unpolled: asyncio.Future[None] = self._loop.create_future()

    # ---- the event loop drives paho ------------------------------------------------------

    def _drive(self) -> None:
        """Watch paho's freshly connected socket on the loop and start the loop_misc timer."""
        sock = self._client.socket()
        if not isinstance(sock, socket.socket):
            raise LinkUnavailableError(f"{self.host}:{self.port}: paho has no socket")
        self._polled = sock
        self._loop.add_reader(sock, self._readable)
        if self._client.want_write():  # the CONNECT the connect thread queued
            self._loop.add_writer(sock, self._writable)
        self._misc = self._loop.call_later(MISC_PERIOD_S, self._tick)

    def _undrive(self) -> None:
        sock, self._polled = self._polled, None
        if sock is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None
        if not self._unpolled.done():
            self._unpolled.set_result(None)

    def _readable(self) -> None:
        sock = self._polled
        if sock is None:
            return
        self._paho(self._client.loop_read)
        # a TLS record may have carried more packets than loop_read took; the kernel socket is
        # then drained and epoll stays quiet, so come back while the SSL object holds bytes
        pending = getattr(sock, "pending", None)
        if self._polled is sock and pending is not None and pending() > 0:
            self._loop.call_soon(self._readable)

    def _writable(self) -> None:
        sock = self._polled
        if sock is None:
            return
        self._paho(self._client.loop_write)
        if self._polled is sock and not self._client.want_write():
            self._loop.remove_writer(sock)  # never spin on a writable socket with nothing to send

    def _tick(self) -> None:
        self._misc = None
        if self._polled is None:
            return
        self._paho(self._client.loop_misc)
        if self._polled is not None:
            self._misc = self._loop.call_later(MISC_PERIOD_S, self._tick)

    def _paho(self, step: Callable[[], object]) -> None:
        """Run one paho step; a paho bug ends this link instead of spinning the loop."""
        try:
            step()
        except Exception as exc:  # a callback paho re-raised, or paho itself
            log.exception("paho failed on %s:%d; dropping the link", self.host, self.port)
            self._release_sockets()
            self._closed_done(f"paho failed: {exc!r}")

    def _on_socket_close(self, _c: mqtt.Client, _u: object, sock: object) -> None:
        if sock is self._polled:  # paho calls it just before it closes the socket
            self._undrive()

    def _on_register_write(self, _c: mqtt.Client, _u: object, sock: object) -> None:
        # None of ours while the connect thread runs: _drive() adds the writer then
        if sock is self._polled and self._polled is not None:
            self._loop.add_writer(self._polled, self._writable)

    def _on_unregister_write(self, _c: mqtt.Client, _u: object, sock: object) -> None:
        if sock is self._polled and self._polled is not None:
            self._loop.remove_writer(self._polled)

    # ---- paho callbacks (on the loop, from loop_read/loop_write/loop_misc) ----------------

    def _on_log(self, _c: mqtt.Client, _u: object, level: int, text: str) -> None:
        # TLS 1.3 reports a refused client certificate after the handshake, as an alert that
        # paho only logs ("failed to receive on socket: [SSL: TLSV13_ALERT_...]").
        if level == mqtt.MQTT_LOG_ERR and "SSL" in text:
            self._tls_failure = text

    def _on_connect(self, _c: mqtt.Client, _u: object, _flags: object, rc: ReasonCode,
                    props: Properties | None) -> None:
        receive_max = 65535
        if props is not None and hasattr(props, "ReceiveMaximum"):
            receive_max = int(props.ReceiveMaximum)
        self._connack_done(int(rc.value), str(rc), receive_max)

    def _connack_done(self, code: int, text: str, receive_max: int) -> None:
        if self._connack.done():
            return
        if code == 0:
            self._connack.set_result(Connected(receive_max))
        elif code in BUSY_CODES:
            self._connack.set_exception(LinkUnavailableError(f"broker busy: {text}",
                                                               retry_after_s=float("inf")))
        else:
            self._connack.set_exception(LinkRefusedError(f"connection refused: {text}",
                                                            reason_code=code))

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _flags: object, rc: ReasonCode,
                       _props: Properties | None) -> None:
        self._closed_done(f"{rc} ({int(rc.value):#x})" if rc is not None else "closed")

    def _closed_done(self, why: str) -> None:
        if not self._connack.done():
            failure = self._tls_failure
            if failure is not None:
                hint = " (the broker requires a client certificate)" \
                    if "CERTIFICATE_REQUIRED" in failure.upper() else ""
                self._connack.set_exception(LinkTLSError(
                    f"{self.host}:{self.port}: TLS refused by the broker{hint}: {failure}"))
            else:
                self._connack.set_exception(
                    LinkUnavailableError(f"closed before CONNACK: {why}"))
        if not self.closed.done():
            self.closed.set_result(why)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(LinkUnavailableError(f"link lost: {why}"))
        self._pending.clear()

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, rc: ReasonCode,
                    _props: Properties | None) -> None:
        self._acked(mid, int(rc.value))

    def _acked(self, mid: int, code: int) -> None:
        fut = self._pending.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(code)

    def _on_subscribe(self, _c: mqtt.Client, _u: object, mid: int, codes: list[ReasonCode],
                      _props: Properties | None) -> None:
        # one topic per SUBSCRIBE: its one code is the granted QoS, or >= 0x80 refused
        self._acked(mid, max((int(c.value) for c in codes), default=0x80))

    def _on_message(self, _c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        self._deliver(Inbound(msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _deliver(self, item: Inbound) -> None:
        try:
            self.inbound.put_nowait(item)
        except asyncio.QueueFull:
            self.inbound_dropped += 1  # bounded: a command flood cannot grow memory

    # ---- the event loop's side ------------------------------------------------------------

    async def connect(self) -> Connected:
        """Connect and wait for CONNACK; raise a LinkError subclass on any failure."""
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._session_expiry_s
        try:
            async with asyncio.timeout(self._connect_timeout_s + 1):
                await asyncio.to_thread(self._blocking_connect, props)
        except ssl.SSLCertVerificationError as exc:
            raise LinkTLSError(f"{self.host}:{self.port}: certificate refused: "
                                 f"{exc.verify_message}") from exc
        except ssl.SSLError as exc:
            raise LinkTLSError(f"{self.host}:{self.port}: TLS failed: {exc.reason}") from exc
        except (OSError, TimeoutError) as exc:
            raise LinkUnavailableError(f"{self.host}:{self.port}: {exc}") from exc
        self._drive()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                return await asyncio.shield(self._connack)
        except TimeoutError as exc:
            raise LinkUnavailableError(f"{self.host}:{self.port}: no CONNACK in "
                                         f"{self._connect_timeout_s:g} s") from exc

    def _blocking_connect(self, props: Properties | None) -> None:
        if self._v5:
            self._client.connect(self.host, self.port, keepalive=self._keepalive_s,
                                 clean_start=self._session_expiry_s == 0, properties=props)
        else:
            self._client.connect(self.host, self.port, keepalive=self._keepalive_s)

    def publish(self, topic: str, payload: bytes, *, retain: bool = False,
                user_properties: list[tuple[str, str]] | None = None) -> asyncio.Future[int]:
        """Publish at QoS 1; the future resolves to the PUBACK reason code (0 = success).

        Raises LinkUnavailableError when the link is down (nothing is queued in paho).
        """
        # not connected: lost (closed is then done) or abort()ed (paho is DISCONNECTING)
        if self.closed.done() or not self._client.is_connected():
            raise LinkUnavailableError("link is down")
        props = None
        if self._v5 and user_properties:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.UserProperty = user_properties
        info = self._client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            if info.rc == mqtt.MQTT_ERR_NO_CONN:
                MqttLink.publishes_while_disconnected += 1
            # paho would keep the message and resend it later: this link is finished
            self._client.disconnect()
            why = mqtt.error_string(info.rc)
            raise LinkUnavailableError(f"publish refused by the client: {why}")
        fut: asyncio.Future[int] = self._loop.create_future()
        fut.add_done_callback(_retrieve)
        # Registered before any await: the PUBACK is read by a later loop_read, which finds it.
        self._pending[info.mid] = fut
        return fut

    async def next_inbound(self, timeout_s: float) -> Inbound:
        """Return the next inbound message.

        TimeoutError after ``timeout_s`` of silence; LinkUnavailableError as soon as the link
        closes (never a hang on a dead link).
        """
        if not self.inbound.empty():
            return self.inbound.get_nowait()
        if self.closed.done():
            raise LinkUnavailableError(f"link lost: {self.closed.result()}")
        getter: asyncio.Future[Inbound] = asyncio.ensure_future(self.inbound.get())
        closed: asyncio.Future[Any] = self.closed
        try:
            done, _ = await asyncio.wait({getter, closed}, timeout=timeout_s,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not getter.done():
                getter.cancel()
        if getter in done:
            return getter.result()
        if self.closed.done():
            raise LinkUnavailableError(f"link lost: {self.closed.result()}")
        raise TimeoutError

    def ack(self, item: Inbound) -> None:
        """Acknowledge an inbound message of a ``manual_ack`` link (PUBACK); else nothing."""
        if self._manual_ack and item.qos > 0 and not self.closed.done():
            self._client.ack(item.mid, item.qos)

    async def subscribe(self, topic: str) -> bool:
        """Subscribe at QoS 1 and wait for the SUBACK (messages arrive in ``inbound``).

        Returns True once the broker holds the subscription (a message published after this
        reaches us), False when the broker refused it (an ACL: logged, the link stays up so
        telemetry still flows). LinkRefusedError for a filter paho refuses to send;
        LinkUnavailableError when the link is lost or no SUBACK comes within the connect
        timeout.
        """
        try:
            rc, mid = self._client.subscribe(topic, qos=1)
        except ValueError as exc:  # paho checks filters itself: '#' not last, '+' inside a level
            # 0x8F is MQTT 5's "topic filter invalid"; the broker would never see it
            raise LinkRefusedError(f"invalid topic filter {topic!r}: {exc}",
                                      reason_code=0x8F) from exc
        if rc != mqtt.MQTT_ERR_SUCCESS or mid is None:
            raise LinkUnavailableError(f"subscribe failed: {mqtt.error_string(rc)}")
        fut: asyncio.Future[int] = self._loop.create_future()
        fut.add_done_callback(_retrieve)
        # Registered before any await: the SUBACK is read by a later loop_read, which finds it.
        self._pending[mid] = fut
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                code = await fut
        except TimeoutError as exc:
            self._pending.pop(mid, None)
            raise LinkUnavailableError(f"no SUBACK for {topic} in "
                                         f"{self._connect_timeout_s:g} s") from exc
        if code >= 0x80:  # MQTT: a SUBACK code >= 0x80 is a refusal
            log.warning("broker %s:%d refused the subscription to %s (%#x)", self.host,
                        self.port, topic, code)
            return False
        return True

    def abort(self) -> None:
        """Drop the connection now (PUBACK overdue, silent link, shutdown).

        A DISCONNECT never leaves into a blackholed link: shutting the socket down makes the
        reader wake and paho see the loss (on_disconnect: ``closed`` is set, pending fail).
        """
        with contextlib.suppress(Exception):
            self._client.disconnect()
        sock = self._client.socket()
        shutdown = getattr(sock, "shutdown", None)
        if shutdown is not None:
            with contextlib.suppress(OSError):
                shutdown(socket.SHUT_RDWR)

    async def close(self) -> None:
        """Disconnect (DISCONNECT if the link still works: no last will) and stop paho."""
        with contextlib.suppress(Exception):
            self._client.disconnect()
        try:
            if self._polled is not None:
                # paho closes the socket once the DISCONNECT is written (on_socket_close)
                _, waiting = await asyncio.wait({self._unpolled}, timeout=2.0)
                if waiting:
                    self.abort()  # the DISCONNECT could not leave: cut the socket
        finally:  # even when cancelled: no socket, reader or timer outlives close()
            self._release_sockets()
            self._undrive()
            self._closed_done("closed by us")

    def _release_sockets(self) -> None:
        """Close paho's socket now, not whenever the GC gets to it.

        This link and its client refer to each other (the callbacks), so only a full garbage
        collection would run ``Client.__del__``; an agent with a large heap rarely runs one (R5:
        with paho's loop thread, every reconnect leaked descriptors until its ``select()`` failed
        at the 30th flap). paho's on_socket_close takes the socket off the loop first.
        """
        reset = getattr(self._client, "_reset_sockets", None)  # paho 1.x-2.x; test pins it
        if callable(reset):
            with contextlib.suppress(OSError):
                reset()
