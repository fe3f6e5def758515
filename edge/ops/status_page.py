"""The technicians' status page: live values, health, alarms, outbox, uplink, clock, probes.

Off by default. When ``observability.status_page_port`` is set it binds to
``status_page_host`` (loopback, or the cabinet's service interface) and asks for HTTP Basic
credentials: the user name is ignored (any name works; the page says so when it refuses), the
password is the one in ``status_page_password_file`` (no default; a placeholder refuses to
start). Off loopback, Basic auth over plain HTTP needs ``status_page_plain_http: true``
(docs/decisions.md). Failed logins are throttled per client (429 with Retry-After).
State-changing requests need ``X-Requested-With`` so that a page on another origin cannot make
the browser of a logged-in technician probe devices.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import TYPE_CHECKING, Any

from edge.drivers.probe_trace import ProbeTrace, labelled, tracing
from edge.errors import DeviceError
from edge.ops.http_site import Reply, Request, Site, serve

if TYPE_CHECKING:
    from edge.config import EdgeConfig

log = logging.getLogger("edge.ops.status_page")

StatusFn = Callable[[], Awaitable[dict[str, Any]]]
ProbeFn = Callable[[str], Awaitable[dict[str, Any]]]
AssetsFn = Callable[[], dict[str, dict[str, Any]]]
PAGE = (resources.files("edge.ops") / "status_page.html").read_text(encoding="utf-8")
PROBE_TIMEOUT_S = 15.0
REALM = 'Basic realm="edge status page: any user name, the password file", charset="UTF-8"'
LOGIN_HELP = ("Log in with any user name and the password in status_page_password_file "
              "(the user name is ignored).\n")
# Failed-login throttle: a 20-character password is out of reach of any rate, but a weak one
# set by hand is not; 5 tries a minute per client is plenty for a technician who mistyped.
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0
LOCKOUT_S = 60.0
MAX_CLIENTS = 1024  # clients remembered (oldest forgotten first): memory stays bounded
# failed logins from all clients together per window: an attacker who rotates addresses (or
# evicts its own entry past MAX_CLIENTS) still meets this budget; then everyone waits out a
# lockout — a technician waits a minute, a guesser gets 30 guesses a minute at most
MAX_FAILURES_ALL = 30


@dataclass(slots=True)
class _Client:
    failures: list[float] = field(default_factory=list)
    locked_until: float = 0.0


class LoginThrottle:
    """Failed Basic-auth attempts per client address, in bounded memory."""

    def __init__(self, *, max_failures: int = MAX_FAILURES, window_s: float = FAILURE_WINDOW_S,
                 lockout_s: float = LOCKOUT_S, max_clients: int = MAX_CLIENTS,
                 max_failures_all: int = MAX_FAILURES_ALL) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.lockout_s = lockout_s
        self.max_clients = max_clients
        self._clients: OrderedDict[str, _Client] = OrderedDict()
        self._all: deque[float] = deque(maxlen=max_failures_all)
        self._all_locked_until = 0.0
        self.failed = 0  # counted failed logins
        self.throttled = 0  # requests answered 429

    @staticmethod
    def client_key(address: str) -> str:
        """Return the throttled identity of an address: an IPv6 client is its /64.

        One IPv6 host owns a whole /64 and can change its address at will.
        """
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return address
        if isinstance(ip, ipaddress.IPv6Address):
            if ip.ipv4_mapped is not None:
                return str(ip.ipv4_mapped)
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        return str(ip)

    def retry_after_s(self, client: str, now: float) -> float:
        """Return how long ``client`` must wait, 0 when it may try."""
        entry = self._clients.get(self.client_key(client))
        own = max(0.0, entry.locked_until - now) if entry is not None else 0.0
        return max(own, self._all_locked_until - now, 0.0)

    def failure(self, client: str, now: float) -> None:
        """Count a failed login; lock the client out after too many in the window."""
        self.failed += 1
        self._all.append(now)
        if len(self._all) == self._all.maxlen and now - self._all[0] < self.window_s:
            self._all_locked_until = now + self.lockout_s
            self._all.clear()
        client = self.client_key(client)
        entry = self._clients.pop(client, None) or _Client()
        self._clients[client] = entry  # most recent last
        recent = [t for t in entry.failures if now - t < self.window_s]
        entry.failures = [*recent[-self.max_failures:], now]
        if len(entry.failures) >= self.max_failures:
            entry.locked_until = now + self.lockout_s
            entry.failures.clear()
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)

    def success(self, client: str) -> None:
        """Forget a client that logged in."""
        self._clients.pop(self.client_key(client), None)

    def __len__(self) -> int:
        """Return the number of clients remembered."""
        return len(self._clients)


def _password(header: str) -> str | None:
    """Return the password of a Basic ``Authorization`` header, None when there is none."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic" or not token.strip():
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
        return raw.decode("utf-8").partition(":")[2]
    except (binascii.Error, ValueError):
        return ""  # a malformed header is a failed login, not an anonymous request


SECURE_HEADERS = {"X-Frame-Options": "DENY", "Cache-Control": "no-store",
                  "X-Content-Type-Options": "nosniff"}
CSP = "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'"


class _Page:
    """The page's handlers and the state they share (password, throttle, uplink "since")."""

    def __init__(self, status: StatusFn, probe: ProbeFn, assets: AssetsFn, password: str,
                 throttle: LoginThrottle) -> None:
        self._status, self._probe, self._assets = status, probe, assets
        self._password = password.encode()
        self.throttle = throttle
        self._uplink_seen: dict[str, Any] = {}

    def guard(self, request: Request) -> Reply | None:
        """Refuse a throttled client (429) or a wrong password (401); None lets it in."""
        throttle, client, now = self.throttle, request.remote, time.monotonic()
        wait_s = throttle.retry_after_s(client, now)
        if wait_s > 0:
            throttle.throttled += 1
            return Reply(429, "too many failed logins; try again later\n",
                         headers={"Retry-After": str(int(wait_s) + 1)})
        password = _password(request.headers.get("Authorization", ""))
        if password is None or not hmac.compare_digest(password.encode(), self._password):
            if password is not None:
                throttle.failure(client, now)
            return Reply(401, LOGIN_HELP, headers={"WWW-Authenticate": REALM})
        throttle.success(client)
        return None

    async def page(self, _request: Request) -> Reply:
        """Serve the page itself."""
        return Reply(text=PAGE, content_type="text/html",
                     headers={"Content-Security-Policy": CSP})

    def _uplink_since(self, status: dict[str, Any]) -> float:
        """Return since when the uplink is in its current state (seen by the page's polls)."""
        up = status.get("uplink") or {}
        seen = self._uplink_seen
        connected = bool(up.get("connected"))
        at = up.get("connected_since")
        if connected and isinstance(at, int | float) and at > 0:
            return float(at)  # the agent's CONNACK time, not when this page first looked
        if seen.get("connected") is not connected:
            seen["connected"], seen["since"] = connected, time.time()
        return float(seen["since"])

    async def status(self, _request: Request) -> Reply:
        """Answer the status with each device's asset and labelled values, and a banner."""
        status = await self._status()
        assets = self._assets()
        devices = status.get("devices") or {}
        for name, dev in devices.items():
            dev["asset"] = assets.get(name, {})
            dev["labelled"] = {k: shown(k, v) for k, v in (dev.get("values") or {}).items()}
        ages = [p.get("oldest_age_s", 0) for p in
                ((status.get("outbox") or {}).get("by_prio") or {}).values()]
        status["banner"] = {
            "uplink_connected": bool((status.get("uplink") or {}).get("connected")),
            "uplink_since": self._uplink_since(status),
            "devices_offline": sorted(n for n, d in devices.items()
                                      if d.get("state") == "offline"),
            "active_alarms": len(status.get("active_alarms") or []),
            "outbox_oldest_age_s": max(ages, default=0),
        }
        return Reply.json(status)

    async def probe(self, request: Request) -> Reply:
        """Read one device now; answer its values, a verdict and the wire trace."""
        if request.headers.get("X-Requested-With") != "edge":
            return Reply(403, "missing X-Requested-With: edge\n")
        name = request.params["device"]
        trace = ProbeTrace()
        try:
            with tracing() as trace:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    values = await self._probe(name)
        except KeyError:
            return Reply(404, f"no device {name}\n")
        except DeviceError as exc:
            return Reply.json({"ok": False, "error": exc.detail, "wire": trace.as_json()},
                              status=502)
        except TimeoutError:
            return Reply.json({"ok": False, "error": f"no answer in {PROBE_TIMEOUT_S:g} s",
                               "wire": trace.as_json()}, status=504)
        verdict, why = probe_verdict(values)
        return Reply.json({"ok": verdict != "fail", "verdict": verdict, "why": why,
                           "error": why, "values": values, "wire": trace.as_json(),
                           "labelled": {k: shown(k, v) for k, v in values.items()}})


def shown(key: str, value: Any) -> str:
    """Return a value as a technician reads it: a number with its unit, a relay on/off."""
    if isinstance(value, bool) and key.endswith("_on"):
        return "on" if value else "off"  # a relay or switch state (`relay_on`)
    return labelled(key, value)


def probe_verdict(values: Mapping[str, Any]) -> tuple[str, str]:
    """Judge a probe's values beyond "it answered": ("ok" | "warn" | "fail", words).

    A GNSS receiver that talks but has no fix answered, yet gives no position; a receiver
    that sends no GGA cannot say how good its fix is (firmware_notes/nmea-gnss.md).
    """
    if "fix_quality" not in values:
        return "ok", ""
    quality, mode = values.get("fix_quality"), values.get("fix_mode")
    if quality == "no fix" or mode == "no fix":
        said = f"GGA fix quality: {quality}" if quality == "no fix" else "GSA mode: no fix"
        return "fail", (f"the receiver talks but has no fix ({said}): check the antenna, its "
                        "cable and its view of the sky")
    if quality == "no GGA heard":
        return "warn", ("no GGA heard: fix quality and satellites unknown (enable GGA and GSA "
                        "output on the receiver)")
    return "ok", ""


async def serve_status_page(status: StatusFn, probe: ProbeFn, *, host: str, port: int,
                            password: str, assets: AssetsFn | None = None,
                            throttle: LoginThrottle | None = None) -> Site:
    """Start the page; return its site."""
    page = _Page(status, probe, assets or dict, password,
                 throttle if throttle is not None else LoginThrottle())
    site = await serve([("GET", "/", page.page), ("GET", "/api/status", page.status),
                        ("POST", "/api/probe/{device}", page.probe)],
                       host=host, port=port, name="status_page", guard=page.guard,
                       headers=SECURE_HEADERS, max_body_bytes=4096)  # no uploads here
    shown = f"[{host}]" if ":" in host else host
    log.info("status page at http://%s:%d/ (any user name, the password in "
             "status_page_password_file)", shown, port)
    return site


def assets_of(config: EdgeConfig) -> dict[str, dict[str, Any]]:
    """Return each device's asset name and position (shown next to the device name)."""
    return {d.name: {"name": d.asset.name, "code": d.asset.code, "lat": d.asset.lat,
                     "lon": d.asset.lon} for d in config.devices}
