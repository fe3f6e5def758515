"""Start an aiohttp application on one address (metrics, status page, reference receiver).

Every response of 400 and up is counted per site and status (``edge_http_rejected_total``),
including the ones aiohttp writes itself before any handler runs (a header over 8190 bytes,
a request line that is not HTTP): hostile input gets a 4xx and a count, never a 500 and never
a traceback in the journal.
"""

from __future__ import annotations

import logging
import ssl
from collections import Counter
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.http_exceptions import HttpProcessingError

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
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
