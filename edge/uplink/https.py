"""The HTTPS uplink: ``POST {base}/v1/gateways/{gw}/events`` with the signed envelope.

The only module that imports aiohttp's client. 2xx acks the batch (the receiver dedups);
429 and 5xx release it and back off, honouring ``Retry-After``; any other 4xx counts an
attempt and dead-letters after ``max_attempts`` (design/events.md §HTTPS uplink). TLS is
verified always; ``Idempotency-Key`` carries the batch id (reliability.md §2.4).

Redirects are never followed: a 3xx releases the batch and backs off like a 5xx. Following
one sent the envelope and the bearer token to wherever ``Location`` pointed, plain http://
included, and a foreign 2xx acked the batch (security review 19 #5). What is stored as
``last_error`` (shown by ``edge status``, the status page and the log) is built by
``describe_error`` from fields that cannot carry our request headers, never ``repr(exc)``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from pathlib import Path

import aiohttp

from edge.backoff import full_jitter
from edge.buffer.lease import EventQueue
from edge.config import UplinkConfig
from edge.errors import LinkError, as_uplink_error
from edge.security.signing import Signer
from edge.transports.tls import client_context
from edge.uplink.batches import BatchSource, SignedBatch
from edge.uplink.mqtt import LinkStats

log = logging.getLogger(__name__)
RETRY_AFTER_CAP_S = 3600.0


def describe_error(exc: BaseException) -> str:
    """Return a short description of a send failure that never includes request headers.

    aiohttp's exceptions carry the request (``Authorization: Bearer ...`` included) in their
    repr, and some carry server-chosen text; only the class name and fixed fields are kept.
    """
    detail = ""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        reason = getattr(cert_error, "verify_message", None) or type(cert_error).__name__
        detail = f"certificate refused ({reason})"
    elif isinstance(exc, aiohttp.ClientResponseError):
        detail = f"HTTP {exc.status}"
    elif isinstance(exc, ssl.SSLError):
        detail = str(exc.reason or "TLS failure")
    elif isinstance(exc, TimeoutError):
        detail = "timed out"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        detail = f"cannot connect ({exc.os_error.strerror or 'refused'})"
    elif isinstance(exc, OSError) and exc.strerror:
        detail = exc.strerror  # the errno text; args may hold anything
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: fall back to our own backoff
    if math.isnan(seconds):  # float() takes "nan"; min/max would pass it through
        return None
    return min(max(seconds, 0.0), RETRY_AFTER_CAP_S)


class HttpsUplink:
    """Posts batches one at a time; ``run()`` never returns (cancel to stop)."""

    def __init__(self, cfg: UplinkConfig, *, gateway_id: str, signer: Signer,
                 outbox: EventQueue, base_dir: Path, token: str | None = None) -> None:
        self.cfg = cfg
        self.outbox = outbox
        self.base_dir = base_dir
        self._token = token
        self.url = f"{(cfg.base_url or '').rstrip('/')}/v1/gateways/{gateway_id}/events"
        self.stats = LinkStats()
        self.batches = BatchSource(outbox, gateway_id=gateway_id, signer=signer,
                                   replay_events_per_s=cfg.replay_events_per_s)
        self._attempt = 0
        self._outage_logged = False

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.cfg.tls is False:
            return False
        try:
            return client_context(self.cfg.tls, self.base_dir)
        except LinkError as exc:  # the transport's; the uplink's own code, as MQTT's
            raise as_uplink_error(exc) from exc

    async def run(self, *, boot_delay_s: float | None = None) -> None:
        """Send forever."""
        delay = full_jitter(0, self.cfg.boot_delay_max_s, self.cfg.boot_delay_max_s) \
            if boot_delay_s is None else boot_delay_s
        await asyncio.sleep(delay)
        timeout = aiohttp.ClientTimeout(total=self.cfg.connect_timeout_s + 20,
                                        connect=self.cfg.connect_timeout_s)
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=1)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers,
                                         connector=connector) as session:
            while True:
                batch = await self.batches.next(self.cfg.batch_max_events,
                                                self.cfg.batch_max_bytes)
                wait_s = await self._send(session, batch)
                if wait_s > 0:
                    await asyncio.sleep(wait_s)

    async def _send(self, session: aiohttp.ClientSession, batch: SignedBatch) -> float:
        """Post one batch; return how long to wait before the next."""
        self.stats.attempts += 1
        try:
            async with session.post(self.url, data=batch.envelope, allow_redirects=False,
                                    headers={"Idempotency-Key": batch.batch_id}) as resp:
                status, retry_after = resp.status, _retry_after(resp.headers.get("Retry-After"))
                await resp.read()
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            await self.outbox.release(batch.seqs)
            code = "uplink.tls" if "SSL" in repr(exc) or "certificate" in str(exc).lower() \
                else "uplink.unavailable"
            return self._failed(code, f"{self.url}: {describe_error(exc)}", None)
        if 200 <= status < 300:
            await self.outbox.ack(batch.seqs)
            self.stats.batches_published += 1
            self.stats.bytes_published += len(batch.envelope)
            self.stats.events_acked += len(batch.seqs)
            self.stats.last_progress_mono = time.monotonic()
            if not self.stats.connected:
                self.stats.connected, self.stats.connects = True, self.stats.connects + 1
                self.stats.connected_since = time.monotonic()
                if self._outage_logged:
                    log.info("uplink: %s accepts batches again", self.url)
                self._outage_logged = False
            self._attempt = 0
            return 0.0
        if 300 <= status < 400:  # the platform moved: an operator fixes base_url, nothing lost
            await self.outbox.release(batch.seqs)
            return self._failed("http.redirect", f"{self.url}: HTTP {status} redirect refused "
                                "(redirects are never followed; check uplink.base_url)", None)
        if status == 429 or status >= 500:
            await self.outbox.release(batch.seqs)
            return self._failed(f"http.{status}", f"{self.url}: HTTP {status}", retry_after)
        dead = await self.outbox.nack(batch.seqs, f"HTTP {status}")
        self.stats.dead_lettered += len(dead)
        self.stats.failures[f"http.{status}"] = self.stats.failures.get(f"http.{status}", 0) + 1
        if dead:
            log.error("uplink: %d events dead-lettered after HTTP %d", len(dead), status)
        return 0.0

    def _failed(self, code: str, message: str, retry_after_s: float | None) -> float:
        self.stats.connected = False
        self.stats.failures[code] = self.stats.failures.get(code, 0) + 1
        self.stats.last_error = message
        if not self._outage_logged:
            log.warning("uplink: %s", message)  # once per outage
            self._outage_logged = True
        self._attempt += 1
        jitter = full_jitter(self._attempt, self.cfg.reconnect_base_s, self.cfg.reconnect_cap_s)
        return max(jitter, retry_after_s or 0.0)
