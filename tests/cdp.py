"""Drive real headless Chromium over the DevTools protocol (no webdriver needed)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from hil.broker import free_port

# Chromium's first start on a loaded 2-core CI box took over 10 s once (the old bound)
STARTUP_TIMEOUT_S = 45.0
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install chromium (make system-deps)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


class Page:
    """One tab: navigate, evaluate JavaScript, screenshot."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self.ws.send_str(json.dumps({"id": msg_id, "method": method, "params": params}))
        async with asyncio.timeout(30):
            while True:
                reply = json.loads((await self.ws.receive()).data)
                if reply.get("id") == msg_id:
                    if "error" in reply:
                        raise RuntimeError(reply["error"])
                    result: dict[str, Any] = reply.get("result", {})
                    return result

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, awaitPromise=True,
                                 returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = 10) -> Any:
        async with asyncio.timeout(timeout_s):
            while not (value := await self.evaluate(expression)):
                await asyncio.sleep(0.1)
        return value

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(shot["data"]))


async def _first_tabs(http: aiohttp.ClientSession, port: int,
                      proc: asyncio.subprocess.Process) -> list[dict[str, Any]]:
    """Wait for Chromium's debugging port to list a page (a CI leg once took over 10 s)."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            msg = f"chromium exited with {proc.returncode} before its debugging port opened"
            raise RuntimeError(msg)
        try:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                tabs = [t for t in await resp.json() if t["type"] == "page"]
                if tabs:
                    return tabs
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.1)
    msg = f"chromium listed no page on port {port} within {STARTUP_TIMEOUT_S:g} s"
    raise TimeoutError(msg)


@contextlib.asynccontextmanager
async def browser(tmp_path: Path, *, basic_auth: tuple[str, str] | None = None
                  ) -> AsyncIterator[Page]:
    """Start Chromium with a debugging port on loopback; yield its first tab."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        chromium(), *FLAGS, f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1",
        f"--user-data-dir={tmp_path / 'chrome'}", "--window-size=1200,800", "about:blank",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        async with aiohttp.ClientSession() as http:
            tabs = await _first_tabs(http, port, proc)
            async with http.ws_connect(tabs[0]["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Runtime.enable")
                if basic_auth is not None:
                    user, password = basic_auth
                    token = base64.b64encode(f"{user}:{password}".encode()).decode()
                    await page.call("Network.enable")
                    await page.call("Network.setExtraHTTPHeaders",
                                    headers={"Authorization": f"Basic {token}"})
                yield page
    finally:
        proc.kill()
        await proc.wait()
