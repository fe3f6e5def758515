"""Start an aiohttp application on one address (metrics, status page, reference receiver)."""

from __future__ import annotations

import ssl

from aiohttp import web


async def start_site(app: web.Application, *, host: str, port: int,
                     tls: ssl.SSLContext | None = None) -> web.AppRunner:
    """Serve ``app`` on ``host:port``; return the runner (``await runner.cleanup()`` stops)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, ssl_context=tls).start()
    return runner
