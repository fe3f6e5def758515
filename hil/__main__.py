"""``python -m hil``: demo | sims | tilt | fault | scenario | command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from edge.config_loader import load_config
from edge.errors import ConfigError, EdgeError
from hil.sims.modbus_sim import FAULTS, LAMP_SCENARIOS


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 - one exit per command
    """Parse and dispatch."""
    parser = argparse.ArgumentParser(prog="python -m hil")
    parser.add_argument("--config", "-c", type=Path, default=Path("devices.yaml"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="broker + simulators + receiver + agent")
    p.add_argument("--self-test", action="store_true", help="tilt, check, exit 0/1")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    sub.add_parser("sims", help="run the simulators of the config until Ctrl-C")
    p = sub.add_parser("tilt", help="tilt a simulated cover")
    p.add_argument("device")
    p.add_argument("degrees", type=float)
    p = sub.add_parser("command", help="send a signed command as the platform")
    p.add_argument("device")
    p.add_argument("action")
    p.add_argument("params", nargs="?", default="{}", help="JSON object")
    p = sub.add_parser("fault", help="set a simulated unit's fault mode")
    p.add_argument("device")
    p.add_argument("mode", choices=FAULTS)
    p = sub.add_parser("scenario", help="put a simulated lamp into a scenario")
    p.add_argument("device")
    p.add_argument("scenario", choices=LAMP_SCENARIOS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "demo":
        from hil.demo import demo_main  # noqa: PLC0415

        return demo_main(args.config, self_test=args.self_test, seconds=args.seconds)
    try:
        loaded = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    try:
        if args.command == "tilt":
            from hil.tilt import set_tilt  # noqa: PLC0415

            asyncio.run(set_tilt(loaded.config, args.device, args.degrees))
            print(f"{args.device}: tilted to {args.degrees:g}°")
        elif args.command == "fault":
            return _fault(loaded.config, args.device, args.mode)
        elif args.command == "scenario":
            from hil.tilt import set_scenario  # noqa: PLC0415

            asyncio.run(set_scenario(loaded.config, args.device, args.scenario))
            print(f"{args.device}: scenario {args.scenario}")
        elif args.command == "command":
            return _command(loaded, args.device, args.action, json.loads(args.params))
        elif args.command == "sims":
            return _sims(loaded.config)
    except (EdgeError, KeyError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    return 0


def _fault(config: Any, device: str, mode: str) -> int:
    """Set a fault the device's simulator models; refuse one it would silently ignore."""
    from hil.sims.runner import faults_for  # noqa: PLC0415
    from hil.tilt import set_fault  # noqa: PLC0415

    modelled = faults_for(config, device)
    if mode not in modelled:
        sim = "a Modbus TCP simulator" if modelled else "no Modbus simulator"
        print(f"✘ {device}: is on {sim}, which does not model {mode!r}"
              + (f" (it models {', '.join(modelled)}; crc, garbage and wrong_unit need the "
                 "RTU line simulator)" if modelled else ""), file=sys.stderr)
        return 2
    asyncio.run(set_fault(config, device, mode))
    print(f"{device}: fault mode {mode}")
    return 0


def _command(loaded: Any, device: str, action: str, params: dict[str, Any]) -> int:
    from hil.commander import platform_key, send, sign_command  # noqa: PLC0415
    from hil.demo import client_tls  # noqa: PLC0415
    from hil.pki import Pki  # noqa: PLC0415

    cfg = loaded.config
    key = platform_key(loaded.resolve("var/receiver/platform.key"))
    cmd_id, envelope = sign_command(key, gateway=cfg.gateway.id, device=device, action=action,
                                    params=params)
    tls = None
    if cfg.uplink.tls is not False and cfg.uplink.tls.ca_file:
        tls = client_tls(Pki(loaded.resolve(cfg.uplink.tls.ca_file).parent), "receiver")
    asyncio.run(send(envelope, host=cfg.uplink.host, port=cfg.uplink.port, tls=tls,
                     topic=f"{cfg.uplink.topic_prefix}/{cfg.gateway.id}/cmd"))
    print(f"sent {action} to {device} (cmd_id {cmd_id}); the result arrives as a "
          "command_result event")
    return 0


def _sims(config: object) -> int:
    from hil.sims.runner import SimSet  # noqa: PLC0415

    async def serve() -> None:
        sims = SimSet.for_config(config)  # type: ignore[arg-type]
        await sims.start()
        print(json.dumps({"modbus": list(sims.modbus), "gps": list(sims.gps),
                          "tts": list(sims.tts)}))
        try:
            await asyncio.Event().wait()
        finally:
            await sims.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
