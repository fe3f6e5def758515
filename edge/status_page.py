"""The technicians' status page: live values, health, alarms, outbox, uplink, clock, probes.

Off by default. When ``observability.status_page_port`` is set it binds to
``status_page_host`` (loopback, or the cabinet's service interface) and asks for HTTP Basic
credentials: any user name, the password in ``status_page_password_file`` (no default; a
placeholder refuses to start). State-changing requests need ``X-Requested-With`` so that a
page on another origin cannot make the browser of a logged-in technician probe devices.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp import web

from edge.errors import DeviceError
from edge.http_site import start_site

StatusFn = Callable[[], Awaitable[dict[str, Any]]]
ProbeFn = Callable[[str], Awaitable[dict[str, Any]]]
PAGE = (resources.files("edge") / "status_page.html").read_text(encoding="utf-8")
PASSWORD_KEY: web.AppKey[str] = web.AppKey("password", str)
STATUS_KEY: web.AppKey[StatusFn] = web.AppKey("status")
PROBE_KEY: web.AppKey[ProbeFn] = web.AppKey("probe")
PROBE_TIMEOUT_S = 15.0


@web.middleware
async def _auth(request: web.Request,
                handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                ) -> web.StreamResponse:
    header = request.headers.get("Authorization", "")
    password = ""
    if header.startswith("Basic "):
        try:
            password = base64.b64decode(header[6:]).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            password = ""
    if not hmac.compare_digest(password.encode(), request.app[PASSWORD_KEY].encode()):
        return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="edge"'})
    response = await handler(request)
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Cache-Control"] = "no-store"
    return response


async def _page(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def _status(request: web.Request) -> web.Response:
    return web.json_response(await request.app[STATUS_KEY]())


async def _probe(request: web.Request) -> web.Response:
    if request.headers.get("X-Requested-With") != "edge":
        raise web.HTTPForbidden(text="missing X-Requested-With")
    name = request.match_info["device"]
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            values = await request.app[PROBE_KEY](name)
    except KeyError:
        raise web.HTTPNotFound(text=f"no device {name}") from None
    except (DeviceError, TimeoutError) as exc:
        return web.json_response({"ok": False, "error": str(exc) or "timed out"}, status=502)
    return web.json_response({"ok": True, "values": values})


async def serve_status_page(status: StatusFn, probe: ProbeFn, *, host: str, port: int,
                            password: str) -> web.AppRunner:
    """Start the page; return its runner."""
    app = web.Application(middlewares=[_auth])
    app[PASSWORD_KEY] = password
    app[STATUS_KEY] = status
    app[PROBE_KEY] = probe
    app.router.add_get("/", _page)
    app.router.add_get("/api/status", _status)
    app.router.add_post("/api/probe/{device}", _probe)
    return await start_site(app, host=host, port=port)
