"""The receiver's web page and JSON API (aiohttp), bound to loopback.

``/`` shows gateways (online/offline, outbox depth), open cases and recent events and refreshes
itself every 2 s; ``/api/state`` is the same as JSON; ``/open311/v2/requests.json`` exports
open cases as Open311 GeoReport v2 service requests — off unless enabled, because coordinates
of underground utilities may be sensitive (design/devices.md §1.6, reliability.md S13).

``/map`` is the operators' map (static/map.html + map.js on a vendored Leaflet, no CDN:
docs/decisions.md D55): assets by state, open alarms by grid, trucks with their tracks, a
day's playback and work coverage. It reads ``/api/map`` (polled every second),
``/api/map/device`` (a device's last values and case history), ``/api/map/track`` (one
tracker, at most a day) and ``/api/map/coverage`` (the newest work coverage per truck).
Every answer is bounded (store.py ``MAP_MAX_*``); the page sets text only through
``textContent`` and runs under a CSP that allows no inline script.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import ssl
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Protocol
from urllib.parse import urlsplit

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge.ops.http_site import start_site
from hil.receiver.core import MAX_EVENTS_BYTES, Receiver
from hil.receiver.store import MAP_MAX_TRACK_S, MAP_MAX_VALUES


class MapStore(Protocol):
    """What the map reads of a store: SQLite (``store.py``) or PostgreSQL (``pg_store.py``).

    Shapes and bounds are those of ``ReceiverStore``'s methods of the same names (their
    docstrings are the contract; ``MAP_MAX_*`` in store.py are the bounds).
    """

    def cases(self, state: str | None = None) -> list[dict[str, Any]]:
        """Return cases (with ``grid``), newest first."""

    def gateways(self) -> list[dict[str, Any]]:
        """Return every gateway with its last state."""

    def map_assets(self, limit: int = ...) -> list[dict[str, Any]]:
        """Return every non-tracker device with its asset block and newest event."""

    def map_vehicles(self) -> list[dict[str, Any]]:
        """Return every tracker's newest position (by fix time)."""

    def map_device_values(self, gw: str, device: str, limit: int = ...) -> list[dict[str, Any]]:
        """Return a device's newest events, newest first."""

    def map_device_cases(self, gw: str, device: str, limit: int = ...) -> list[dict[str, Any]]:
        """Return a device's cases, newest first."""

    def map_track(self, gw: str, device: str, start_ns: int, end_ns: int, limit: int = ...
                  ) -> list[tuple[int, float, float, float | None, float | None]]:
        """Return a tracker's positions in [start_ns, end_ns), oldest first."""

    def map_work_coverage(self) -> list[dict[str, Any]]:
        """Return the newest ``work_coverage`` event of each (gw, device)."""


class WebStore(MapStore, Protocol):
    """What the whole web app reads of a store (``/``, ``/api/state``, Open311, the map)."""

    def bump(self, name: str, n: int = 1) -> None:
        """Add to a counter."""

    def counters(self) -> dict[str, int]:
        """Return all counters."""

    def events(self, limit: int = 50, type_: str | None = None) -> list[dict[str, Any]]:
        """Return recent events, newest first."""

    def seq_gaps(self, gw: str) -> list[tuple[int, int]]:
        """Return missing seq ranges of a gateway."""


STORE_KEY: web.AppKey[WebStore] = web.AppKey("store")
RECEIVER_KEY: web.AppKey[Receiver[Any] | None] = web.AppKey("receiver")
# statuses to answer the next POSTs with, for tests of the gateway's backoff: (status, retry)
FAIL_KEY: web.AppKey[list[tuple[int, str | None]]] = web.AppKey("fail_next")
OPEN311_KEY: web.AppKey[bool] = web.AppKey("open311", bool)

PAGE = (resources.files("hil.receiver") / "page.html").read_text(encoding="utf-8")
STATIC = Path(str(resources.files("hil.receiver") / "static"))
MAP_PAGE = (STATIC / "map.html").read_text(encoding="utf-8")
MAX_MAP_CONFIG_BYTES = 4 * 1024 * 1024  # roads and grid outlines of a district
MAP_MAX_OPEN_CASES = 1000  # listed on the map (newest first); the count is of all
STORE_RETRY_AFTER_S = 5  # a batch that met a store failure: the gateway retries after this
log = logging.getLogger("hil.receiver")


@dataclass(frozen=True)
class MapConfig:
    """What the map draws besides the store: tiles, road centrelines, grid-cell outlines.

    ``tiles_url`` is a Leaflet template (``https://tiles.city.example/{z}/{x}/{y}.png``, a
    city's own tile server); None draws a coordinate grid and works offline. ``roads`` maps a
    work road id to ``{"line": [[lat, lon], ...]}`` (a ``polygon`` area needs none: its cell
    grid travels in the coverage event). ``grids`` maps a grid code (单元网格) to its outline;
    a grid without one is drawn as the box around its assets.
    """

    tiles_url: str | None = None
    tiles_attribution: str = ""
    roads: dict[str, Any] = field(default_factory=dict)
    grids: dict[str, list[list[float]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.tiles_url is not None:
            parts = urlsplit(self.tiles_url)
            if parts.scheme not in {"http", "https"} or not parts.netloc \
                    or not all(k in self.tiles_url for k in ("{z}", "{x}", "{y}")):
                raise ValueError(f"tiles_url must be an http(s) URL with {{z}}, {{x}} and {{y}}: "
                                 f"{self.tiles_url!r}")

    def tiles_origin(self) -> str | None:
        """Return the tile server's origin (scheme://host:port) for the page's CSP."""
        if self.tiles_url is None:
            return None
        parts = urlsplit(self.tiles_url)
        # {s} subdomains: allow the parent's subdomains, which is what the template asks
        host = parts.netloc.replace("{s}", "*")
        return f"{parts.scheme}://{host}"


MAP_KEY: web.AppKey[MapConfig] = web.AppKey("map", MapConfig)


LatLon = Annotated[list[Annotated[float, Field(allow_inf_nan=False)]],
                   Field(min_length=2, max_length=2)]


class _RoadFile(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    line: list[LatLon] = Field(min_length=2, max_length=2000)


class _MapFile(BaseModel):
    """The map config file: what ``MapConfig`` takes, checked (a typo is an error, not a gap)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    tiles_url: str | None = Field(default=None, max_length=2000)
    tiles_attribution: str = Field(default="", max_length=500)
    roads: dict[str, _RoadFile] = Field(default_factory=dict, max_length=10_000)
    grids: dict[str, list[LatLon]] = Field(default_factory=dict, max_length=100_000)


def load_map_config(path: Path) -> MapConfig:
    """Read a map config JSON file (``{"tiles_url", "tiles_attribution", "roads", "grids"}``).

    A missing file is the offline default. Raises MapConfigError (a ValueError) for a file
    that is not one, its message one line naming the file, the key and what is allowed.
    """
    if not path.exists():
        return MapConfig()
    if path.stat().st_size > MAX_MAP_CONFIG_BYTES:
        raise MapConfigError(f"{path}: over {MAX_MAP_CONFIG_BYTES} bytes")
    try:
        doc = _MapFile.model_validate_json(path.read_bytes())
        return MapConfig(tiles_url=doc.tiles_url, tiles_attribution=doc.tiles_attribution,
                         roads={k: v.model_dump() for k, v in doc.roads.items()},
                         grids=doc.grids)
    except ValidationError as exc:
        raise MapConfigError(f"{path}: {_map_problem(exc)}") from None
    except ValueError as exc:  # MapConfig's own checks (tiles_url's placeholders)
        raise MapConfigError(f"{path}: {exc}") from None


class MapConfigError(ValueError):
    """A map config file that is not one: the message is one line (file, key, what is allowed)."""


def _map_problem(exc: ValidationError) -> str:
    """Say a map file's first problem in words: where, and what is allowed there."""
    err = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in err["loc"]) or "the file"
    if err["type"] == "extra_forbidden":
        parent = ".".join(str(part) for part in err["loc"][:-1])
        allowed = ", ".join(_RoadFile.model_fields if parent else _MapFile.model_fields)
        return (f"unknown key {err['loc'][-1]!r}{f' in {parent}' if parent else ''} "
                f"(allowed keys: {allowed})")
    if err["type"].startswith("json"):
        return f"not JSON: {err['msg']}"
    return f"{where}: {err['msg']}"


def with_work_roads(config: MapConfig, roads: dict[str, list[list[float]]]) -> MapConfig:
    """Return ``config`` with the centrelines of ``work:`` roads added (the file's win).

    The demo passes devices.yaml's roads, so its map draws covered and missed stretches
    with no hand-copied centrelines (a road's id is its key, as in the coverage event).
    """
    merged = {rid: {"line": line} for rid, line in roads.items()}
    merged.update(config.roads)
    return MapConfig(tiles_url=config.tiles_url, tiles_attribution=config.tiles_attribution,
                     roads=merged, grids=config.grids)


def state(store: WebStore, *, events: int = 30) -> dict[str, Any]:
    """Return what the page shows."""
    gateways = store.gateways()
    return {
        "gateways": gateways,
        "open_cases": store.cases("open"),
        "recent_events": store.events(events),
        "counters": store.counters(),
        "seq_gaps": {g["gw"]: store.seq_gaps(g["gw"]) for g in gateways},
    }


def open311(store: WebStore) -> list[dict[str, Any]]:
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


def map_state(store: MapStore) -> dict[str, Any]:
    """Return what the map polls: assets with their state, open cases, trucks, coverage ids.

    An asset's ``state`` is ``alarm`` (an open case), else ``offline`` (its device said so, or
    its gateway is offline: a last will), else ``degraded``, else ``ok``. Coverage reports are
    only named here (gw, device, event id): the page fetches ``/api/map/coverage`` when they
    change, not their stretches every second.
    """
    open_cases = store.cases("open")
    alarmed = {(c["gw"], c["device"]) for c in open_cases}
    gateway_online = {g["gw"]: g["online"] for g in store.gateways()}
    assets = store.map_assets()
    for asset in assets:
        said = asset["last_data"].get("state") if asset["last_type"] == "state" else None
        if (asset["gw"], asset["device"]) in alarmed:
            asset["state"] = "alarm"
        elif said == "offline" or gateway_online.get(asset["gw"]) is False:
            asset["state"] = "offline"
        elif said == "degraded":
            asset["state"] = "degraded"
        else:
            asset["state"] = "ok"
    # an alarm storm (a district's comm_lost) must not make every poll megabytes: the newest
    # MAP_MAX_OPEN_CASES are listed, all of them colour their assets, the total is given
    return {"assets": assets, "open_cases": open_cases[:MAP_MAX_OPEN_CASES],
            "open_total": len(open_cases), "vehicles": store.map_vehicles(),
            "work_coverage": [[r["gw"], r.get("device"), r.get("id")]
                              for r in store.map_work_coverage()]}


def _int_arg(request: web.Request, name: str, default: int | None = None) -> int:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise web.HTTPBadRequest(text=f"{name} is required")
        return default
    try:
        value = int(raw, 10)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name} must be an integer") from None
    if not -(2**62) < value < 2**62:
        raise web.HTTPBadRequest(text=f"{name} is out of range")
    return value


def _str_arg(request: web.Request, name: str) -> str:
    value = request.query.get(name, "")
    if not value or len(value) > 256:
        raise web.HTTPBadRequest(text=f"{name} is required (at most 256 characters)")
    return value


def _csp(config: MapConfig) -> str:
    tiles = config.tiles_origin()
    images = "'self' data:" + (f" {tiles}" if tiles else "")
    # no inline script: data that slipped into markup could not run (the page uses
    # textContent anyway); Leaflet positions its panes with style attributes, hence styles
    return (f"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src {images}; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            f"frame-ancestors 'none'")


async def _map_page(_request: web.Request) -> web.Response:
    return web.Response(text=MAP_PAGE, content_type="text/html")


async def _map_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Put the map's CSP on it and on every static file (/static/map.html opens the page too)."""
    if request.path == "/map" or request.path.startswith("/static/"):
        response.headers["Content-Security-Policy"] = _csp(request.app[MAP_KEY])
        response.headers["X-Content-Type-Options"] = "nosniff"


async def _map_config(request: web.Request) -> web.Response:
    config = request.app[MAP_KEY]
    return web.json_response({"tiles_url": config.tiles_url,
                              "tiles_attribution": config.tiles_attribution,
                              "roads": config.roads, "grids": config.grids})


async def _map(request: web.Request) -> web.Response:
    # polled every second by every open page: 2,000 assets are ~0.5 MiB, so an unchanged
    # state is a 304 (the browser revalidates with If-None-Match; the page skips redrawing)
    body = json.dumps(map_state(request.app[STORE_KEY]), ensure_ascii=False).encode()
    etag = f'"{hashlib.blake2b(body, digest_size=16).hexdigest()}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def _map_coverage(request: web.Request) -> web.Response:
    return web.json_response(request.app[STORE_KEY].map_work_coverage())


async def _map_device(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    gw, device = _str_arg(request, "gw"), _str_arg(request, "device")
    limit = max(1, min(_int_arg(request, "values", 20), MAP_MAX_VALUES))
    return web.json_response({"gw": gw, "device": device,
                              "values": store.map_device_values(gw, device, limit),
                              "cases": store.map_device_cases(gw, device)})


async def _map_track(request: web.Request) -> web.Response:
    store = request.app[STORE_KEY]
    gw, device = _str_arg(request, "gw"), _str_arg(request, "device")
    start_ms, end_ms = _int_arg(request, "start_ms"), _int_arg(request, "end_ms")
    if end_ms <= start_ms or end_ms - start_ms > MAP_MAX_TRACK_S * 1000:
        raise web.HTTPBadRequest(text=f"need start_ms < end_ms, at most {MAP_MAX_TRACK_S} s apart")
    rows = store.map_track(gw, device, start_ms * 1_000_000, end_ms * 1_000_000)
    return web.json_response({"gw": gw, "device": device, "start_ms": start_ms,
                              "end_ms": end_ms, "points": [
                                  [t // 1_000_000, lat, lon, speed, course]
                                  for t, lat, lon, speed, course in rows]})


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
    try:
        outcome = receiver.handle(f"edge/v1/{gw}/events", body)
    except Exception as exc:  # any store failure: the batch was not refused
        # a store failure (down, locked, deadlocked) is not the batch's fault: 503 makes the
        # gateway retry it; a 400 would count toward dead-lettering a valid signed batch
        log.warning("receiver: a batch of %s was not stored (%s); answered 503", gw,
                    type(exc).__name__)
        return web.json_response({"error": "store unavailable, retry"}, status=503,
                                 headers={"Retry-After": str(STORE_RETRY_AFTER_S)})
    if outcome.rejected:
        return web.json_response({"rejected": outcome.rejected}, status=400)
    return web.json_response({"accepted": outcome.accepted, "duplicates": outcome.duplicates})


def make_app(store: WebStore, *, open311_enabled: bool = False,
             receiver: Receiver[Any] | None = None,
             map_config: MapConfig | None = None) -> web.Application:
    """Return the aiohttp application (with the HTTPS uplink endpoint when ``receiver``)."""
    app = web.Application(client_max_size=MAX_EVENTS_BYTES)
    app[STORE_KEY] = store
    app[OPEN311_KEY] = open311_enabled
    app[MAP_KEY] = map_config or MapConfig()
    app[RECEIVER_KEY] = receiver
    app[FAIL_KEY] = []
    app.router.add_post("/v1/gateways/{gw}/events", _post_events)
    app.router.add_get("/", _page)
    app.router.add_get("/api/state", _state)
    app.router.add_get("/api/cases", _cases)
    app.router.add_get("/open311/v2/requests.json", _open311)
    app.router.add_get("/map", _map_page)
    app.router.add_get("/api/map", _map)
    app.router.add_get("/api/map/config", _map_config)
    app.router.add_get("/api/map/coverage", _map_coverage)
    app.router.add_get("/api/map/device", _map_device)
    app.router.add_get("/api/map/track", _map_track)
    # the page's script, styles and the vendored Leaflet (no symlinks followed, no listing)
    app.router.add_static("/static/", STATIC, show_index=False, follow_symlinks=False)
    app.on_response_prepare.append(_map_headers)
    return app


async def serve(store: WebStore, *, port: int, host: str = "127.0.0.1",
                open311_enabled: bool = False, receiver: Receiver[Any] | None = None,
                tls: ssl.SSLContext | None = None,
                map_config: MapConfig | None = None) -> web.AppRunner:
    """Start serving; return the runner (``await runner.cleanup()`` stops it)."""
    return await start_site(make_app(store, open311_enabled=open311_enabled, receiver=receiver,
                                     map_config=map_config),
                            host=host, port=port, tls=tls)
