"""The receiver's page in real headless Chromium: an alarm raised in the test shows up."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest

from edge.clock import TimeQuality
from edge.model import Alarm, Asset, Event, EventType, encode_batch, encode_event
from edge.security.signing import Ed25519PrivateKey, Signer, raw_public_key
from hil.broker import free_port
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.store import ReceiverStore
from hil.receiver.web import open311, serve

GW = "gw-320508-0007"
ARTIFACTS = Path(__file__).resolve().parents[1] / "var" / "test-artifacts"


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (make system-deps): a skipped browser test "
                        "hides a gap")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


async def run_chromium(tmp_path: Path, *args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", f"--user-data-dir={tmp_path / 'chrome'}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return out.decode()


def raise_alarm(store: ReceiverStore) -> None:
    key = Ed25519PrivateKey.generate()
    receiver = Receiver(store, load_gateway_keys({GW: raw_public_key(key.public_key()).hex()}))
    receiver.handle(f"edge/v1/{GW}/state", b'{"online": true, "version": "0.1.0", '
                                           b'"outbox": {"depth": 7}}')
    asset = Asset("3205080106000123", "0106", "320508001002003", "路灯井盖 干将东路 12号",
                  31.3105, 120.6302)
    alarm = Event(EventType.ALARM, 0, time.time_ns(), TimeQuality.SYNCED, device="manhole-12",
                  asset=asset, alarm=Alarm("cover_open", "raised",
                                           "3205080106000123:cover_open:1", 1, 38.5, 15.0, "deg"))
    body = encode_batch(GW, 1, time.time_ns(), [encode_event(alarm, 1)])
    assert receiver.handle(f"edge/v1/{GW}/events", Signer(key).envelope(body)).opened == [1]


async def test_page_shows_gateway_and_alarm_in_chromium(tmp_path: Path) -> None:
    store = ReceiverStore(tmp_path / "rx.db")
    raise_alarm(store)
    port = free_port()
    runner = await serve(store, port=port)
    try:
        url = f"http://127.0.0.1:{port}/"
        dom = await run_chromium(tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "receiver-page.png"
        shot.unlink(missing_ok=True)
        await run_chromium(tmp_path, "--virtual-time-budget=5000", "--window-size=1200,800",
                           f"--screenshot={shot}", url)
    finally:
        await runner.cleanup()
        store.close()
    # rendered by the page's script from /api/state, not present in the served HTML
    assert "cover_open" in dom
    assert "路灯井盖 干将东路 12号" in dom
    assert 'class="online">online' in dom
    assert ">7<" in dom  # outbox depth from the gateway's birth message
    assert shot.exists()
    assert shot.stat().st_size > 10_000


async def test_open311_export_is_off_by_default(tmp_path: Path) -> None:
    from aiohttp import ClientSession

    store = ReceiverStore(tmp_path / "rx.db")
    raise_alarm(store)
    port = free_port()
    runner = await serve(store, port=port)
    try:
        async with ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/open311/v2/requests.json") as resp:
                assert resp.status == 404
            async with session.get(f"http://127.0.0.1:{port}/api/state") as resp:
                state = await resp.json()
                assert state["open_cases"][0]["kind"] == "cover_open"
    finally:
        await runner.cleanup()
    requests = open311(store)
    assert requests[0]["service_code"] == "0106"
    assert requests[0]["attribute"]["alarm_id"] == "3205080106000123:cover_open:1"
    assert requests[0]["lat"] == 31.3105
    store.close()
