"""The receiver's web page and JSON API (aiohttp), bound to loopback.

``/`` shows gateways (online/offline, outbox depth), open cases and recent events and refreshes
itself every 2 s; ``/api/state`` is the same as JSON; ``/open311/v2/requests.json`` exports
open cases as Open311 GeoReport v2 service requests — off unless enabled, because coordinates
of underground utilities may be sensitive (design/devices.md §1.6, reliability.md S13).
"""

from __future__ import annotations

import html
import ssl
from importlib import resources
from typing import Any

from aiohttp import web

from edge.http_site import start_site
from hil.receiver.core import MAX_EVENTS_BYTES, Receiver
from hil.receiver.store import ReceiverStore

STORE_KEY: web.AppKey[ReceiverStore] = web.AppKey("store", ReceiverStore)
RECEIVER_KEY: web.AppKey[Receiver | None] = web.AppKey("receiver")
# statuses to answer the next POSTs with, for tests of the gateway's backoff: (status, retry)
FAIL_KEY: web.AppKey[list[tuple[int, str | None]]] = web.AppKey("fail_next")
OPEN311_KEY: web.AppKey[bool] = web.AppKey("open311", bool)

PAGE = (resources.files("hil.receiver") / "page.html").read_text(encoding="utf-8")


def state(store: ReceiverStore, *, events: int = 30) -> dict[str, Any]:
    """Return what the page shows."""
    gateways = store.gateways()
    return {
        "gateways": gateways,
        "open_cases": store.cases("open"),
        "recent_events": store.events(events),
        "counters": store.counters(),
        "seq_gaps": {g["gw"]: store.seq_gaps(g["gw"]) for g in gateways},
    }


def open311(store: ReceiverStore) -> list[dict[str, Any]]:
    """Return open cases as GeoReport v2 service requests (devices.md §1.6 mapping)."""
    return [{
        "service_request_id": str(case["case_no"]),
        "status": "open",
        "service_code": case["event_class"] or case["class"],
        "description": html.escape(f"{case['kind']} value {case['value']}")[:4000],
        "requested_datetime": case["opened_ts"],
        "lat": case["lat"], "long": case["lon"],
        "attribute": {"asset_code": case["asset_code"], "alarm_id": case["alarm_id"]},
    } for case in store.cases("open")]


async def _page(_request: web.Request) -> web.Response:
    return web.Response(text=PAGE, content_type="text/html")


async def _state(request: web.Request) -> web.Response:
    return web.json_response(state(request.app[STORE_KEY]))


async def _cases(request: web.Request) -> web.Response:
    wanted = request.query.get("state")
    return web.json_response(request.app[STORE_KEY].cases(wanted))


async def _open311(request: web.Request) -> web.Response:
    if not request.app[OPEN311_KEY]:
        raise web.HTTPNotFound(text="Open311 export is off (--open311 to enable)")
    return web.json_response(open311(request.app[STORE_KEY]))


async def _post_events(request: web.Request) -> web.Response:
    receiver = request.app[RECEIVER_KEY]
    if receiver is None:
        raise web.HTTPNotFound(text="this receiver takes no HTTPS uplink")
    failing = request.app[FAIL_KEY]
    if failing:
        status, retry = failing.pop(0)
        return web.Response(status=status, headers={"Retry-After": retry} if retry else {})
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        request.app[STORE_KEY].bump("rejected.too_large")  # counted like an MQTT one
        raise
    gw = request.match_info["gw"]
    outcome = receiver.handle(f"edge/v1/{gw}/events", body)
    if outcome.rejected:
        return web.json_response({"rejected": outcome.rejected}, status=400)
    return web.json_response({"accepted": outcome.accepted, "duplicates": outcome.duplicates})


def make_app(store: ReceiverStore, *, open311_enabled: bool = False,
             receiver: Receiver | None = None) -> web.Application:
    """Return the aiohttp application (with the HTTPS uplink endpoint when ``receiver``)."""
    app = web.Application(client_max_size=MAX_EVENTS_BYTES)
    app[STORE_KEY] = store
    app[OPEN311_KEY] = open311_enabled
    app[RECEIVER_KEY] = receiver
    app[FAIL_KEY] = []
    app.router.add_post("/v1/gateways/{gw}/events", _post_events)
    app.router.add_get("/", _page)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/cases", _cases)
    app.router.add_get("/open311/v2/requests.json", _open311)
    return app


async def serve(store: ReceiverStore, *, port: int, host: str = "127.0.0.1",
                open311_enabled: bool = False, receiver: Receiver | None = None,
                tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """Start serving; return the runner (``await runner.cleanup()`` stops it)."""
    return await start_site(make_app(store, open311_enabled=open311_enabled, receiver=receiver),
                            host=host, port=port, tls=tls)
