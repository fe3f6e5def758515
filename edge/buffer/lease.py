"""What the uplink sees of the outbox: lease events, then ack, nack or release them.

``EventQueue`` is the narrow interface the uplink (``edge/uplink/``) is written against; it
imports nothing else of ``edge.buffer`` (tests/test_architecture.py). ``AsyncOutbox`` satisfies
it structurally: the agent passes the whole outbox in, the uplink can reach only these members
(no stats, no pruning, no journal, no store).

Delivery contract (at least once, never loss; docs/decisions.md D4, reliability.md R5):

* an event leaves the outbox only by ``ack``, and the uplink acks only after the platform
  confirmed it: a success PUBACK (code < 0x80) on MQTT, a 2xx on HTTPS;
* a leased event is not handed out again until it is released or nacked; leases live in
  memory, so after a restart every unacked event is leased (and sent) again: duplicates up to
  the window, never a gap;
* ``release`` gives events back without counting an attempt (the link dropped before their
  answer); ``nack`` counts one (the platform refused them) and dead-letters an event after the
  outbox's ``max_attempts`` so that the queue head never blocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Leased:
    """An event handed to the uplink: send ``payload``, then ack or nack ``seq``."""

    seq: int
    prio: int
    payload: bytes
    attempts: int


class EventQueue(Protocol):
    """The outbox as the uplink uses it: lease, send, then ack, nack or release."""

    @property
    def new_data(self) -> asyncio.Event:
        """Set after each commit that stored events (a gap event too); never cleared here.

        The consumer clears it before leasing and waits on it when nothing was leased, so an
        event committed in between wakes it instead of waiting out its poll.
        """

    @property
    def events_committed(self) -> int:
        """Events committed since the outbox started (a counter: the live rate for pacing)."""

    async def lease(self, max_events: int, max_bytes: int, max_prio: int = 3,
                    live: bool | None = None) -> list[Leased]:
        """Lease up to ``max_events`` events of prio ≤ ``max_prio``: lowest prio, then oldest.

        Stops before ``max_bytes`` of payload, but always hands out at least one event when
        one is waiting. ``live`` True: only events stored since the last ``set_live_from``;
        False: only the backlog before it; None: both. An event stays leased (not handed out
        again) until ``ack``, ``nack`` or ``release``; empty list when nothing is waiting.
        """

    async def ack(self, seqs: Sequence[int]) -> None:
        """Delete the events: call only after the platform confirmed them (PUBACK, 2xx).

        Returns once the delete is committed (it shares the writer's next transaction).
        """

    async def nack(self, seqs: Sequence[int], reason: str) -> list[int]:
        """Count a failed attempt (the platform refused them); return the seqs dead-lettered.

        An event that reached the outbox's ``max_attempts`` moves to the dead letters with
        ``reason`` (out of the queue); the others are released and will be leased again.
        """

    async def release(self, seqs: Sequence[int]) -> None:
        """Give leased events back without counting an attempt (the link dropped first)."""

    async def set_live_from(self) -> int:
        """Everything stored until now becomes backlog (a connection came up); return the split.

        ``lease(live=True)`` then hands out only what is stored from now on.
        """

    async def seq_baseline(self) -> dict[str, int]:
        """Return ``seq_low`` (lowest seq still held) and ``seq_high`` (last seq committed).

        What the uplink's ``state`` carries (D57): a seq below ``seq_low`` was sent (or
        announced by a gap event) before a late platform joined.
        """

    def detach(self, coro: Coroutine[Any, Any, T], name: str) -> asyncio.Task[T]:
        """Run an outbox operation that must outlive its (cancelled) caller, owned by the outbox.

        A lease the uplink's task was cancelled from must still be given back: the outbox owns
        such a task and awaits (then cancels) it when it closes.
        """
