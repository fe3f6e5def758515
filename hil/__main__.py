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
from hil.sims.serial_sims import GpsSim, TtsSim
from hil.sims.wire import LAMP_SCENARIOS, TCP_FAULTS
from hil.sims.wire import MODBUS_FAULTS as FAULTS

# the simulators themselves (pymodbus' server, which imports aiohttp) are imported by the
# commands that run them: `tilt` took 0.6 s of CPU, 1.2-3.8 s under load, mostly importing
# them (issue 18 re-test #10). hil.sims.runner.ALL_FAULTS is the same tuple (a test says so).
ALL_FAULTS = tuple(dict.fromkeys((*FAULTS, *GpsSim.FAULTS, *TtsSim.FAULTS)))


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
    p.add_argument("device", help=f"a device name, or {GATEWAY!r} for the gateway's own "
                                  "actions (agent.state)")
    p.add_argument("action")
    p.add_argument("params", nargs="?", default="{}", help="JSON object")
    p.add_argument("--unchecked", action="store_true",
                   help="send it even if the published command schema refuses it")
    p = sub.add_parser("fault", help="set a simulated unit's fault mode")
    p.add_argument("device")
    p.add_argument("mode", choices=ALL_FAULTS,
                   help="what the device's simulator models: Modbus TCP "
                        f"{', '.join(TCP_FAULTS)}; RTU line {', '.join(FAULTS)}; GPS "
                        f"{', '.join(GpsSim.FAULTS)}; loudspeaker {', '.join(TtsSim.FAULTS)}")
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
            return _command(loaded, args.device, args.action, json.loads(args.params),
                            checked=not args.unchecked)
        elif args.command == "sims":
            return _sims(loaded.config)
    except (EdgeError, KeyError) as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return 1
    return 0


def _fault(config: Any, device: str, mode: str) -> int:
    """Set a fault the device's simulator models; refuse one it would silently ignore."""
    from hil.sims.runner import set_serial_fault, simulator_of  # noqa: PLC0415
    from hil.tilt import set_fault  # noqa: PLC0415

    sim = simulator_of(config, device)
    if sim is None:
        port = config.device(device).port
        print(f"✘ {device}: no simulator serves it (its port {port} is not a loopback "
              "socket://): nothing to fault", file=sys.stderr)
        return 2
    name, modelled = sim
    if mode not in modelled:
        hint = "; crc, garbage and wrong_unit need the RTU line simulator" \
            if name == "a Modbus TCP simulator" else ""
        print(f"✘ {device}: {name} does not model {mode!r} (it models "
              f"{', '.join(modelled)}{hint})", file=sys.stderr)
        return 2
    if mode in FAULTS and name in ("a Modbus TCP simulator", "the RTU line simulator"):
        asyncio.run(set_fault(config, device, mode))
    else:
        try:
            asyncio.run(set_serial_fault(config, device, mode))
        except (OSError, TimeoutError) as exc:
            print(f"✘ {device}: {name} at {config.device(device).port} does not answer "
                  f"({exc or 'no answer in 5 s'}); is the demo or `python -m hil sims` running?",
                  file=sys.stderr)
            return 1
    print(f"{device}: fault mode {mode}")
    return 0


GATEWAY = "-"  # the device argument of a command to the gateway itself (``device``: null)


def _command(loaded: Any, device: str, action: str, params: dict[str, Any], *,
             checked: bool = True) -> int:
    from hil.commander import platform_key, send, sign_command  # noqa: PLC0415
    from hil.demo import client_tls  # noqa: PLC0415
    from hil.pki import Pki  # noqa: PLC0415
    from hil.receiver.schemas import errors  # noqa: PLC0415

    cfg = loaded.config
    key = platform_key(loaded.resolve("var/receiver/platform.key"))
    cmd_id, envelope = sign_command(key, gateway=cfg.gateway.id,
                                    device=None if device == GATEWAY else device,
                                    action=action, params=params)
    # the published contract (edge/contract/schemas/command.schema.json) says what a gateway
    # accepts: a platform stand-in checks with the same file before it sends
    problems = errors("command", json.loads(json.loads(envelope)["body"]))
    if problems and checked:
        print(f"✘ the contract refuses this command: {'; '.join(problems)} "
              "(--unchecked sends it anyway)", file=sys.stderr)
        return 2
    tls = None
    if cfg.uplink.tls is not False and cfg.uplink.tls.ca_file:
        tls = client_tls(Pki(loaded.resolve(cfg.uplink.tls.ca_file).parent), "receiver")
    asyncio.run(send(envelope, host=cfg.uplink.host, port=cfg.uplink.port, tls=tls,
                     topic=f"{cfg.uplink.topic_prefix}/{cfg.gateway.id}/cmd"))
    to = "the gateway" if device == GATEWAY else device
    print(f"sent {action} to {to} (cmd_id {cmd_id}); the result arrives as a "
          "command_result event")
    return 0


def _sims(config: object) -> int:
    from hil.sims.runner import SimPortError, SimSet  # noqa: PLC0415

    async def serve() -> None:
        sims = SimSet.for_config(config)  # type: ignore[arg-type]
        await sims.start()
        print(json.dumps({"modbus": list(sims.modbus), "gps": list(sims.gps),
                          "tts": list(sims.tts)}))
        try:
            await asyncio.Event().wait()
        finally:
            await sims.stop()

    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve())
    except SimPortError as exc:  # a taken port: one line (f14 #3)
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
