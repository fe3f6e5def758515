"""What the uplinks send: signed batches chosen from the outbox, and replay pacing.

Both the MQTT and the HTTPS uplink take their batches from ``BatchSource.next``: alarms of any
age first, then telemetry stored since the current connection came up, then the older backlog
as fast as the replay token bucket allows (docs/decisions.md D4).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from edge.buffer.lease import EventQueue, Leased
from edge.ids import uuid7
from edge.model import encode_batch
from edge.security.signing import Signer


class TokenBucket:
    """Replay pacing: ``rate_per_s`` tokens a second, bursts up to one second's worth.

    With ``fixed_rate_per_s`` 0 the rate follows the live rate: ``factor`` × the events/s the
    outbox has been committing (EWMA), never below ``floor_per_s``.
    """

    def __init__(self, fixed_rate_per_s: float, *, factor: float = 10.0,
                 floor_per_s: float = 50.0) -> None:
        self.fixed = fixed_rate_per_s > 0
        self.rate_per_s = fixed_rate_per_s if self.fixed else floor_per_s
        self.factor, self.floor_per_s = factor, floor_per_s
        self._tokens = self.rate_per_s
        self._at = time.monotonic()
        self._live_per_s = 0.0
        self._seen: tuple[float, int] | None = None

    def observe_committed(self, committed_total: int) -> None:
        """Feed the outbox's commit counter; adapts the rate when not fixed."""
        now = time.monotonic()
        if self._seen is None:
            self._seen = (now, committed_total)
            return
        at, seen = self._seen
        if now - at < 1.0:
            return
        self._live_per_s = 0.8 * self._live_per_s + 0.2 * (committed_total - seen) / (now - at)
        self._seen = (now, committed_total)
        if not self.fixed:
            self.rate_per_s = max(self.floor_per_s, self.factor * self._live_per_s)

    def give_back(self, tokens: int) -> None:
        """Return tokens that were granted but not used."""
        self._tokens = min(self.rate_per_s, self._tokens + tokens)

    def take(self, want: int) -> int:
        """Take up to ``want`` tokens now; return how many were granted."""
        now = time.monotonic()
        self._tokens = min(self.rate_per_s, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        granted = min(want, int(self._tokens))
        self._tokens -= granted
        return granted


@dataclass(frozen=True, slots=True)
class SignedBatch:
    """A leased batch, ready to send."""

    seqs: list[int]
    envelope: bytes
    batch_id: str  # the body's ``batch``: a UUIDv7, unique per gateway for ever (D57)


class BatchSource:
    """Leases, orders, paces and signs batches for one uplink."""

    def __init__(self, outbox: EventQueue, *, gateway_id: str, signer: Signer,
                 replay_events_per_s: float) -> None:
        self.outbox = outbox
        self.gateway_id = gateway_id
        self.signer = signer
        self.bucket = TokenBucket(replay_events_per_s)

    async def next(self, max_events: int, max_bytes: int) -> SignedBatch:
        """Wait for and return the next batch: alarms, live telemetry, then the backlog.

        The backlog goes as fast as the replay bucket allows: a reconnecting fleet must not
        flood the broker.
        """
        while True:
            self.outbox.new_data.clear()
            batch = await self._lease(max_events, max_bytes, max_prio=1)
            if not batch:
                batch = await self._lease(max_events, max_bytes, max_prio=3, live=True)
            if not batch:
                self.bucket.observe_committed(self.outbox.events_committed)
                granted = self.bucket.take(max_events)
                if granted:
                    batch = await self._lease(granted, max_bytes, max_prio=3, live=False)
                    self.bucket.give_back(granted - len(batch))
                wait_s = 1.0 if granted else 0.05  # empty outbox, or waiting for tokens
                if not batch:
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(wait_s):
                            await self.outbox.new_data.wait()  # new data wakes us early
                    continue
            # a counter restarted at 1 with the agent while seq went on, so (gw, batch) was
            # not unique (issue 20 #3); a UUIDv7 needs no durable state and stays unique
            # across restarts, outbox replacements and re-sends (D57)
            batch_id = str(uuid7())
            seqs = [item.seq for item in batch]
            body = encode_batch(self.gateway_id, batch_id, time.time_ns(),
                                [item.payload for item in batch])
            return SignedBatch(seqs, self.signer.envelope(body), batch_id)

    async def _lease(self, max_events: int, max_bytes: int, *, max_prio: int,
                     live: bool | None = None) -> list[Leased]:
        """Lease on the outbox thread; a cancel (the link dropped) gives the lease back.

        The thread finishes a lease it has begun whatever happens to the awaiting task; its
        events would stay leased, never sent, until a restart (R5: two events stuck).
        """
        leasing = self.outbox.detach(self.outbox.lease(max_events, max_bytes,
                                                       max_prio=max_prio, live=live),
                                     name="batches.lease")
        try:
            return await asyncio.shield(leasing)
        except asyncio.CancelledError:
            # give it back from a callback, not by awaiting here: a second cancel (the link
            # dropped, then the agent stops) interrupted that await and kept the lease
            # (review finding 7); the outbox owns the give-back until it closes
            leasing.add_done_callback(self._give_back)
            raise

    def _give_back(self, leasing: asyncio.Task[list[Leased]]) -> None:
        if leasing.cancelled() or leasing.exception() is not None:
            return
        if leased := leasing.result():
            self.outbox.detach(self.outbox.release([item.seq for item in leased]),
                               name="batches.release")
