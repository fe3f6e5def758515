"""``python -m bench NAME [--quick] [--json]``; NAME ``all`` runs every benchmark."""

from __future__ import annotations

import argparse
import importlib
import sys

BENCHES = ("outbox", "uplink", "serial", "modbus", "w1", "backlog", "tbgw", "fleet", "platform",
           "mqtt_links")


def main() -> int:
    """Run one benchmark or all."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("name", choices=[*BENCHES, "all"])
    parser.add_argument("--quick", action="store_true", help="finish in under 60 s")
    parser.add_argument("--json", action="store_true", help="a JSON object on the last line")
    args = parser.parse_args()
    names = BENCHES if args.name == "all" else (args.name,)
    for name in names:
        module = importlib.import_module(f"bench.{name}")
        module.run(quick=args.quick, as_json=args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
