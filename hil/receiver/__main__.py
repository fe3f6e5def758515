r"""``python -m hil.receiver``: one reference receiver process against a broker.

    python -m hil.receiver --broker 127.0.0.1:1883 --keys gateways.json \
        --store postgresql://edge@127.0.0.1/platform --share platform --client-id rx-1

``--store`` is a PostgreSQL connection string (``postgresql://…`` or ``host=… dbname=…``) or
a SQLite file path (the default, what ``make demo`` uses). ``--share GROUP`` subscribes as
``$share/GROUP/…``: start as many receivers as needed on one database (docs/scale.md).
``--keys`` is the registry JSON ``{gateway id: raw Ed25519 public key hex}``. ``--web PORT``
also serves the page and the map (hil/receiver/web.py) on loopback, from either store;
``--map-config FILE`` gives the map its tiles, road centrelines and grid outlines (the
demo's var/receiver/map.json format). ``--ca FILE`` connects with TLS, verifying the broker
against that CA only (hostname included); ``--cert``/``--key`` add a client certificate. There
is no unverified mode; without ``--ca`` the connection is plain MQTT, refused unless the broker
is on this machine (as the agent's ``tls: false``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.config import TlsConfig, is_loopback
from edge.errors import LinkTLSError
from edge.transports.tls import client_context
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.web import MapConfig, MapConfigError, load_map_config


def is_pg(store: str) -> bool:
    """Whether ``--store`` names a PostgreSQL database rather than a SQLite file."""
    return store.startswith(("postgresql://", "postgres://")) or "dbname=" in store


def open_store(store: str, *, node: str) -> Any:
    """Open the store ``--store`` names (PostgreSQL or SQLite)."""
    if is_pg(store):
        from hil.receiver.pg_store import PgReceiverStore  # noqa: PLC0415 - optional extra

        return PgReceiverStore(store, node=node)
    from hil.receiver.store import ReceiverStore  # noqa: PLC0415

    return ReceiverStore(Path(store))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hil.receiver")
    parser.add_argument("--broker", default="127.0.0.1:1883",
                        help="host:port (MQTT 5; TLS with --ca)")
    parser.add_argument("--ca", type=Path, default=None,
                        help="TLS: trust only this CA (PEM) for the broker; hostname verified")
    parser.add_argument("--cert", type=Path, default=None, help="TLS client certificate (PEM)")
    parser.add_argument("--key", type=Path, default=None, help="TLS client key (PEM)")
    parser.add_argument("--keys", type=Path, required=True, help="gateway id → public key hex")
    parser.add_argument("--store", default="var/receiver/receiver.db",
                        help="PostgreSQL DSN or SQLite path")
    parser.add_argument("--share", default=None, help="shared subscription group")
    parser.add_argument("--client-id", default="reference-receiver")
    parser.add_argument("--prefix", default="edge/v1")
    parser.add_argument("--web", type=int, default=None, metavar="PORT",
                        help="also serve the page and the map on 127.0.0.1:PORT")
    parser.add_argument("--map-config", type=Path, default=None, metavar="FILE",
                        help="the map's tiles, roads and grids (JSON; docs/work-coverage.md)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse and run until SIGINT/SIGTERM."""
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    host, _, port = args.broker.rpartition(":")
    if (args.cert is None) != (args.key is None) or (args.cert is not None and args.ca is None):
        parser.error("--cert and --key go together, and with --ca")
    if args.ca is None and not is_loopback(host or "127.0.0.1"):
        # as the agent's `tls: false`: plain MQTT only to a broker on this machine
        parser.error(f"--broker {args.broker} is not on this machine: give --ca (TLS)")
    map_config = MapConfig()
    tls = None
    try:
        if args.map_config is not None:
            if not args.map_config.is_file():
                parser.error(f"--map-config {args.map_config}: no such file")
            map_config = load_map_config(args.map_config)
        if args.ca is not None:
            # the agent's own uplink context: TLS 1.2+, CERT_REQUIRED, hostname checked
            tls = client_context(TlsConfig(
                ca_file=str(args.ca), cert_file=str(args.cert) if args.cert else None,
                key_file=str(args.key) if args.key else None))
    except (MapConfigError, LinkTLSError) as exc:
        print(f"python -m hil.receiver: {exc}", file=sys.stderr)
        return 2
    registry = load_gateway_keys(json.loads(args.keys.read_text(encoding="utf-8")))
    store = open_store(args.store, node=args.client_id)
    receiver: Receiver[Any] = Receiver(store, registry)

    async def serve() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(run_mqtt(receiver, host=host or "127.0.0.1", port=int(port),
                                            tls=tls, prefix=args.prefix, ready=ready,
                                            client_id=args.client_id, share_group=args.share),
                                   name="receiver.mqtt")
        runner = None
        if args.web is not None:
            from hil.receiver.web import serve as serve_web  # noqa: PLC0415 - only with --web

            runner = await serve_web(store, port=args.web, map_config=map_config)
        try:
            await asyncio.wait_for(ready.wait(), 30)
            print("ready", flush=True)  # the bench and tests wait for this line
            await task
        finally:
            if runner is not None:
                await runner.cleanup()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    finally:
        store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
