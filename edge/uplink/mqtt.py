"""The MQTT uplink: forwards signed batches from the outbox, deletes only on success PUBACK.

Delivery rules (design/events.md, reliability.md §2.4):

* publish only from the outbox and only while connected; a window of at most
  min(max_inflight, broker Receive Maximum) batches in flight;
* a success PUBACK acks the batch's events; a failure code nacks them (0x97 and other
  "busy" codes back off, after ``max_attempts`` the events go to dead letters, so a poison
  batch never blocks the queue head); a lost link releases every unacked event, which is
  re-sent from the outbox on the next connection (duplicates ≤ the window, never loss);
* alarms (prio 0-1) are leased before telemetry and bypass the replay token bucket;
* reconnects use full jitter and reset their backoff only after ``stable_after_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge import __version__
from edge.backoff import full_jitter
from edge.buffer.lease import EventQueue
from edge.config import UplinkConfig
from edge.errors import (
    LinkError,
    LinkUnavailableError,
    UplinkError,
    UplinkUnavailableError,
    as_uplink_error,
)
from edge.security.signing import Signer
from edge.transports.mqtt import Inbound, MqttLink, Will
from edge.transports.tls import client_context
from edge.uplink.batches import BatchSource

log = logging.getLogger(__name__)
BUSY_PUBACK = frozenset({0x97})  # quota exceeded: the broker asks us to slow down


@dataclass(slots=True)
class LinkStats:
    """Uplink counters (status file, metrics)."""

    connected: bool = False
    connected_since: float = 0.0  # monotonic, for the connection's length
    # wall clock (time.time()) at the last successful CONNACK: "connected since" on the
    # status page and in `edge status` (issue 21 f7); 0.0 before the first connect
    connected_since_wall_s: float = 0.0
    connects: int = 0
    attempts: int = 0
    batches_published: int = 0
    bytes_published: int = 0  # envelope bytes handed to the link (the 4G bill's share)
    events_acked: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    last_error: str = ""
    last_progress_mono: float = 0.0
    attempt_log: list[float] = field(default_factory=list)  # monotonic times of attempts
    window: int = 0  # batches in flight allowed on the current connection
    states_published: int = 0  # birth, changes and heartbeats (not the will or the goodbye)

    def status(self) -> dict[str, Any]:
        """Return the counters ``edge status`` shows."""
        return {"connected": self.connected, "connects": self.connects,
                "attempts": self.attempts,
                # wall clock at the last CONNACK (status page, `edge status`: issue 21 f7)
                "connected_since": self.connected_since_wall_s or None,
                "batches_published": self.batches_published, "events_acked": self.events_acked,
                "bytes_published": self.bytes_published, "failures": self.failures,
                "dead_lettered": self.dead_lettered, "last_error": self.last_error}


CommandHandler = Callable[[bytes], Awaitable[None]]
CommandTick = Callable[[int], Awaitable[None]]  # envelopes dropped unread since the last tick
COMMAND_TICK_S = 5.0  # how often an idle command path reports drops and flushes summaries
# Inbound command envelopes the link may hold: a burst of 250 forged envelopes must not push a
# valid command out (issue 19 #8); rejecting one costs ~0.1 ms, so the queue drains in
# 0.1 s. Drops beyond it are counted and reported (on_command_tick).
COMMAND_INBOUND_MAX = 1000
StateProvider = Callable[[], Awaitable[dict[str, Any]]]
# How often the state loop looks for a change (active alarms, time quality) to publish; the
# provider's reads are cheap (trigger-kept depth rows, issue 14 #7), so looking costs little
# and a change reaches the retained ``state`` within this.
STATE_CHECK_S = 5.0
# What a change of is published at once; the outbox depth and the seq baseline only refresh
# with the heartbeat (they change with every event).
STATE_CHANGE_KEYS = ("online", "active_alarms", "time_quality")


# The last will's rank in its connection's `order` (contract 1.1.1): JSON's largest exact
# integer, so it follows every state of its connection and precedes the next connection's.
WILL_N = 2**53 - 1


def boot_clock_ms() -> int:
    """Return ms of the boot clock: monotonic across agent restarts within one ``boot_id``.

    CLOCK_BOOTTIME (Linux) counts from the kernel's boot, suspend included; the wall clock
    may step (NTP, GNSS), so it cannot order states.
    """
    clock = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)
    return time.clock_gettime_ns(clock) // 1_000_000


def _state_key(state: dict[str, Any]) -> str:
    return json.dumps([state.get(k) for k in STATE_CHANGE_KEYS], sort_keys=True, default=str)


class MqttUplink:
    """Owns the connection lifecycle and the publish pump; ``run()`` never returns."""

    def __init__(self, cfg: UplinkConfig, *, gateway_id: str, boot_id: str, signer: Signer,
                 outbox: EventQueue, base_dir: Path, password: str | None = None,
                 on_command: CommandHandler | None = None,
                 on_command_tick: CommandTick | None = None,
                 state_provider: StateProvider | None = None) -> None:
        self.cfg = cfg
        self.gateway_id = gateway_id
        self.boot_id = boot_id
        self.signer = signer
        self.outbox = outbox
        self.base_dir = base_dir
        self._password = password
        self._on_command = on_command
        self._on_command_tick = on_command_tick
        self.commands_failed = 0  # handler exceptions caught here (a bug: the link stays up)
        self.commands_dropped = 0  # envelopes the link's bounded inbound queue could not take
        self._state_provider = state_provider
        prefix = cfg.topic_prefix
        self.events_topic = f"{prefix}/{gateway_id}/events"
        self.state_topic = f"{prefix}/{gateway_id}/state"
        self.cmd_topic = f"{prefix}/{gateway_id}/cmd"
        self.stats = LinkStats()
        self._inflight: set[int] = set()
        self.batches = BatchSource(outbox, gateway_id=gateway_id, signer=signer,
                                   replay_events_per_s=cfg.replay_events_per_s)
        self.link: MqttLink | None = None
        self._outage_logged = False
        self._spreading = False  # retries after losing an established link (a fleet event)
        self._state_sent_mono = 0.0
        self._state_sent_key = ""
        # the `order` of the states: this connection's boot-clock ms, and its states' count
        self._conn_ms = boot_clock_ms()
        self._state_n = 0

    def _make_link(self) -> MqttLink:
        tls = None if self.cfg.tls is False else client_context(self.cfg.tls, self.base_dir)
        # receivers on a shared subscription commit a gateway's states in any order: each
        # carries [connection's ms, n] and the will the largest n of its connection (D70)
        self._conn_ms, self._state_n = max(boot_clock_ms(), self._conn_ms + 1), 0
        will = Will(self.state_topic, self._signed_state(
            {"online": False, "gw": self.gateway_id, "boot_id": self.boot_id}, will=True))
        return MqttLink(host=self.cfg.host, port=self.cfg.port,
                        client_id=self.cfg.client_id or self.gateway_id,
                        protocol=self.cfg.protocol, keepalive_s=self.cfg.keepalive_s,
                        connect_timeout_s=self.cfg.connect_timeout_s, tls=tls,
                        username=self.cfg.username, password=self._password, will=will,
                        max_inflight=self.cfg.max_inflight, inbound_max=COMMAND_INBOUND_MAX)

    async def run(self, *, boot_delay_s: float | None = None) -> None:
        """Connect, forward, reconnect with full jitter; forever (cancel to stop)."""
        delay = full_jitter(0, self.cfg.boot_delay_max_s, self.cfg.boot_delay_max_s) \
            if boot_delay_s is None else boot_delay_s
        if delay > 0:
            log.info("uplink: boot delay %.1f s (spreads a fleet that powered up together)",
                     delay)
            await asyncio.sleep(delay)
        attempt = 0
        while True:
            self.stats.attempts += 1
            self.stats.attempt_log.append(time.monotonic())
            del self.stats.attempt_log[:-200]
            error: UplinkError | None = None
            up_for = 0.0
            graceful = False
            try:
                await self._connect_and_forward()
            except asyncio.CancelledError:
                await self._say_goodbye()
                graceful = True
                raise
            except UplinkError as exc:
                error = exc
            except LinkError as exc:  # the transport's, counted under the uplink's codes
                error = as_uplink_error(exc)
            except Exception as exc:  # the uplink must outlive any bug: logged, reconnects
                log.exception("uplink: unexpected error; reconnecting")
                error = UplinkUnavailableError(f"internal error: {exc!r}")
            finally:
                if self.stats.connected:
                    up_for = time.monotonic() - self.stats.connected_since
                self.stats.connected = False
                await self._end_session(graceful=graceful)
            busy = False
            if error is not None:
                busy = isinstance(error, UplinkUnavailableError) and \
                    error.retry_after_s == float("inf")
                self.stats.last_error = str(error)
                self.stats.failures[error.code] = self.stats.failures.get(error.code, 0) + 1
                if not self._outage_logged:
                    log.warning("uplink: %s", error)  # once per outage
                    self._outage_logged = True
                else:
                    log.debug("uplink: still down: %s", error)
            # Reset only after a stable connection: an accept-then-kick broker backs us off.
            attempt = 0 if up_for >= self.cfg.stable_after_s else attempt + 1
            # a stable link dropped: this may be the whole fleet's (a broker restart), so every
            # retry until it is back is spread over the fleet window. An accept-then-kick loop
            # never gets here: it keeps its growing backoff (R10).
            if up_for >= self.cfg.stable_after_s:
                self._spreading = True
            spread = self.cfg.reconnect_spread_s if self._spreading else 0.0
            wait = self.cfg.reconnect_cap_s if busy else \
                full_jitter(attempt, self.cfg.reconnect_base_s, self.cfg.reconnect_cap_s,
                            floor_s=spread)
            await asyncio.sleep(wait)

    async def _connect_and_forward(self) -> None:
        """Connect, then forward until the link drops; always raises UplinkError."""
        link = self._make_link()
        self.link = link
        connected = await link.connect()
        self.stats.connected, self.stats.connects = True, self.stats.connects + 1
        self.stats.connected_since = time.monotonic()
        self.stats.connected_since_wall_s = time.time()
        self._spreading = False
        log.info("uplink: connected to %s:%d (MQTT %s, receive maximum %d)%s", self.cfg.host,
                 self.cfg.port, self.cfg.protocol, connected.receive_maximum,
                 " again" if self._outage_logged else "")
        self._outage_logged = False
        window = max(1, min(self.cfg.max_inflight, connected.receive_maximum))
        self.stats.window = window
        try:
            reason = await self._session(link, window)
        except* (UplinkError, LinkError) as group:
            first = group.exceptions[0]
            raise (as_uplink_error(first) if isinstance(first, LinkError) else first) from None
        raise UplinkUnavailableError(f"link lost: {reason}")

    async def _say_goodbye(self) -> None:
        """On a clean stop, leave a retained ``online: false`` (a kill leaves the last will)."""
        link = self.link
        if link is None or link.closed.done():
            return
        with contextlib.suppress(Exception):
            ack = link.publish(self.state_topic, self._signed_state(
                {"online": False, "gw": self.gateway_id, "boot_id": self.boot_id,
                 "reason": "stopped"}), retain=True)
            async with asyncio.timeout(2.0):
                await ack

    async def _end_session(self, *, graceful: bool = False) -> None:
        link, self.link = self.link, None
        if link is not None:
            if not graceful:
                link.abort()  # a dead link: do not wait for a DISCONNECT to leave
            await link.close()
        if self._inflight:
            await self.outbox.release(sorted(self._inflight))
            self._inflight.clear()

    async def _session(self, link: MqttLink, window: int) -> str:
        await self.outbox.set_live_from()  # what queued while we were away is backlog
        await self._publish_state(link, online=True)
        await link.subscribe(self.cmd_topic)
        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(self._pump(link, window, tg), name="uplink.pump")
            cmds = tg.create_task(self._commands(link), name="uplink.commands")
            state = tg.create_task(self._state_loop(link), name="uplink.state")
            # shielded: cancelling the session must not cancel the link's own future
            reason = await asyncio.shield(link.closed)
            for task in (pump, cmds, state):
                task.cancel()
        return reason

    async def _state_loop(self, link: MqttLink) -> None:
        """Re-publish ``state`` when what it says changes, and on the heartbeat.

        It went every 10 s (8.6 k messages a day on a metered link, issue 20 #5 and the data
        budget): now a change of the active alarms or the time quality is published within
        ``STATE_CHECK_S``, and the heartbeat refreshes the outbox depth and the seq baseline
        (docs/decisions.md D57). The birth (``_session``) is one of these publications.
        """
        heartbeat_s = self.cfg.state_heartbeat_s
        while True:
            await asyncio.sleep(min(STATE_CHECK_S, heartbeat_s))
            state = await self._state(online=True, baseline=False)
            due = time.monotonic() - self._state_sent_mono >= heartbeat_s
            if due or _state_key(state) != self._state_sent_key:
                state.update(await self.outbox.seq_baseline())
                self._send_state(link, state)

    def request_state(self) -> None:
        """Publish a full ``state`` (seq baseline included) at the next state check.

        The ``agent.state`` command: a platform that joins late gets a baseline within
        ``STATE_CHECK_S`` instead of waiting for the heartbeat (issue 20 re-test #5).
        """
        self._state_sent_mono = float("-inf")

    async def _publish_state(self, link: MqttLink, *, online: bool) -> None:
        self._send_state(link, await self._state(online=online))

    async def _state(self, *, online: bool, baseline: bool = True) -> dict[str, Any]:
        state: dict[str, Any] = {"online": online, "gw": self.gateway_id, "version": __version__,
                                 "boot_id": self.boot_id, "kid": self.signer.kid}
        if self._state_provider is not None:
            state.update(await self._state_provider())
        # the seq baseline: a platform that joins late (or lost its state) counts a seq below
        # seq_low it never saw as sent before it joined (or announced by a gap event), not as
        # lost; seqs in seq_low..seq_high are still held and will come (issue 20 #4)
        if baseline:
            state.update(await self.outbox.seq_baseline())
        return state

    def _send_state(self, link: MqttLink, state: dict[str, Any]) -> None:
        link.publish(self.state_topic, self._signed_state(state), retain=True)
        self._state_sent_mono = time.monotonic()
        self._state_sent_key = _state_key(state)
        self.stats.states_published += 1

    def _signed_state(self, state: dict[str, Any], *, will: bool = False) -> bytes:
        """Return ``state`` with its ``order`` in the batches' Ed25519 envelope (design/events.md).

        The platform opens the case of an alarm it missed from the active alarms on ``state``,
        so ``state`` is signed like a batch: an unsigned one let anyone with publish rights
        open cases (security review 19 #4, docs/decisions.md D39).
        """
        if not will:
            self._state_n += 1
        order = [self._conn_ms, WILL_N if will else self._state_n]
        body = json.dumps({**state, "order": order}, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8")
        return self.signer.envelope(body)

    async def _commands(self, link: MqttLink) -> None:
        """Hand each inbound envelope to the handler; nothing it raises ends the session.

        A retained malformed command is delivered again after every reconnect, so an exception
        here would end every session (issue 19, finding 1). Drops of the bounded inbound queue
        are passed on to be counted and reported (finding 8).
        """
        seen_dropped = link.inbound_dropped
        while True:
            item: Inbound | None = None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(COMMAND_TICK_S):
                    item = await link.inbound.get()
            dropped, seen_dropped = link.inbound_dropped - seen_dropped, link.inbound_dropped
            self.commands_dropped += dropped
            try:
                if self._on_command_tick is not None and (dropped or item is None):
                    await self._on_command_tick(dropped)
                if item is not None and self._on_command is not None:
                    await self._on_command(item.payload)
            except Exception:  # the handler's bug must not drop the uplink
                self.commands_failed += 1
                log.exception("uplink: command handler failed; the link stays up")

    async def _pump(self, link: MqttLink, window: int, tg: asyncio.TaskGroup) -> None:
        slots = asyncio.Semaphore(window)
        cfg = self.cfg
        while True:
            await slots.acquire()
            batch = await self.batches.next(cfg.batch_max_events, cfg.batch_max_bytes)
            seqs = batch.seqs
            self._inflight.update(seqs)
            envelope, batch_id = batch.envelope, batch.batch_id
            try:
                # MQTT 5: the body's ``batch`` again, readable without opening the envelope
                ack = link.publish(self.events_topic, envelope,
                                   user_properties=[("batch_id", batch_id)])
            except LinkUnavailableError:
                slots.release()
                raise
            self.stats.batches_published += 1
            self.stats.bytes_published += len(envelope)
            tg.create_task(self._await_ack(link, ack, seqs, slots), name="uplink.ack")

    async def _await_ack(self, link: MqttLink, ack: asyncio.Future[int], seqs: list[int],
                         slots: asyncio.Semaphore) -> None:
        try:
            # MQTT never resends on a live link: a missing PUBACK means the link is dead.
            async with asyncio.timeout(2.0 * self.cfg.keepalive_s):
                code = await ack
        except TimeoutError:
            log.warning("uplink: PUBACK overdue; dropping the link")
            link.abort()
            return
        except LinkUnavailableError:
            return  # the session ends; _end_session releases these
        finally:
            slots.release()
        self._inflight.difference_update(seqs)
        self.stats.last_progress_mono = time.monotonic()
        if code < 0x80:
            await self.outbox.ack(seqs)
            self.stats.events_acked += len(seqs)
            return
        name = f"puback.{code:#04x}"
        self.stats.failures[name] = self.stats.failures.get(name, 0) + 1
        dead = await self.outbox.nack(seqs, f"PUBACK {code:#04x}")
        self.stats.dead_lettered += len(dead)
        if dead:
            log.error("uplink: %d events dead-lettered after PUBACK %#04x", len(dead), code)
        if code in BUSY_PUBACK:
            await asyncio.sleep(min(self.cfg.reconnect_cap_s, 5.0))

