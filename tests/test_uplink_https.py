"""The HTTPS uplink against the reference receiver's endpoint (TLS verified): delivery,
Retry-After honoured on 503, dead letters after repeated 4xx."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import pytest
from aiohttp import web

from edge.buffer.async_outbox import AsyncOutbox
from edge.buffer.gaps import make_gap_factory
from edge.buffer.store import Outbox
from edge.clock import Clock, TimeQuality
from edge.config import UplinkConfig
from edge.config_loader import validate
from edge.model import Event, EventType
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from edge.uplink.https import HttpsUplink
from hil.broker import free_port
from hil.pki import Pki
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.store import ReceiverStore
from hil.receiver.web import FAIL_KEY, serve
from tests.outbox_sql import store_of

GW = "gw-320508-0007"


class HttpsRig:
    def __init__(self, outbox: AsyncOutbox, uplink: HttpsUplink, store: ReceiverStore,
                 runner: web.AppRunner) -> None:
        self.outbox, self.uplink, self.store, self.runner = outbox, uplink, store, runner

    @property
    def fail_next(self) -> list[tuple[int, str | None]]:
        return self.runner.app[FAIL_KEY]

    async def put(self, n: int) -> list[str]:
        events = [Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED, device="d",
                        data={"n": i}) for i in range(n)]
        await self.outbox.put_many(events)
        return [e.id for e in events]

    def received(self) -> set[str]:
        return {r[0] for r in self.store.db.execute("SELECT id FROM events")}


@contextlib.asynccontextmanager
async def https_rig(tmp_path: Path, pki: Pki, **cfg: Any) -> AsyncIterator[HttpsRig]:
    key = Ed25519PrivateKey.generate()
    store = ReceiverStore(tmp_path / "rx.db")
    receiver = Receiver(store, load_gateway_keys({GW: raw_public_key(key.public_key()).hex()}))
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki.cert("broker"), pki.key("broker"))
    port = free_port()
    runner = await serve(store, port=port, receiver=receiver, tls=server_tls)
    outbox = AsyncOutbox(Outbox(tmp_path / "o.db", max_attempts=int(cfg.pop("max_attempts", 5)),
                                gap_factory=make_gap_factory(Clock("system"))),
                         commit_max_wait_s=0.001)
    await outbox.open()
    config = validate(UplinkConfig, {
        "kind": "https", "host": "127.0.0.1", "port": port,
        "base_url": f"https://127.0.0.1:{port}", "boot_delay_max_s": 0,
        "tls": {"ca_file": str(pki.cert("ca"))}, "reconnect_base_s": 0.05,
        "reconnect_cap_s": 0.2, "replay_events_per_s": 100_000, **cfg})
    uplink = HttpsUplink(config, gateway_id=GW, signer=Signer(key), outbox=outbox,
                         base_dir=tmp_path)
    tasks = [asyncio.create_task(outbox.run()), asyncio.create_task(uplink.run())]
    try:
        yield HttpsRig(outbox, uplink, store, runner)
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await outbox.drain()
        await outbox.close()
        await runner.cleanup()
        store.close()


async def wait_for(predicate: object, timeout_s: float) -> None:
    start = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - start < timeout_s, "condition not met"
        await asyncio.sleep(0.02)


async def test_https_delivers_and_acks(tmp_path: Path, pki: Pki) -> None:
    async with https_rig(tmp_path, pki) as rig:
        ids = await rig.put(500)
        await wait_for(lambda: set(ids) <= rig.received(), 10)
        await wait_for(lambda: store_of(rig.outbox).stats()["depth"] == 0, 5)
        assert rig.uplink.stats.connected


async def test_503_with_retry_after_is_honoured_and_nothing_lost(tmp_path: Path,
                                                                 pki: Pki) -> None:
    async with https_rig(tmp_path, pki) as rig:
        rig.fail_next.extend([(503, "1"), (429, "1")])
        started = time.monotonic()
        ids = await rig.put(10)
        await wait_for(lambda: set(ids) <= rig.received(), 10)
        assert time.monotonic() - started >= 2.0  # two Retry-After: 1 waits
        assert rig.uplink.stats.failures == {"http.503": 1, "http.429": 1}
        assert store_of(rig.outbox).stats()["dead_letters"] == 0


async def test_repeated_4xx_dead_letters_the_batch(tmp_path: Path, pki: Pki) -> None:
    async with https_rig(tmp_path, pki, max_attempts=3) as rig:
        rig.fail_next.extend([(400, None)] * 3)
        await rig.put(5)
        await wait_for(lambda: store_of(rig.outbox).stats()["dead_letters"] == 5, 10)
        later = await rig.put(5)  # the queue head is not blocked
        await wait_for(lambda: set(later) <= rig.received(), 10)


async def test_https_refuses_an_unknown_ca(tmp_path: Path, pki: Pki) -> None:
    from hil.pki import ensure_pki

    other = ensure_pki(tmp_path / "other")
    async with https_rig(tmp_path, pki, tls={"ca_file": str(other.cert("ca"))}) as rig:
        ids = await rig.put(3)
        await wait_for(lambda: rig.uplink.stats.failures.get("uplink.tls", 0) >= 2, 10)
        assert not set(ids) & rig.received()
        assert store_of(rig.outbox).stats()["depth"] == 3


@pytest.mark.parametrize("base_url", ["http://127.0.0.1:1"])
def test_plain_http_needs_tls_false(base_url: str) -> None:
    from edge.config import EdgeConfig
    from edge.config_loader import cross_check

    cfg = validate(EdgeConfig, {
        "gateway": {"id": "gw", "county_code": "320508", "key_file": "k", "state_dir": "s"},
        "uplink": {"kind": "https", "host": "127.0.0.1", "port": 1, "base_url": base_url,
                   "tls": {"ca_file": "ca.pem"}}})
    assert any("https://" in msg for _loc, msg in cross_check(cfg))


TOKEN = "tok-3f9a1c77e2"  # must never leave the Authorization header


class PlainPeer:
    """A plaintext aiohttp server on loopback that records whatever reaches it."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    async def _any(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.read())
        return web.json_response({"accepted": 1})  # a foreign 2xx must not ack anything

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._any)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


@contextlib.asynccontextmanager
async def redirecting_platform(pki: Pki, location: str) -> AsyncIterator[tuple[int, list[str]]]:
    """A real TLS aiohttp server on loopback answering every POST with 307 to ``location``
    (``{port}`` in it is replaced by the server's own port); yields (port, seen paths)."""
    port = free_port()
    seen: list[str] = []

    async def post(request: web.Request) -> web.Response:
        seen.append(request.path)
        await request.read()
        raise web.HTTPTemporaryRedirect(location.replace("{port}", str(port)))

    app = web.Application()
    app.router.add_post("/{tail:.*}", post)
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(pki.cert("broker"), pki.key("broker"))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=server_tls).start()
    try:
        yield port, seen
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def uplink_to(tmp_path: Path, pki: Pki, port: int) -> AsyncIterator[HttpsUplink]:
    outbox = AsyncOutbox(Outbox(tmp_path / "o.db", gap_factory=make_gap_factory(Clock("system"))),
                         commit_max_wait_s=0.001)
    await outbox.open()
    config = validate(UplinkConfig, {
        "kind": "https", "host": "127.0.0.1", "port": port,
        "base_url": f"https://127.0.0.1:{port}", "boot_delay_max_s": 0,
        "tls": {"ca_file": str(pki.cert("ca"))}, "reconnect_base_s": 0.05,
        "reconnect_cap_s": 0.2})
    uplink = HttpsUplink(config, gateway_id=GW, signer=Signer(Ed25519PrivateKey.generate()),
                         outbox=outbox, base_dir=tmp_path, token=TOKEN)
    tasks = [asyncio.create_task(outbox.run()), asyncio.create_task(uplink.run())]
    try:
        await outbox.put_many([Event(EventType.READING, 3, time.time_ns(), TimeQuality.SYNCED,
                                     device="d", data={"n": i}) for i in range(3)])
        yield uplink
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await outbox.drain()
        await outbox.close()


def assert_no_secret(uplink: HttpsUplink, caplog: pytest.LogCaptureFixture) -> None:
    shown = [uplink.stats.last_error, repr(uplink.stats), caplog.text]
    for text in shown:
        assert "Bearer" not in text
        assert TOKEN not in text


async def test_a_redirect_to_plain_http_sends_nothing_in_cleartext(
        tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    async with PlainPeer() as plain, \
            redirecting_platform(pki, f"http://127.0.0.1:{plain.port}/v1/x") as (port, seen), \
            uplink_to(tmp_path, pki, port) as uplink:
        await wait_for(lambda: len(seen) >= 2, 10)  # retried, never followed
        await asyncio.sleep(0.3)
        assert plain.bodies == []
        assert store_of(uplink.outbox).stats()["depth"] == 3  # not acked, not deleted
        assert store_of(uplink.outbox).stats()["dead_letters"] == 0
        assert uplink.stats.events_acked == 0
        assert uplink.stats.failures.get("http.redirect", 0) >= 2
        assert "307" in uplink.stats.last_error
    assert_no_secret(uplink, caplog)


async def test_a_redirect_loop_leaks_no_header(tmp_path: Path, pki: Pki,
                                               caplog: pytest.LogCaptureFixture) -> None:
    async with redirecting_platform(pki, "https://127.0.0.1:{port}/v1/again") as (port, seen), \
            uplink_to(tmp_path, pki, port) as uplink:
        await wait_for(lambda: uplink.stats.failures.get("http.redirect", 0) >= 3, 10)
        assert set(seen) == {f"/v1/gateways/{GW}/events"}  # the loop was never entered
        assert store_of(uplink.outbox).stats()["depth"] == 3
    assert_no_secret(uplink, caplog)


def test_stored_error_text_never_carries_request_headers() -> None:
    import aiohttp
    from multidict import CIMultiDict, CIMultiDictProxy
    from yarl import URL

    from edge.uplink.https import describe_error

    url = URL("https://127.0.0.1:1/v1/gateways/gw/events")
    info = aiohttp.RequestInfo(url, "POST", CIMultiDictProxy(CIMultiDict(
        {"Authorization": f"Bearer {TOKEN}"})), url)
    for exc in (aiohttp.TooManyRedirects(info, (), status=307, message="Temporary Redirect"),
                aiohttp.ClientResponseError(info, (), status=500, message=f"Bearer {TOKEN}"),
                aiohttp.ClientPayloadError(f"Authorization: Bearer {TOKEN}"),
                OSError(f"x Bearer {TOKEN}")):
        assert TOKEN in repr(exc) or TOKEN in str(exc)  # what used to be stored
        text = describe_error(exc)
        assert TOKEN not in text
        assert "Bearer" not in text
        assert type(exc).__name__ in text
