"""``edge check``: preflight checks a technician runs at the cabinet.

Each check returns ✔ (ok), ⚠ (works, but look at it) or ✘ (will not work) with one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import socket
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from edge.buffer.database import held_by_an_agent
from edge.clock import Clock, TimeQuality
from edge.commands.keys import keys_file_path, read_platform_keys
from edge.config import AnyDevice, ModbusTcpBus
from edge.config_file import LoadedConfig
from edge.drivers._mqtt_device import DeviceBroker
from edge.errors import (
    DeviceError,
    EdgeError,
    KeyFileError,
    LinkError,
    PlatformKeysError,
    SecretError,
)
from edge.security.keys import load_key
from edge.security.secrets import read_secret
from edge.transports.mqtt import MqttLink
from edge.transports.tls import client_context

OK, WARN, FAIL = "ok", "warn", "fail"
CERT_WARN_DAYS = 30


@dataclass(frozen=True)
class Check:
    """One preflight result."""

    name: str
    status: str
    detail: str

    @property
    def mark(self) -> str:
        """Return the mark printed before the line."""
        return {"ok": "✔", "warn": "⚠", "fail": "✘"}[self.status]


def _tcp(host: str, port: int, timeout_s: float = 2.0) -> str | None:
    """Return why ``host:port`` does not accept a connection, in words, or None."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except TimeoutError:
        return f"no answer in {timeout_s:g} s (wrong address, or a firewall)"
    except ConnectionRefusedError:
        return "connection refused (nothing listens on that port)"
    except socket.gaierror as exc:
        return f"cannot resolve {host!r} ({exc.strerror})"
    except OSError as exc:
        return exc.strerror or str(exc)


def check_clock(loaded: LoadedConfig) -> Check:
    """Check that the wall clock can be trusted for event timestamps."""
    clock = Clock(loaded.config.gateway.time_source)
    source = loaded.config.gateway.time_source
    if clock.quality() is TimeQuality.SYNCED:
        how = "trusting the system clock (time_source: system)" if source == "system" \
            else "kernel reports the clock synchronised"
        return Check("clock", OK, how)
    if source == "gnss":
        return Check("clock", WARN, "waiting for a GNSS fix; events are stamped 'unsynced' "
                                    "and re-stamped once it comes")
    return Check("clock", FAIL, "clock not synchronised (NTP); events will be 'unsynced' until "
                                "it is: check timedatectl / chronyc tracking")


# the unit's sandbox (ProtectSystem=strict) lets the service write its StateDirectory only
SERVICE_STATE_DIR = Path("/var/lib/edge")


def check_state_dir(loaded: LoadedConfig, unit_paths: tuple[Path, ...] | None = None) -> Check:
    """Check that the outbox can be written, with room for its quota."""
    state_dir = loaded.state_dir
    unit = next((p for p in (unit_paths or UNIT_PATHS) if p.exists()), None)
    if unit is not None and not state_dir.resolve().is_relative_to(SERVICE_STATE_DIR):
        return Check("outbox", FAIL, f"gateway.state_dir is {state_dir} "
                                     f"({loaded.line_of('gateway', 'state_dir')}), but the "
                                     f"service ({unit}) may write only {SERVICE_STATE_DIR}: "
                                     f"set state_dir: {SERVICE_STATE_DIR}")
    probe = state_dir
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        return Check("outbox", FAIL, f"{probe} is not writable by uid {os.getuid()}")
    free = shutil.disk_usage(probe).free
    quota = loaded.config.outbox.quota_bytes
    outbox = state_dir / loaded.config.outbox.path
    used = outbox.stat().st_size if outbox.exists() else 0
    if free + used < quota:
        return Check("outbox", WARN, f"{free / 2**20:.0f} MiB free on {probe}, below the "
                                     f"{quota / 2**20:.0f} MiB quota: lower outbox.quota_bytes")
    return Check("outbox", OK, f"{state_dir} writable, {free / 2**20:.0f} MiB free "
                               f"(quota {quota / 2**20:.0f} MiB)")


def check_key(loaded: LoadedConfig, user: str | None = None) -> Check:
    """Check that the gateway signing key is present, private, valid and the service's."""
    path = loaded.resolve(loaded.config.gateway.key_file)
    try:
        load_key(path)
    except KeyFileError as exc:
        hint = " (run `edge keys init`)" if not path.exists() else ""
        return Check("gateway key", FAIL, f"{exc}{hint}")
    problem = service_cannot_read(path, user or service_for(loaded))
    if problem:
        return Check("gateway key", FAIL, f"{problem} "
                                          f"({loaded.line_of('gateway', 'key_file')})")
    return Check("gateway key", OK, f"{path} (0600, Ed25519)")


def service_user(unit_paths: tuple[Path, ...] | None = None) -> str:
    """Return the user the service runs as: the installed unit's User= (install.sh --user)."""
    for path in unit_paths or UNIT_PATHS:
        if path.exists():
            found = re.search(r"^User=(\S+)", path.read_text(encoding="utf-8", errors="replace"),
                              re.MULTILINE)
            if found:
                return found.group(1)
    return "edge"


def service_for(loaded: LoadedConfig, unit_paths: tuple[Path, ...] | None = None) -> str | None:
    """Return the service user when the installed unit runs this very config, else None.

    A demo or a workbench config is run by whoever starts it; only the unit's own config must
    be readable by its user.
    """
    for path in unit_paths or UNIT_PATHS:
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            found = re.search(r"^ExecStart=.*--config\s+(\S+)", text, re.MULTILINE)
            if found and Path(found.group(1)).resolve() == loaded.path.resolve():
                return service_user((path,))
            return None
    return None


def service_cannot_read(path: Path, user: str | None) -> str | None:
    """Return why the service user cannot read ``path``, or None.

    Only root can see it: a file made with sudo (``sudo edge keys init --force``, a key copied
    by root) passes every check root runs and stops the service at its first start.
    """
    if os.geteuid() != 0 or user is None:
        return None  # as the service user, opening the file already said it
    import grp  # noqa: PLC0415 - POSIX only
    import pwd  # noqa: PLC0415

    name = user
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return None  # no service user on this machine (a workbench): nothing to judge
    if account.pw_uid == 0:
        return None
    st = path.stat()
    try:
        members = grp.getgrgid(st.st_gid).gr_mem
    except KeyError:
        members = []
    if st.st_uid == account.pw_uid:
        readable = bool(st.st_mode & stat.S_IRUSR)
    elif st.st_gid == account.pw_gid or name in members:
        readable = bool(st.st_mode & stat.S_IRGRP)
    else:
        readable = bool(st.st_mode & stat.S_IROTH)
    if readable:
        return None
    return (f"{path} (owner uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o}) cannot be "
            f"read by the service user {name}: chown {name} {path}")


def check_certificates(loaded: LoadedConfig, user: str | None = None) -> list[Check]:
    """Check that the TLS files are readable (by the service too) and not about to expire."""
    user = user or service_for(loaded)
    tls = loaded.config.uplink.tls
    if tls is False:
        return [Check("tls", WARN, "tls: false — plaintext to a loopback broker only; never "
                                   "use this towards the platform")]
    out = []
    for label, key, value in (("CA", "ca_file", tls.ca_file),
                              ("client certificate", "cert_file", tls.cert_file)):
        if value is None:
            continue
        path = loaded.resolve(value)
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError) as exc:
            # an OSError's text repeats the path: its strerror says it once
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            where = loaded.line_of("uplink", "tls", key)
            out.append(Check(label, FAIL, f"{path}: {why} ({where})"))
            continue
        left = cert.not_valid_after_utc - dt.datetime.now(dt.UTC)
        problem = service_cannot_read(path, user)
        if problem:
            out.append(Check(label, FAIL, problem))
        elif left.total_seconds() <= 0:
            out.append(Check(label, FAIL, f"{path} expired on {cert.not_valid_after_utc:%Y-%m-%d}"))
        elif left.days <= CERT_WARN_DAYS:
            out.append(Check(label, WARN, f"{path} expires in {left.days} days"))
        else:
            out.append(Check(label, OK, f"{path} valid until {cert.not_valid_after_utc:%Y-%m-%d}"))
        if label == "client certificate":
            out.append(_check_cn(loaded, cert))
    if tls.key_file is not None:
        key_path = loaded.resolve(tls.key_file)
        mode = key_path.stat().st_mode & 0o077 if key_path.exists() else None
        if mode is None:
            out.append(Check("client key", FAIL, f"{key_path} is missing"))
        elif mode:
            out.append(Check("client key", FAIL, f"{key_path} is readable by others; chmod 600"))
        elif problem := service_cannot_read(key_path, user):
            out.append(Check("client key", FAIL, problem))
    return out


def _check_cn(loaded: LoadedConfig, cert: x509.Certificate) -> Check:
    """Compare the client certificate's CN with gateway.id (the broker's ACL keys on the CN)."""
    gateway = loaded.config.gateway.id
    names = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    cn = names[0] if names else "(none)"
    if cn == gateway:
        return Check("client certificate CN", OK, f"CN {cn} is gateway.id")
    # docs/scale.md: the broker takes the CN as the user name and allows it only its own
    # topics, so a certificate issued for another gateway connects but cannot publish
    return Check("client certificate CN", WARN,
                 f"CN {cn} is not gateway.id {gateway}: the broker's per-gateway ACL "
                 "(docs/scale.md) lets this certificate write only that gateway's topics; ask "
                 f"for a certificate with CN {gateway} ({loaded.line_of('gateway', 'id')})")


@contextlib.contextmanager
def _unlogged(logger_name: str) -> Iterator[None]:
    """Drop ``logger_name``'s records while a check reports the same thing as its own line.

    The agent logs a missing platform keys file (edge/commands/keys.py); `edge check` says it
    in its ⚠ line, and a second, raw line on stderr about the same file reads as another
    problem (issue 22 integrator #7).
    """
    logger = logging.getLogger(logger_name)
    logger.addFilter(_drop)
    try:
        yield
    finally:
        logger.removeFilter(_drop)


def _drop(_record: logging.LogRecord) -> bool:
    return False


def check_platform_keys(loaded: LoadedConfig) -> Check:
    """Check the platform's command keys: refused entries fail; none at all warns."""
    cfg = loaded.config
    try:
        with _unlogged("edge.commands.keys"):
            keys = read_platform_keys(cfg, loaded.base_dir)
    except PlatformKeysError as exc:
        return Check("platform keys", FAIL, str(exc))
    path = keys_file_path(cfg, loaded.base_dir)
    where = f" ({loaded.line_of('gateway', 'platform_keys_file')})" if path else ""
    if path is not None and not path.exists():
        if not keys:
            return Check("platform keys", WARN,
                         f"{path} is missing and devices.yaml names no key: every command "
                         "from the platform will be refused (the platform operator provides "
                         f"this file){where}")
        return Check("platform keys", WARN,
                     f"{path} is missing: only the {len(keys)} key(s) in devices.yaml may "
                     f"sign commands{where}")
    if not keys:
        return Check("platform keys", WARN, "no platform key configured: every command from "
                                            "the platform will be refused")
    return Check("platform keys", OK, f"{len(keys)} key(s), all entries valid")


async def check_uplink(loaded: LoadedConfig) -> Check:
    """Check that the broker accepts us, with TLS verified."""
    up = loaded.config.uplink
    if up.kind != "mqtt":
        return Check("uplink", WARN, "HTTPS uplink: reachability not checked yet")
    try:
        tls = None if up.tls is False else client_context(up.tls, loaded.base_dir)
        # our own client id: the running agent's session must not be kicked by the check
        client_id = f"{up.client_id or loaded.config.gateway.id}-check"
        link = MqttLink(host=up.host, port=up.port, client_id=client_id,
                        protocol=up.protocol, keepalive_s=up.keepalive_s,
                        connect_timeout_s=min(up.connect_timeout_s, 5.0), tls=tls)
        try:
            await link.connect()
        finally:
            await link.close()
    except LinkError as exc:
        where = f"{up.host}:{up.port}"
        said = str(exc).removeprefix(f"{where}: ")  # the link names the address itself
        return Check("uplink", FAIL, f"{where}: {said} ({loaded.line_of('uplink', 'host')})")
    how = "TLS verified" if up.tls is not False else "PLAINTEXT"
    return Check("uplink", OK, f"MQTT {up.protocol} at {up.host}:{up.port} accepted us ({how})")


async def check_southbound(loaded: LoadedConfig) -> Check | None:
    """Check that the southbound broker accepts us with the devices' TLS and credentials.

    Connects only: the devices' topic subscriptions (a broker ACL) are tried by their links.
    """
    south = loaded.config.southbound_mqtt
    if south is None:
        return None
    users = [d.name for d in loaded.config.devices if d.transport == "mqtt" and d.enabled]
    named = ", ".join(users[:5]) + (f" and {len(users) - 5} more" if len(users) > 5 else "")
    serves = f"serves {named}" if users else "serves no enabled device"
    where = f"{south.host}:{south.port}"
    broker = DeviceBroker(south, base_dir=loaded.base_dir, gateway_id=loaded.config.gateway.id)
    try:
        # a client id no device's can be (device names have no ':'): a running agent's
        # device session is never kicked by a check beside it
        link = await broker.connect("check", [], client_id=f"{broker.gateway_id}:edge-check")
        await link.close()
    except (DeviceError, SecretError, LinkError) as exc:
        said = exc.detail if isinstance(exc, DeviceError) else str(exc)
        said = said.removeprefix("southbound broker: ").removeprefix(f"{where}: ")
        return Check("southbound", FAIL, f"{where}: {said} "
                                         f"({loaded.line_of('southbound_mqtt', 'host')}); it "
                                         f"{serves}")
    how = "TLS verified" if south.tls is not False else "PLAINTEXT"
    return Check("southbound", OK, f"MQTT at {where} accepted us ({how}); it {serves}")


def check_ports(loaded: LoadedConfig) -> list[Check]:
    """Check serial ports (present, permitted) and TCP endpoints (reachable)."""
    out = []
    cfg = loaded.config
    for b, bus in enumerate(cfg.buses):
        where = loaded.line_of("buses", b)
        if bus.type == "modbus_tcp":
            err = _tcp(bus.host, bus.port)
            out.append(Check(f"bus {bus.name}", FAIL if err else OK,
                             f"{bus.host}:{bus.port}: {err} ({where})" if err
                             else f"{bus.host}:{bus.port} reachable"))
        else:
            out.append(_port_check(f"bus {bus.name}", bus.port, where))
    out.extend(_port_check(f"device {device.name}", device.port,
                           loaded.line_of("devices", i, "port"))
               for i, device in enumerate(cfg.devices)
               if device.transport == "serial" and device.port)
    return out


def _port_check(label: str, port: str, where: str = "") -> Check:
    at = f" ({where})" if where else ""
    if port.startswith("socket://"):
        host, _, num = port.removeprefix("socket://").rpartition(":")
        err = _tcp(host, int(num))
        return Check(label, FAIL if err else OK, f"{port}: {err}{at}" if err
                     else f"{port} reachable")
    path = Path(port)
    if not path.exists():
        return Check(label, FAIL, f"{port} does not exist (is the adapter plugged in?){at}")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check(label, FAIL, f"{port} not readable/writable by uid {os.getuid()} "
                                  f"(add the service user to group dialout){at}")
    problem = _service_group_ok(path)
    if problem:
        return Check(label, FAIL, f"{problem}{at}")
    return Check(label, OK, f"{port} present and permitted")


async def check_modbus_devices(loaded: LoadedConfig, down: set[str],
                               timeout_s: float = 10.0) -> list[Check]:
    """Read every enabled Modbus device once: an open TCP port is not a unit that answers.

    Devices on a bus already reported down (``down``) are listed as not checked. While the
    agent runs, its own polls answer for the devices it has: a second master on an RS-485
    line garbles both, and many Modbus TCP devices take a single connection. A device the
    agent does not poll yet (checked before ``edge reload``) is read through its unit when
    that is safe: on Modbus TCP, or on a serial bus the agent does not drive. On a line the
    agent drives it is not read and fails the check, saying why (D63).
    """
    from edge.ops.status_file import read_status  # noqa: PLC0415 - heavy

    cfg = loaded.config
    modbus = [(i, d) for i, d in enumerate(cfg.devices)
              if d.enabled and d.transport in ("modbus_tcp", "modbus_rtu") and d.bus]
    out: dict[int, Check] = {
        i: Check(f"device {d.name}", FAIL, f"not checked, its bus {d.bus} does not answer")
        for i, d in modbus if d.bus in down}
    wanted = [(i, d) for i, d in modbus if d.bus not in down]
    status = read_status(loaded.state_dir)
    fresh = status is not None and \
        time.time() - float(status.get("written_at", 0)) < STATUS_FRESH_S
    # a stale or damaged status file is not a stopped agent: the outbox lock says (finding 9)
    held = not fresh and held_by_an_agent(loaded.state_dir / cfg.outbox.path)
    running = fresh or held
    to_read: list[tuple[int, AnyDevice]] = []
    for i, d in wanted:
        seen = (status or {}).get("devices", {}).get(d.name) if fresh else None
        # an agent older than the status file's bus and unit (an upgrade not yet restarted)
        # says nothing of them: trusted as before, not sent to a reload that cannot help
        if seen is not None and "unit_id" in seen and \
                (seen.get("bus"), seen.get("unit_id"), seen.get("model", d.model)) != \
                (d.bus, d.unit_id, d.model):
            seen = None  # the agent polls another unit or map under this name: not as configured
        bus = cfg.bus(d.bus or "")
        if seen is not None:
            out[i] = _from_agent(loaded, i, d, seen)
        elif held and not isinstance(bus, ModbusTcpBus):  # which lines it drives: unknown
            out[i] = Check(f"device {d.name}", FAIL,
                           f"not checked: the agent is running (it holds the outbox) and "
                           f"drives bus {bus.name} ({_link(bus)}) as far as we know — its "
                           "status file is stale or unreadable, and a second master would "
                           "garble its frames; see `edge status` "
                           f"({loaded.line_of('devices', i, 'unit_id')})")
        elif fresh and _agent_drives_line(bus, status or {}):
            out[i] = Check(f"device {d.name}", FAIL,
                           f"not checked: not in the running agent as configured yet, and bus "
                           f"{bus.name} ({_link(bus)}) is driven by the agent — a second master "
                           "would garble its frames; run `edge reload`, then `edge check` again "
                           f"({loaded.line_of('devices', i, 'unit_id')})")
        else:
            to_read.append((i, d))
    note = " (not in the running agent as configured yet: edge reload)" if running else ""
    read = await _read_units(loaded, to_read, timeout_s, note=note)
    out.update(read)
    return [out[i] for i, _ in modbus]


def _link(bus: Any) -> str:
    return f"{bus.host}:{bus.port}" if isinstance(bus, ModbusTcpBus) else str(bus.port)


def _agent_drives_line(bus: Any, status: dict[str, Any]) -> bool:
    """Return whether the running agent has ``bus`` open as a serial (RS-485) master."""
    return not isinstance(bus, ModbusTcpBus) and bus.name in (status.get("buses") or {})


async def _read_units(loaded: LoadedConfig, wanted: list[tuple[int, AnyDevice]],
                      timeout_s: float, note: str) -> dict[int, Check]:
    """Read each device in ``wanted`` through its own unit, concurrently."""
    from edge.drivers.factory import Transports, build_driver  # noqa: PLC0415

    if not wanted:
        return {}
    cfg = loaded.config
    transports = Transports(cfg, base_dir=loaded.base_dir)

    async def read(i: int, device: AnyDevice) -> Check:
        assert device.bus is not None  # the loader checked
        bus = cfg.bus(device.bus)
        who = f"unit {device.unit_id} on bus {bus.name} ({_link(bus)})"
        driver = build_driver(device, cfg, transports)
        try:
            async with asyncio.timeout(timeout_s):
                await driver.probe()
        except (EdgeError, TimeoutError) as exc:
            why = getattr(exc, "detail", "") or str(exc) or f"no answer in {timeout_s:g} s"
            return Check(f"device {device.name}", FAIL,
                         f"{who} did not answer a read: {why} "
                         f"({loaded.line_of('devices', i, 'unit_id')})")
        finally:
            await driver.close()
        return Check(f"device {device.name}", OK, f"{who} answered ({device.model}){note}")

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = {i: tg.create_task(read(i, d), name=f"check-{d.name}") for i, d in wanted}
    finally:
        await transports.close()
    return {i: t.result() for i, t in tasks.items()}


STATUS_FRESH_S = 10.0  # the agent rewrites its status file every few seconds


def _from_agent(loaded: LoadedConfig, i: int, device: AnyDevice,
                seen: dict[str, Any]) -> Check:
    """Judge a device by the running agent's polls (its status file)."""
    label, where = f"device {device.name}", loaded.line_of("devices", i, "unit_id")
    if seen.get("state") == "online" and seen.get("polls_ok", 0) > 0:
        return Check(label, OK, f"unit {device.unit_id} answers the running agent "
                                f"({seen['polls_ok']} polls ok)")
    return Check(label, FAIL, f"unit {device.unit_id} on bus {device.bus}: the running agent "
                              f"has it {seen.get('state')}: {seen.get('last_error') or '-'} "
                              f"({where})")


def check_placeholders(loaded: LoadedConfig) -> Check:
    """Fail values left from the site template (systemd/devices.site.yaml's EDIT lines).

    They parse, so nothing else noticed: a cabinet would report as gw-000000-0001 from
    county 000000 to a broker that does not exist (new-user tryout).
    """
    cfg = loaded.config
    left = []
    if cfg.gateway.id.startswith("gw-000000"):
        left.append(f"gateway.id {cfg.gateway.id}")
    if cfg.gateway.county_code == "000000":
        left.append("gateway.county_code 000000")
    if cfg.uplink.host.endswith(".invalid"):
        left.append(f"uplink.host {cfg.uplink.host}")
    left += [f"device {d.name}: asset {what}" for d in cfg.devices
             for what, bad in (("name (EDIT)", "(EDIT)" in d.asset.name),
                               ("code 000000…", d.asset.code.startswith("000000")))
             if bad]
    if not left:
        return Check("site values", OK, "no placeholder from the site template")
    more = f" (+{len(left) - 6} more)" if len(left) > 6 else ""
    return Check("site values", FAIL, "placeholders from the site template (EDIT) remain: "
                 + "; ".join(left[:6]) + more)


def check_secrets(loaded: LoadedConfig) -> list[Check]:
    """Check password files the agent would refuse: missing, too open, or a placeholder."""
    cfg = loaded.config
    files = [("status page password", ("observability", "status_page_password_file"),
              cfg.observability.status_page_password_file
              if cfg.observability.status_page_port is not None else None),
             ("uplink password", ("uplink", "password_file"), cfg.uplink.password_file)]
    if cfg.southbound_mqtt is not None:
        files.append(("southbound password", ("southbound_mqtt", "password_file"),
                      cfg.southbound_mqtt.password_file))
    out = []
    for label, loc, value in files:
        if value is None:
            continue
        try:
            read_secret(loaded.resolve(value), label)
        except SecretError as exc:
            out.append(Check(label, FAIL, f"{exc} ({loaded.line_of(*loc)}); `edge run` "
                                          "refuses to start with it"))
            continue
        out.append(Check(label, OK, f"{loaded.resolve(value)} set, mode 0600"))
    return out


UNIT_PATHS = (Path("/etc/systemd/system/edge.service"), Path("/lib/systemd/system/edge.service"))


def check_unit(paths: tuple[Path, ...] = UNIT_PATHS) -> Check:
    """Check that the service unit is installed with its watchdog."""
    for path in paths:
        if path.exists():
            text = path.read_text(encoding="utf-8", errors="replace")
            if "WatchdogSec=" not in text or "Type=notify" not in text:
                return Check("service", FAIL, f"{path} has no Type=notify watchdog")
            return Check("service", OK, f"{path} installed, watchdog configured")
    return Check("service", WARN, "edge.service is not installed (systemd/install.sh); fine on "
                                  "a workbench, not in a cabinet")


def _service_group_ok(path: Path, service_user: str = "edge") -> str | None:
    """Return why the service user could not open ``path``, or None."""
    try:
        import grp  # noqa: PLC0415 - POSIX only
        import pwd  # noqa: PLC0415

        user = pwd.getpwnam(service_user)
    except (ImportError, KeyError):
        return None  # no service user on this machine (a workbench): nothing to judge
    st = path.stat()
    group = grp.getgrgid(st.st_gid)
    if st.st_uid == user.pw_uid or service_user in group.gr_mem or \
            user.pw_gid == st.st_gid:
        return None
    return f"user {service_user} is not in group {group.gr_name} of {path}"


async def run_checks(loaded: LoadedConfig) -> list[Check]:
    """Run every check."""
    checks = [check_clock(loaded), check_state_dir(loaded), check_key(loaded)]
    checks.append(check_platform_keys(loaded))  # issue 19 #7, issue 21 f6
    checks.append(check_placeholders(loaded))
    try:
        checks += check_certificates(loaded)
    except EdgeError as exc:
        checks.append(Check("tls", FAIL, str(exc)))
    checks += check_secrets(loaded)
    checks.append(await check_uplink(loaded))
    south = await check_southbound(loaded)
    if south is not None:
        checks.append(south)
    ports = await asyncio.to_thread(check_ports, loaded)
    checks += ports
    down = {c.name.removeprefix("bus ") for c in ports
            if c.status == FAIL and c.name.startswith("bus ")}
    checks += await check_modbus_devices(loaded, down)
    checks.append(check_unit())
    return checks
