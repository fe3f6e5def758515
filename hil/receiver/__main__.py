r"""``python -m hil.receiver``: one reference receiver process against a broker.

    python -m hil.receiver --broker 127.0.0.1:1883 --keys gateways.json \
        --store postgresql://edge@127.0.0.1/platform --share platform --client-id rx-1

``--store`` is a PostgreSQL connection string (``postgresql://…`` or ``host=… dbname=…``) or
a SQLite file path (the default, what ``make demo`` uses). ``--share GROUP`` subscribes as
``$share/GROUP/…``: start as many receivers as needed on one database (docs/scale.md).
``--keys`` is the registry JSON ``{gateway id: raw Ed25519 public key hex}``. ``--web PORT``
also serves the page and the map (hil/receiver/web.py) on loopback, from either store.
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

from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt


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


def main(argv: list[str] | None = None) -> int:
    """Parse and run until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m hil.receiver")
    parser.add_argument("--broker", default="127.0.0.1:1883", help="host:port (plain MQTT 5)")
    parser.add_argument("--keys", type=Path, required=True, help="gateway id → public key hex")
    parser.add_argument("--store", default="var/receiver/receiver.db",
                        help="PostgreSQL DSN or SQLite path")
    parser.add_argument("--share", default=None, help="shared subscription group")
    parser.add_argument("--client-id", default="reference-receiver")
    parser.add_argument("--prefix", default="edge/v1")
    parser.add_argument("--web", type=int, default=None, metavar="PORT",
                        help="also serve the page and the map on 127.0.0.1:PORT")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    host, _, port = args.broker.rpartition(":")
    registry = load_gateway_keys(json.loads(args.keys.read_text(encoding="utf-8")))
    store = open_store(args.store, node=args.client_id)
    receiver: Receiver[Any] = Receiver(store, registry)

    async def serve() -> None:
        ready = asyncio.Event()
        task = asyncio.create_task(run_mqtt(receiver, host=host or "127.0.0.1", port=int(port),
                                            tls=None, prefix=args.prefix, ready=ready,
                                            client_id=args.client_id, share_group=args.share),
                                   name="receiver.mqtt")
        runner = None
        if args.web is not None:
            from hil.receiver.web import serve as serve_web  # noqa: PLC0415 - only with --web

            runner = await serve_web(store, port=args.web)
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
