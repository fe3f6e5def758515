"""The local HTTP server: the only aiohttp server code of the agent (metrics, status page).

Handlers see a neutral ``Request`` and return a ``Reply`` (``serve``); aiohttp's types stay in
this module. The reference receiver (``hil/``, outside the product) passes its own aiohttp
application to ``start_site``.

Every response of 400 and up is counted per site and status (``edge_http_rejected_total``),
including the ones aiohttp writes itself before any handler runs (a header over 8190 bytes,
a request line that is not HTTP): hostile input gets a 4xx and a count, never a 500 and never
a traceback in the journal.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Request:
    """What a handler sees of a request."""

    path: str
    params: Mapping[str, str]  # the route's ``{placeholders}``
    headers: Mapping[str, str]  # looked up case-insensitively
    remote: str  # the peer's address, "?" when unknown


@dataclass
class Reply:
    """What a handler answers: a text body (UTF-8) with its type, status and headers."""

    status: int = 200
    text: str = ""
    content_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, doc: Any, status: int = 200) -> Reply:
        """Answer ``doc`` as JSON."""
        return cls(status, json.dumps(doc), "application/json")


Route = tuple[str, str, Callable[[Request], Awaitable[Reply]]]  # (method, path, handler)
Guard = Callable[[Request], Reply | None]  # a refusal, or None to go on to the handler


class Site(Protocol):
    """A started site; ``await site.cleanup()`` stops it and frees the port."""

    async def cleanup(self) -> None:
        """Stop serving."""
# (site, HTTP status) -> responses; bounded: a few sites times the statuses aiohttp can send
REJECTED: Counter[tuple[str, int]] = Counter()


class _CountRejected(AbstractAccessLogger):
    """Count every 4xx/5xx by site; the site is the last part of the logger's name."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        """Count ``response`` when it refused the request."""
        del request, time
        if response.status >= 400:
            REJECTED[self.logger.name.rpartition(".")[2], response.status] += 1

    @property
    def enabled(self) -> bool:
        """Always on: it counts, it does not write lines."""
        return True


class _NoParserTracebacks(logging.Filter):
    """Drop aiohttp's traceback for a request it could not parse (answered 400, counted)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record but the malformed-request ones."""
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, HttpProcessingError)


def rejected_exposition() -> str:
    """Return the rejected-request counters in Prometheus text format."""
    lines = ["# HELP edge_http_rejected_total HTTP requests refused (4xx) or failed (5xx), "
             "by local site and status.", "# TYPE edge_http_rejected_total counter"]
    lines += [f'edge_http_rejected_total{{site="{site}",status="{status}"}} {n}'
              for (site, status), n in sorted(REJECTED.items())]
    return "\n".join(lines) + "\n"


async def start_site(app: web.Application, *, host: str, port: int,
                     tls: ssl.SSLContext | None = None, name: str = "http") -> web.AppRunner:
    """Serve ``app`` on ``host:port``; return the runner (``await runner.cleanup()`` stops)."""
    server_log = logging.getLogger(f"edge.http.{name}.server")
    if not server_log.filters:
        server_log.addFilter(_NoParserTracebacks())
    runner = web.AppRunner(app, access_log_class=_CountRejected,
                           access_log=logging.getLogger(f"edge.http.{name}"),
                           logger=server_log)
    await runner.setup()
    if runner.server is None:  # aiohttp sets it in setup(); an explicit check survives -O
        msg = "aiohttp's runner has no server after setup()"
        raise RuntimeError(msg)
    runner.server.request_handler = _refuse_non_ascii_expect(runner.server.request_handler)
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    return runner


def _refuse_non_ascii_expect(handler: Handler) -> Handler:
    """Answer 417 to an ``Expect`` header that is not ASCII, before aiohttp's expect handler.

    aiohttp runs that handler ahead of routing and middlewares; it quotes the value in its 417
    text, which cannot be encoded when the value is not UTF-8, and answers 500 (found by
    tests/test_http_fuzz.py: the bytes FF FE as the value).
    """

    async def handle(request: web.BaseRequest) -> web.StreamResponse:
        if not request.headers.get("Expect", "").isascii():
            return web.Response(status=417, text="Expect: not ASCII\n")
        return await handler(request)

    return handle


async def serve(routes: Sequence[Route], *, host: str, port: int, name: str,
                guard: Guard | None = None, headers: Mapping[str, str] | None = None,
                max_body_bytes: int = 1024 ** 2) -> Site:
    """Serve ``routes`` on ``host:port``; return the site.

    ``guard`` runs before every request, unknown paths included (a login wall answers 401
    before 404, so a scan learns nothing); ``headers`` are added to every answer it let through.
    """
    added = dict(headers or {})

    def aio(reply: Reply) -> web.Response:
        return web.Response(status=reply.status, text=reply.text,
                            content_type=reply.content_type, headers=reply.headers)

    def neutral(request: web.Request) -> Request:
        return Request(path=request.path, params=request.match_info, headers=request.headers,
                       remote=request.remote or "?")

    def adapt(handler: Callable[[Request], Awaitable[Reply]]
              ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handle(request: web.Request) -> web.Response:
            return aio(await handler(neutral(request)))
        return handle

    @web.middleware
    async def guarded(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
        refused = guard(neutral(request)) if guard is not None else None
        if refused is not None:
            return aio(refused)
        try:
            response = await handler(request)
        except web.HTTPException as exc:  # aiohttp's own 404 / 405 get the headers too
            exc.headers.update(added)
            raise
        response.headers.update(added)
        return response

    app = web.Application(middlewares=[guarded], client_max_size=max_body_bytes)
    for method, path, handler in routes:
        if method == "GET":  # add_get answers HEAD too (health checks use it), as before
            app.router.add_get(path, adapt(handler))
        else:
            app.router.add_route(method, path, adapt(handler))
    return await start_site(app, host=host, port=port, name=name)
