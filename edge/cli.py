"""The ``edge`` command: run | check | probe | status | schema | keys | outbox.

Exit codes: ``check`` 0 all pass, 1 a check failed, 2 invalid config; ``run`` 78 (EX_CONFIG)
on an invalid config, 69 (EX_UNAVAILABLE) when a required resource is missing, 70 (EX_SOFTWARE)
when a part of the running agent died (the outbox writer, a library thread).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
import time
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config_file import LoadedConfig, load_in_child
from edge.errors import ConfigError, EdgeError

EX_OK, EX_FAIL, EX_INVALID = 0, 1, 2
EX_UNAVAILABLE, EX_SOFTWARE, EX_CONFIG = 69, 70, 78
EX_PIPE = 128 + 13  # what a shell reports for a command ended by SIGPIPE (`edge status | head`)
DEFAULT_CONFIG = Path("devices.yaml")
PROBE_TIMEOUT_S = 15.0  # a GPS probe listens a few seconds; a Modbus one takes milliseconds
# where systemd/install.sh puts the site config; found without --config, so `edge check` and
# `edge status` at the cabinet need no flags (a ./devices.yaml, the demo's, wins when present)
INSTALLED_CONFIG = Path("/etc/edge/devices.yaml")


def default_config() -> Path:
    """Return the config to use without ``--config``: $EDGE_CONFIG, ./devices.yaml, /etc/edge."""
    env = os.environ.get("EDGE_CONFIG")
    if env:
        return Path(env)
    if not DEFAULT_CONFIG.exists() and INSTALLED_CONFIG.exists():
        return INSTALLED_CONFIG
    return DEFAULT_CONFIG


class _ExitError(Exception):
    """Leave the command with this exit code (the message was printed)."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def _load(path: Path) -> LoadedConfig:
    from edge.config_loader import load_config  # noqa: PLC0415 - `edge run` loads in a child

    return load_config(path)


def _config(args: argparse.Namespace, code: int = EX_INVALID, *, in_child: bool = False
            ) -> LoadedConfig:
    """Load ``--config``; print every problem with its line and exit with ``code`` if invalid.

    ``in_child``: validate in a child process, so this one never loads ruamel and pydantic
    (``edge run``: docs/decisions.md D86).
    """
    try:
        return load_in_child(args.config) if in_child else _load(args.config)
    except ConfigError as exc:
        _print_config_errors(exc)
        raise _ExitError(code) from None


def _print_config_errors(exc: ConfigError) -> None:
    print(f"{len(exc.problems)} problem(s) in the config:", file=sys.stderr)
    for line in exc.problems:
        print(f"  {line}", file=sys.stderr)


def setup_logging(level: str, *, json_logs: bool | None = None) -> None:
    """Readable text on a terminal, one JSON object a line under systemd (journald)."""
    from edge.ops.logs import configure  # noqa: PLC0415 - only the CLI needs it

    configure(level, json_logs=json_logs)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the agent until SIGTERM / Ctrl-C."""
    # the config first, validated in a child: an invalid file exits before the agent's modules
    # load, and this process never holds a YAML parser or pydantic (docs/decisions.md D85, D86)
    loaded = _config(args, EX_CONFIG, in_child=True)
    from edge.agent import Agent  # noqa: PLC0415 - keep `edge check` fast

    setup_logging(args.log_level)

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        agent = Agent(loaded, boot_delay_s=args.boot_delay_s)
        loop.add_signal_handler(signal.SIGHUP, agent.reload_requested.set)
        try:
            await agent.run(stop)
        except EdgeError as exc:
            logging.getLogger("edge").error("cannot run: %s", exc)  # noqa: TRY400 - no trace
            return EX_UNAVAILABLE
        except Exception as exc:  # a part of the agent died: say so, exit 70
            # one CRITICAL line with the traceback, then a non-zero exit: systemd restarts the
            # agent at once instead of waiting for the watchdog (issue 14 #1)
            logging.getLogger("edge").critical("agent stopped: a part of it died: %r", exc,
                                               exc_info=exc)
            return EX_SOFTWARE
        return EX_OK

    return asyncio.run(main())


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config and run preflight checks."""
    from edge.preflight import FAIL, run_checks  # noqa: PLC0415

    try:
        loaded = _load(args.config)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"config": "invalid", "problems": exc.problems}, ensure_ascii=False))
        else:
            _print_config_errors(exc)
        return EX_INVALID
    checks = asyncio.run(run_checks(loaded))
    failed = any(c.status == FAIL for c in checks)
    if args.json:
        print(json.dumps({"config": "valid", "ok": not failed,
                          "checks": [c.__dict__ for c in checks]}, ensure_ascii=False))
    else:
        print(f"✔ config: {args.config} ({len(loaded.config.devices)} devices, "
              f"{len(loaded.config.buses)} buses)")
        for c in checks:
            print(f"{c.mark} {c.name}: {c.detail}")
    return EX_FAIL if failed else EX_OK


def cmd_probe(args: argparse.Namespace) -> int:
    """Read one device once; print the wire (bus, unit, request, raw) and decoded values."""
    from edge.drivers.factory import Transports, build_driver  # noqa: PLC0415
    from edge.drivers.probe_trace import ProbeTrace, tracing  # noqa: PLC0415

    loaded = _config(args)
    try:
        device = loaded.config.device(args.device)
    except KeyError:
        names = ", ".join(d.name for d in loaded.config.devices)
        print(f"no device {args.device!r}; devices: {names}", file=sys.stderr)
        return EX_INVALID
    trace = ProbeTrace()

    async def probe() -> dict[str, Any]:
        nonlocal trace
        transports = Transports(loaded.config, base_dir=loaded.base_dir)
        driver = build_driver(device, loaded.config, transports)
        try:
            with tracing() as trace:
                async with asyncio.timeout(PROBE_TIMEOUT_S):
                    return await driver.probe()
        finally:
            await driver.close()
            await transports.close()

    started = time.monotonic()
    where = f"{device.kind}, {device.model}" + (f", unit {device.unit_id}"
                                                if device.unit_id is not None else "")
    try:
        values = asyncio.run(probe())
    except (EdgeError, TimeoutError) as exc:
        detail = exc.detail if hasattr(exc, "detail") else str(exc) or \
            f"no answer in {PROBE_TIMEOUT_S:g} s"
        print(f"✘ {args.device} ({where}): {detail}", file=sys.stderr)
        _print_wire(trace, sys.stderr)
        return EX_FAIL
    from edge.ops.status_page import probe_verdict, shown  # noqa: PLC0415 - aiohttp, only here

    verdict, why = probe_verdict(values)
    took = f"answered in {time.monotonic() - started:.3f} s"
    out = sys.stderr if verdict == "fail" else sys.stdout
    print({"ok": f"✔ {args.device} ({where}) {took}",
           "warn": f"⚠ {args.device} ({where}) {took}, but {why}",
           "fail": f"✘ {args.device} ({where}) {took}: {why}"}[verdict], file=out)
    _print_wire(trace, out)
    for key, value in values.items():
        print(f"  {key}: {shown(key, value)}", file=out)
    return EX_FAIL if verdict == "fail" else EX_OK


def _print_wire(trace: Any, out: Any) -> None:
    """Print each exchange of a probe: link, unit, request, then what came back."""
    for r in trace.records:
        unit = f" unit {r.unit}" if r.unit is not None else ""
        print(f"  {r.link}{unit}: {r.request}", file=out)
        print(f"    {'✘ ' + r.error if r.error else '<- ' + r.raw}", file=out)
    if trace.dropped:
        print(f"  ... {trace.dropped} more exchanges", file=out)


def _state_dir_of(path: Path) -> tuple[Path, list[str]]:
    """Return the state folder named by ``path`` and the file's problems (none if valid).

    The running agent keeps the config it loaded; a file broken since then must not hide what
    the agent is doing, so gateway.state_dir is read from its own line of the text (which
    even a file that no longer parses keeps), and the installed default is the last resort.
    """
    try:
        return _load(path).state_dir, []
    except ConfigError as exc:
        problems = exc.problems
    from edge.preflight import SERVICE_STATE_DIR  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return SERVICE_STATE_DIR, problems
    match = re.search(r"^\s+state_dir:\s*[\"']?([^\"'#\s]+)", text, re.MULTILINE)
    if match is None:
        return SERVICE_STATE_DIR, problems
    folder = Path(match.group(1))
    return (folder if folder.is_absolute() else path.resolve().parent / folder), problems


def _pid_alive(pid: int) -> bool:
    """Return whether a process ``pid`` exists (the status file outlives a stopped agent).

    Its last status stays fresh for seconds after a stop: `edge status` said "running" then
    (new-user tryout). Another user's process (the service user's, asked by a technician)
    answers EPERM: it exists.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OverflowError:
        return False
    return True


def cmd_status(args: argparse.Namespace) -> int:
    """Show what the running agent is doing (from its status file)."""
    from edge.ops.status_file import STATUS_FILE, read_status  # noqa: PLC0415

    state_dir, problems = _state_dir_of(args.config)
    if problems:
        print(f"⚠ {args.config} has {len(problems)} problem(s) now (see `edge check`); the "
              "running agent keeps the config it loaded", file=sys.stderr)
    status = read_status(state_dir)
    if status is None:
        path = state_dir / STATUS_FILE
        if path.exists():  # a torn disk, a hand edit (f14 #11): not "never ran"
            print(f"no status: {path} is damaged (not the agent's JSON); a running agent "
                  "rewrites it every few seconds: try again, or see `journalctl -u edge`",
                  file=sys.stderr)
        else:
            print(f"no status: the agent has not run with this config (no {path})",
                  file=sys.stderr)
        return EX_FAIL
    age_s = time.time() - float(status.get("written_at", 0))
    if args.json:
        print(json.dumps({**status, "age_s": round(age_s, 1)}, ensure_ascii=False))
        return EX_OK
    alive = _pid_alive(int(status["pid"]))
    running = age_s < 10 and alive
    state = "running" if running else "NOT running (" + (
        "its process has ended" if not alive else f"last status {age_s:.0f} s ago") + ")"
    print(f"agent {status['version']} pid {status['pid']}: {state}; "
          f"clock {status['time_quality']}")
    up = status.get("uplink") or {}
    since = up.get("connected_since")
    state = "DISCONNECTED" if not up.get("connected") else "connected" + (
        f" since {time.strftime('%Y-%m-%d %H:%M', time.localtime(since))}"
        if isinstance(since, int | float) and since > 0 else "")
    print(f"uplink: {state}, "
          f"{up.get('events_acked', 0)} events acked, last error: {up.get('last_error') or '-'}")
    ob = status["outbox"]
    print(f"outbox: {ob['depth']} queued, {ob['dead_letters']} dead letters, drops {ob['drops']}")
    for name, dev in status["devices"].items():
        print(f"  {name:<16} {dev['kind']:<13} {dev['state']:<9} ok {dev['polls_ok']:<6} "
              f"failed {dev['polls_failed']:<5} {dev['last_error'] or ''}")
    if status.get("active_alarms"):
        print("active alarms: " + ", ".join(status["active_alarms"]))
    return EX_OK if running else EX_FAIL


def cmd_reload(args: argparse.Namespace) -> int:
    """Ask the running agent to re-read devices.yaml (SIGHUP) and report the outcome."""
    from edge.ops.status_file import read_status  # noqa: PLC0415

    loaded = _config(args)
    status = read_status(loaded.state_dir)
    if status is None or time.time() - float(status.get("written_at", 0)) > 10:
        print("the agent is not running with this config", file=sys.stderr)
        return EX_FAIL
    before = status["config"]["generation"]
    os.kill(int(status["pid"]), signal.SIGHUP)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = read_status(loaded.state_dir) or status
        last = now["config"]["last_reload"]
        if now["config"]["generation"] > before:
            print(f"✔ reloaded: added {last['added']}, removed {last['removed']}, "
                  f"restarted {last['changed']}")
            if last["needs_restart"]:
                print(f"⚠ needs a restart to apply: {', '.join(last['needs_restart'])}")
            return EX_OK
        if last and not last.get("ok") and last.get("at", 0) > status["written_at"]:
            print("✘ reload rejected; the running config stays", file=sys.stderr)
            return EX_INVALID
    print("✘ no answer from the agent in 15 s", file=sys.stderr)
    return EX_FAIL


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the published contract's JSON Schemas (edge/contract/schemas, the single source)."""
    from edge.contract import SCHEMA_FILES, bundle, schema_text  # noqa: PLC0415

    if args.name is None:
        print(json.dumps(bundle(), indent=2, ensure_ascii=False))
        return EX_OK
    # the file names the contract lists (command-result, gateway-state.schema.json), and the
    # short names edge 1.1.0 printed them under, kept as aliases (issue 20 re-test #6)
    by_name = {**{file.removesuffix(".schema.json"): file for file in SCHEMA_FILES.values()},
               **{file: file for file in SCHEMA_FILES.values()}, **SCHEMA_FILES}
    if args.name not in by_name:
        names = ", ".join(file.removesuffix(".schema.json") for file in SCHEMA_FILES.values())
        print(f"✘ no schema {args.name!r}; one of {names}", file=sys.stderr)
        return EX_INVALID
    print(schema_text(by_name[args.name]), end="")  # the file as shipped, byte for byte
    return EX_OK


def cmd_keys(args: argparse.Namespace) -> int:
    """Create or show the gateway's signing key."""
    from edge.errors import KeyFileError  # noqa: PLC0415
    from edge.security.keys import describe, init_key, load_key  # noqa: PLC0415

    loaded = _config(args)
    path = loaded.resolve(loaded.config.gateway.key_file)
    try:
        key = init_key(path, force=args.force) if args.action == "init" else load_key(path)
    except KeyFileError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return EX_FAIL
    facts = {"gateway": loaded.config.gateway.id, **describe(key)}
    if args.json:
        print(json.dumps(facts))
    else:
        if args.action == "init":
            print(f"✔ created {path} (mode 0600)")
        for k, v in facts.items():
            print(f"{k}: {v}")
    return EX_OK


def cmd_outbox(args: argparse.Namespace) -> int:
    """Inspect the outbox (stats, export, requeue-dead); safe while the agent is stopped."""
    from edge.buffer.store import Outbox  # noqa: PLC0415

    loaded = _config(args)
    store = Outbox(loaded.state_dir / loaded.config.outbox.path,
                   quota_bytes=loaded.config.outbox.quota_bytes)
    try:
        store.open()
    except EdgeError as exc:
        print(f"✘ {exc}", file=sys.stderr)
        return EX_FAIL
    try:
        if args.action == "stats":
            print(json.dumps(store.stats(), indent=None if args.json else 1))
        elif args.action == "export":
            _export(store)
        elif args.action == "requeue-dead":
            print(f"requeued {store.requeue_dead()} dead letters")
    finally:
        store.close()
    return EX_OK


def _export(store: Any) -> None:
    total = store.stats()["depth"]
    show_progress = sys.stderr.isatty()
    out = sys.stdout.buffer
    for n, line in enumerate(store.export(), 1):
        out.write(line + b"\n")
        if show_progress and (n % 1000 == 0 or n == total):
            width = 30
            done = int(width * n / max(total, 1))
            sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {n}/{total}")
    if show_progress:
        sys.stderr.write("\n")
    out.flush()


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MAX_BOOT_DELAY_S = 600.0  # as uplink.boot_delay_max_s


def _boot_delay_s(text: str) -> float:
    """Parse ``--boot-delay-s``: finite seconds, 0 to 600 (``inf`` kept the uplink down)."""
    try:
        value = float(text)
    except ValueError:
        msg = f"not a number of seconds: {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not 0 <= value <= MAX_BOOT_DELAY_S:  # NaN fails both comparisons
        msg = f"must be 0 to {MAX_BOOT_DELAY_S:g} s (got {text})"
        raise argparse.ArgumentTypeError(msg)
    return value


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser."""
    parser = argparse.ArgumentParser(prog="edge", description="street-side IoT gateway agent")
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", "-c", type=Path, default=None,
                       help="devices.yaml (default: $EDGE_CONFIG, ./devices.yaml, else "
                            "/etc/edge/devices.yaml)")
        return p

    p = with_config(sub.add_parser("run", help="run the agent"))
    # an unknown level was a ValueError traceback from logging at start
    p.add_argument("--log-level", default="INFO", type=str.upper, choices=LOG_LEVELS)
    p.add_argument("--boot-delay-s", type=_boot_delay_s, default=None,
                   help="override the random boot delay (uplink.boot_delay_max_s)")
    p.set_defaults(func=cmd_run)
    p = with_config(sub.add_parser("check", help="validate the config and run preflight checks"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_check)
    p = with_config(sub.add_parser("probe", help="read one device once"))
    p.add_argument("device")
    p.set_defaults(func=cmd_probe)
    p = with_config(sub.add_parser("status", help="what the running agent is doing"))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = with_config(sub.add_parser("reload", help="make the running agent re-read the config"))
    p.set_defaults(func=cmd_reload)
    p = sub.add_parser("schema", help="print the platform contract's JSON Schemas")
    p.add_argument("name", nargs="?", default=None,
                   help="one schema by file name (command-result, gateway-state, ...); all if none")
    p.set_defaults(func=cmd_schema)
    p = with_config(sub.add_parser("keys", help="the gateway's signing key"))
    p.add_argument("action", choices=["init", "show"])
    p.add_argument("--force", action="store_true", help="replace an existing key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_keys)
    p = with_config(sub.add_parser("outbox", help="inspect the outbox"))
    p.add_argument("action", choices=["stats", "export", "requeue-dead"])
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edge`` console script."""
    args = build_parser().parse_args(argv)
    if getattr(args, "config", False) is None:
        args.config = default_config()
    debug = "--debug" in (argv or sys.argv)
    try:
        code: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        return _closed_pipe()
    except _ExitError as exc:
        return exc.code
    except KeyboardInterrupt:
        return 130
    except EdgeError as exc:
        if debug:
            raise
        print(f"✘ {exc}", file=sys.stderr)
        return EX_FAIL
    return code


def _closed_pipe() -> int:
    """End quietly when the reader went away (`edge status | head -3`), as cat or grep do.

    Python's own flush at exit would raise again and print a traceback (f14 #6): stdout is
    pointed at /dev/null first.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EX_PIPE


if __name__ == "__main__":
    sys.exit(main())
