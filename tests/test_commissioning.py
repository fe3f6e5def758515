"""`edge check` and `edge status` at the cabinet: what a technician sees (issue 21).

Real peers only: a pymodbus server for the buses, a real agent process for `edge status`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import pwd
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from edge.commands.keys import load_platform_keys
from edge.config_file import LoadedConfig
from edge.config_loader import load_config
from edge.drivers._codecs import nmea
from edge.errors import ConfigError
from edge.ops.status_file import read_status
from edge.ops.status_page import probe_verdict
from edge.preflight import (
    FAIL,
    OK,
    WARN,
    check_certificates,
    check_key,
    check_modbus_devices,
    check_platform_keys,
    check_state_dir,
    service_for,
    service_user,
)
from hil.broker import Mosquitto, free_port
from hil.pki import ensure_pki
from hil.sims.modbus_sim import ModbusTcpSim, lamp_unit, tilt_unit
from hil.sims.serial_sims import GpsSim
from tests.cfg import lamp_device, tilt_device, write_config
from tests.helpers import start_agent, stop_agent, wait_until

ROOT = Path(__file__).resolve().parents[1]


def _check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "check", "--config", str(config)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)


def _line(loaded: LoadedConfig, text: str, after: str = "") -> int:
    """Return the 1-based line of ``text`` in the config (the first after ``after``)."""
    lines = loaded.path.read_text(encoding="utf-8").splitlines()
    start = next(n for n, line in enumerate(lines) if after in line) if after else 0
    return next(n for n, line in enumerate(lines) if n >= start and text in line) + 1


def _marks(stdout: str) -> dict[str, str]:
    """Return 'name' -> the whole line, for each ✔/⚠/✘ line."""
    out = {}
    for line in stdout.splitlines():
        if line[:1] in "✔⚠✘":
            out[line[2:].split(":", 1)[0]] = line
    return out


async def test_a_modbus_device_that_does_not_exist_fails_check(tmp_path: Path) -> None:
    port = free_port()
    sim = ModbusTcpSim({80: tilt_unit(), 1: lamp_unit()}, port)
    await sim.start()
    try:
        loaded = write_config(tmp_path, broker_port=free_port(), pki=None, buses=[
            {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
             "timeout_s": 0.3, "retries": 0}], devices=[
            tilt_device("manhole-1", "covers", 80), tilt_device("manhole-9", "covers", 81),
            lamp_device("lamp-1", "covers", 1), lamp_device("lamp-9", "covers", 9)])
        result = await asyncio.to_thread(_check, loaded.path)
    finally:
        await sim.stop()
    marks = _marks(result.stdout)
    assert result.returncode == 1, result.stdout
    # the TCP port answers, so the bus passes; two units behind it do not exist
    assert marks["bus covers"].startswith("✔")
    assert marks["device manhole-1"].startswith("✔")
    assert marks["device lamp-1"].startswith("✔")
    for name, unit in (("manhole-9", 81), ("lamp-9", 9)):
        line = marks[f"device {name}"]
        assert line.startswith(f"✘ device {name}: unit {unit} on bus covers "
                               f"(127.0.0.1:{port}) did not answer a read"), line
        unit_line = _line(loaded, f"unit_id: {unit}", after=f"name: {name}")
        assert line.endswith(f"(devices.yaml:{unit_line})"), line


async def test_a_bus_that_does_not_answer_names_host_port_and_line(tmp_path: Path) -> None:
    dead = free_port()
    loaded = write_config(tmp_path, broker_port=free_port(), pki=None, buses=[
        {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": dead}],
        devices=[tilt_device("manhole-1", "covers", 80)])
    result = await asyncio.to_thread(_check, loaded.path)
    marks = _marks(result.stdout)
    assert result.returncode == 1
    bus_line = _line(loaded, "name: covers")
    assert marks["bus covers"] == (
        f"✘ bus covers: 127.0.0.1:{dead}: connection refused (nothing listens on that port) "
        f"(devices.yaml:{bus_line})")
    # the bus is down: its devices are not read again, but listed (issue 21 f8)
    assert marks["device manhole-1"] == ("✘ device manhole-1: not checked, its bus covers does "
                                         "not answer")
    assert marks["uplink"].endswith(f"(devices.yaml:{_line(loaded, 'host: 127.0.0.1')})")


async def test_check_says_whether_the_southbound_broker_accepts_us(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    """MQTT devices connect through southbound_mqtt: check tries it as their links will."""
    cover = {"name": "cover-9", "kind": "manhole_tilt", "transport": "mqtt", "topic": "c/9",
             "asset": {"code": "3205080106000999", "class": "0106", "grid": "320508001002003",
                       "name": "井盖"}}
    dead = free_port()
    for port, mark in ((plain_broker.port, "✔"), (dead, "✘")):
        loaded = write_config(tmp_path / str(port), broker_port=free_port(), pki=None,
                              buses=[], devices=[cover], extra={"southbound_mqtt": {
                                  "host": "127.0.0.1", "port": port, "tls": False}})
        line = _line(loaded, "host: 127.0.0.1", after="southbound_mqtt")
        south = _marks((await asyncio.to_thread(_check, loaded.path)).stdout)["southbound"]
        assert south.startswith(f"{mark} southbound: "), south
        assert south.endswith("; it serves cover-9"), south
        if mark == "✘":
            assert f"127.0.0.1:{dead}: " in south and f"(devices.yaml:{line})" in south, south
            assert "refused" in south, south


def test_a_serial_port_that_is_missing_names_the_port_and_line(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=free_port(), pki=None, buses=[
        {"name": "rs485", "type": "modbus_rtu", "port": "/dev/ttyUSB97"}],
        devices=[tilt_device("manhole-1", "rs485", 80, transport="modbus_rtu")])
    marks = _marks(_check(loaded.path).stdout)
    assert marks["bus rs485"] == ("✘ bus rs485: /dev/ttyUSB97 does not exist (is the adapter "
                                  f"plugged in?) (devices.yaml:{_line(loaded, 'name: rs485')})")


def _with_status_page(tmp_path: Path, password: str) -> LoadedConfig:
    tmp_path.mkdir(parents=True)
    secret = tmp_path / "status-password"
    secret.write_text(password + "\n", encoding="utf-8")
    secret.chmod(0o600)
    return write_config(tmp_path, broker_port=free_port(), pki=None, buses=[], devices=[],
                        extra={"observability": {"status_page_port": free_port(),
                                                 "status_page_password_file": str(secret)}})


def test_a_placeholder_status_page_password_fails_check(tmp_path: Path) -> None:
    loaded = _with_status_page(tmp_path / "a", "changeme")
    result = _check(loaded.path)
    line = _marks(result.stdout)["status page password"]
    assert result.returncode == 1
    assert line.startswith("✘ status page password: ")
    assert "placeholder" in line
    assert f"(devices.yaml:{_line(loaded, 'status_page_password_file')})" in line
    good = _with_status_page(tmp_path / "b", "7f3e-lamp-cabinet-91c2")
    assert _marks(_check(good.path).stdout)["status page password"].startswith("✔")


def test_a_state_dir_the_sandbox_cannot_write_fails_check(tmp_path: Path) -> None:
    # the shipped devices.yaml copied to /etc/edge put state in /etc/edge/var/state, which
    # ProtectSystem=strict makes read-only: `edge check` said ✔ there
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[])
    unit = tmp_path / "edge.service"
    unit.write_text((ROOT / "systemd" / "edge.service").read_text(encoding="utf-8"))
    check = check_state_dir(loaded, (unit,))
    assert check.status == FAIL
    assert "may write only /var/lib/edge" in check.detail
    assert f"(devices.yaml:{_line(loaded, 'state_dir:')})" in check.detail
    assert check_state_dir(loaded, (tmp_path / "absent.service",)).status == OK


async def test_status_shows_the_running_agent_while_the_file_is_broken(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, buses=[],
                          devices=[])
    started = time.time()
    agent = start_agent(loaded.path, tmp_path / "agent.log")
    try:
        await wait_until(lambda: ((read_status(loaded.state_dir) or {}).get("uplink") or {}).get(
            "connected"), 20, "status file, uplink connected")
        # the CONNACK's wall-clock time (issue 21 f7)
        up = (read_status(loaded.state_dir) or {})["uplink"]
        assert started <= up["connected_since"] <= time.time()
        good = loaded.path.read_text(encoding="utf-8")
        # a technician's edit in progress: a broken file on disk, the agent still running
        loaded.path.write_text(good.replace("devices: []", "devices: [\n  - name: x"),
                               encoding="utf-8")
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "edge.cli", "status", "--json", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
            timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        assert status["pid"] == agent.pid
        assert status["age_s"] < 10
        assert "problem(s) now (see `edge check`)" in result.stderr
    finally:
        stop_agent(agent)


def test_status_finds_the_state_folder_of_an_unparseable_file(tmp_path: Path) -> None:
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    (loaded.state_dir / "status.json").write_text(json.dumps({
        "version": "x", "pid": 1, "written_at": time.time() - 3600, "time_quality": "synced",
        "config": {}, "outbox": {"depth": 0, "dead_letters": 0, "drops": 0}, "devices": {}}))
    loaded.path.write_text(loaded.path.read_text().replace("gateway:", "gateway: [", 1))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "status", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert "NOT running (last status 360" in result.stdout, result.stderr


def test_status_of_a_stopped_agent_is_not_running_while_its_file_is_fresh(
        tmp_path: Path) -> None:
    """The last status is written at stop: seconds later `edge status` said "running"."""
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, timeout=30, check=True)
    (loaded.state_dir / "status.json").write_text(json.dumps({
        "version": "x", "pid": int(ended.stdout), "written_at": time.time(),
        "time_quality": "synced", "config": {},
        "outbox": {"depth": 0, "dead_letters": 0, "drops": 0}, "devices": {}}))
    result = subprocess.run([sys.executable, "-m", "edge.cli", "status", "--config",
                             str(loaded.path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=False)
    assert "NOT running (its process has ended)" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 1


async def test_check_beside_a_running_agent_judges_devices_by_its_polls(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    # a second master on the line would garble the agent's frames (RS-485) or take the only
    # connection a Modbus TCP device allows: while the agent runs, its polls answer
    port = free_port()
    sim = ModbusTcpSim({80: tilt_unit()}, port)
    await sim.start()
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, buses=[
        {"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
         "timeout_s": 0.2, "retries": 0}], devices=[
        tilt_device("manhole-1", "covers", 80), tilt_device("manhole-9", "covers", 81)])
    agent = start_agent(loaded.path, tmp_path / "agent.log")
    try:
        def polled() -> bool:
            status = read_status(loaded.state_dir) or {}
            devices = status.get("devices", {})
            return bool(devices.get("manhole-1", {}).get("polls_ok", 0) > 0 and
                        devices.get("manhole-9", {}).get("polls_failed", 0) > 0)
        await wait_until(polled, 20, "the agent's first polls")
        result = await asyncio.to_thread(_check, loaded.path)
    finally:
        stop_agent(agent)
        await sim.stop()
    marks = _marks(result.stdout)
    assert "answers the running agent" in marks["device manhole-1"]
    line = marks["device manhole-9"]
    assert line.startswith("✘ device manhole-9: unit 81 on bus covers: the running agent has it")
    assert line.endswith(f"(devices.yaml:{_line(loaded, 'unit_id: 81')})"), line


async def test_check_before_reload_reads_new_modbus_tcp_devices_through_their_unit(
        tmp_path: Path, plain_broker: Mosquitto) -> None:
    # the on-site case (issue 21 f1): devices added to the file, `edge check` before
    # `edge reload`; a new unit that does not answer must fail the check
    port = free_port()
    sim = ModbusTcpSim({80: tilt_unit(), 1: lamp_unit()}, port)
    await sim.start()
    buses = [{"name": "covers", "type": "modbus_tcp", "host": "127.0.0.1", "port": port,
              "timeout_s": 0.3, "retries": 0}]
    loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, buses=buses,
                          devices=[tilt_device("manhole-1", "covers", 80)])
    agent = start_agent(loaded.path, tmp_path / "agent.log")
    try:
        await wait_until(lambda: (read_status(loaded.state_dir) or {}).get("devices", {}).get(
            "manhole-1", {}).get("polls_ok", 0) > 0, 20, "the agent's first polls")
        loaded = write_config(tmp_path, broker_port=plain_broker.port, pki=None, buses=buses,
                              devices=[tilt_device("manhole-1", "covers", 80),
                                       lamp_device("lamp-1", "covers", 1),
                                       tilt_device("manhole-9", "covers", 81)])
        result = await asyncio.to_thread(_check, loaded.path)
    finally:
        stop_agent(agent)
        await sim.stop()
    marks = _marks(result.stdout)
    assert result.returncode == 1, result.stdout
    assert "answers the running agent" in marks["device manhole-1"]
    assert marks["device lamp-1"].startswith("✔ device lamp-1: unit 1 on bus covers "), \
        result.stdout
    assert "(not in the running agent as configured yet: edge reload)" in marks["device lamp-1"]
    line = marks["device manhole-9"]
    assert line.startswith(f"✘ device manhole-9: unit 81 on bus covers (127.0.0.1:{port}) did "
                           "not answer a read"), line


def test_check_before_reload_does_not_read_a_new_device_on_the_agents_rs485_line(
        tmp_path: Path) -> None:
    # a second master on a line the agent drives garbles both (D-number in docs/decisions.md):
    # the new device is not read and the check says so, failing
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
        {"name": "rs485", "type": "modbus_rtu", "port": "/dev/null"}], devices=[
        tilt_device("manhole-1", "rs485", 80, transport="modbus_rtu"),
        tilt_device("manhole-2", "rs485", 81, transport="modbus_rtu"),
        tilt_device("manhole-3", "rs485", 83, transport="modbus_rtu")])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    (loaded.state_dir / "status.json").write_text(json.dumps({
        "version": "x", "pid": os.getpid(), "written_at": time.time(), "buses": {"rs485": {}},
        "time_quality": "synced", "config": {}, "outbox": {},
        "devices": {"manhole-1": {"state": "online", "polls_ok": 3, "last_error": "",
                                  "bus": "rs485", "unit_id": 80, "model": "witmotion"},
                    # the agent polls manhole-2 as unit 82: the file's 81 is not vouched for
                    "manhole-2": {"state": "online", "polls_ok": 3, "last_error": "",
                                  "bus": "rs485", "unit_id": 82},
                    # the agent reads manhole-3 by another register map than the file's
                    "manhole-3": {"state": "online", "polls_ok": 3, "last_error": "",
                                  "bus": "rs485", "unit_id": 83, "model": "sunspec304"}}}))
    checks = asyncio.run(check_modbus_devices(loaded, set()))
    by_name = {c.name: c for c in checks}
    assert by_name["device manhole-1"].status == OK
    new = by_name["device manhole-2"]
    assert new.status == FAIL
    assert new.detail.startswith("not checked: not in the running agent as configured yet, and "
                                 "bus rs485 (/dev/null) is driven by the agent"), new.detail
    assert "edge reload" in new.detail
    assert by_name["device manhole-3"].status == FAIL


def test_check_trusts_a_status_file_from_an_agent_that_predates_its_unit_ids(
        tmp_path: Path) -> None:
    # an upgrade installed, the agent not yet restarted: its status names no bus or unit, and
    # a reload (the advice for a device not polled as configured) would not change that
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
        {"name": "rs485", "type": "modbus_rtu", "port": "/dev/null"}], devices=[
        tilt_device("manhole-1", "rs485", 80, transport="modbus_rtu")])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    (loaded.state_dir / "status.json").write_text(json.dumps({
        "version": "x", "pid": os.getpid(), "written_at": time.time(), "buses": {"rs485": {}},
        "time_quality": "synced", "config": {}, "outbox": {},
        "devices": {"manhole-1": {"state": "online", "polls_ok": 3, "last_error": ""}}}))
    (check,) = asyncio.run(check_modbus_devices(loaded, set()))
    assert (check.name, check.status) == ("device manhole-1", OK), check.detail


def test_a_key_the_service_user_cannot_read_fails_check_run_as_root(tmp_path: Path) -> None:
    # `sudo edge keys init --force` leaves a root-owned 0600 key: root's check passed, the
    # service then failed at start
    user = f"edgek{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", user], check=True)
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[])
        key = loaded.resolve(loaded.config.gateway.key_file)
        check = check_key(loaded, user)
        assert check.status == FAIL
        assert f"cannot be read by the service user {user}: chown {user} {key}" in \
            check.detail
        assert f"(devices.yaml:{_line(loaded, 'key_file:')})" in check.detail
        account = pwd.getpwnam(user)
        os.chown(key, account.pw_uid, account.pw_gid)
        assert check_key(loaded, user).status == OK
        assert service_user((tmp_path / "none.service",)) == "edge"
        unit = tmp_path / "edge.service"
        unit.write_text(f"[Service]\nExecStart=/opt/edge/venv/bin/edge run --config "
                        f"{loaded.path}\nUser={user}\n", encoding="utf-8")
        assert service_user((unit,)) == user
        # only the config the unit runs is judged for its user; a demo's is not
        assert service_for(loaded, (unit,)) == user
        unit.write_text(unit.read_text().replace(str(loaded.path), "/etc/edge/devices.yaml"))
        assert service_for(loaded, (unit,)) is None
    finally:
        subprocess.run(["userdel", user], check=False)


def test_a_missing_platform_keys_file_warns_that_every_command_is_refused(
        tmp_path: Path) -> None:
    # issue 21 f6: a missing allow-list passed ✔ "all entries valid" while every command
    # would be refused
    missing = tmp_path / "platform-keys.json"
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[],
                          gateway={"platform_keys_file": str(missing)})
    check = check_platform_keys(loaded)
    assert check.status == WARN
    assert check.detail == (f"{missing} is missing and devices.yaml names no key: every "
                            "command from the platform will be refused (the platform operator "
                            f"provides this file) (devices.yaml:"
                            f"{_line(loaded, 'platform_keys_file:')})")


def test_a_client_certificate_for_another_gateway_warns(tmp_path: Path) -> None:
    # issue 21 f10: the broker's ACL keys on the certificate's CN (docs/scale.md)
    pki = ensure_pki(tmp_path / "pki", cns={"gateway": "gw-320508-0099"})
    loaded = write_config(tmp_path, broker_port=1, pki=pki, buses=[], devices=[])
    marks = {c.name: c for c in check_certificates(loaded)}
    cn = marks["client certificate CN"]
    assert cn.status == WARN
    assert cn.detail.startswith("CN gw-320508-0099 is not gateway.id gw-320508-0007: the "
                                "broker's per-gateway ACL"), cn.detail
    right = ensure_pki(tmp_path / "pki2", cns={"gateway": "gw-320508-0007"})
    loaded = write_config(tmp_path / "b", broker_port=1, pki=right, buses=[], devices=[])
    assert {c.name: c for c in check_certificates(loaded)}["client certificate CN"].status == OK


def test_an_indentation_slip_points_at_the_entry_the_line_belongs_to(tmp_path: Path) -> None:
    # issue 21 f5: `baud` of speaker-01 indented by 3 spaces said "the block starts on line 50"
    # (manhole-12, the first entry of the list)
    text = (ROOT / "devices.yaml").read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    entry = next(n for n, line in enumerate(lines) if "- name: speaker-01" in line) + 1
    baud = next(n for n, line in enumerate(lines) if n >= entry and "baud:" in line)
    lines[baud] = "   " + lines[baud].lstrip()
    path = tmp_path / "devices.yaml"
    path.write_text("".join(lines), encoding="utf-8")
    try:
        load_config(path)
    except ConfigError as exc:
        problems = exc.problems
    else:
        raise AssertionError("loaded")
    assert problems == [f"devices.yaml:{baud + 1}: YAML indentation: this line does not line up "
                        f"with the keys above it (it belongs to the entry that starts on line "
                        f"{entry}: - name: speaker-01); indent it like them"]


def _probe(config: Path, device: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge.cli", "probe", device, "--config",
                           str(config)], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


async def test_probing_the_demo_gps_shows_fix_quality_and_satellites(tmp_path: Path) -> None:
    # issue 21 f4: GpsSim sent RMC only, so the probe said "fix_quality: no GGA heard" and ✔
    port = free_port()
    sim = GpsSim(port, rate_hz=4.0)
    await sim.start()
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[{
            "name": "truck-03", "kind": "gps", "transport": "serial",
            "port": f"socket://127.0.0.1:{port}", "baud": 9600, "model": "nmea",
            "asset": {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
                      "name": "truck"}}])
        result = await asyncio.to_thread(_probe, loaded.path, "truck-03")
    finally:
        await sim.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("✔ truck-03"), result.stdout
    assert "fix_quality: GPS" in result.stdout
    assert "satellites: 9" in result.stdout
    assert "fix_mode: 3D" in result.stdout
    assert "GNGGA," in result.stdout  # the wire shows the GGA (position blanked)


async def test_probing_a_receiver_without_a_fix_fails(tmp_path: Path) -> None:
    port = free_port()
    sim = GpsSim(port, rate_hz=4.0)
    sim.set_fault("no_fix")  # RMC status V, GGA quality 0 (indoors, antenna unplugged)
    await sim.start()
    try:
        loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[{
            "name": "truck-03", "kind": "gps", "transport": "serial",
            "port": f"socket://127.0.0.1:{port}", "baud": 9600, "model": "nmea",
            "asset": {"code": "3205082190000003", "class": "2190", "grid": "320508001002003",
                      "name": "truck"}}])
        result = await asyncio.to_thread(_probe, loaded.path, "truck-03")
    finally:
        await sim.stop()
    assert result.returncode == 1, result.stdout + result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("✘ truck-03 (gps, nmea) answered in "), first
    assert first.endswith(": the receiver talks but has no fix (GGA fix quality: no fix): "
                          "check the antenna, its cable and its view of the sky"), first


def test_a_probe_without_a_fix_is_not_called_ok() -> None:
    assert probe_verdict({"sentences": 9, "fix_quality": "no fix", "satellites": 0}) == (
        FAIL, "the receiver talks but has no fix (GGA fix quality: no fix): check the "
              "antenna, its cable and its view of the sky")
    assert probe_verdict({"sentences": 3, "fix_quality": "GPS", "fix_mode": "no fix"})[0] == FAIL
    assert probe_verdict({"sentences": 3, "fix_quality": "no GGA heard"}) == (
        WARN, "no GGA heard: fix quality and satellites unknown (enable GGA and GSA output on "
              "the receiver)")
    assert probe_verdict({"sentences": 3, "fix_quality": "GPS", "satellites": 9})[0] == OK
    assert probe_verdict({"tilt_x_deg": 1.0})[0] == OK


def test_gga_and_gsa_from_the_simulator_parse_as_a_receiver_sends_them() -> None:
    now = dt.datetime(2026, 3, 1, 12, 0, 1, tzinfo=dt.UTC)
    text = GpsSim(1).sentences(0.0, now)
    kinds = [nmea.parse_sentence(line + "\r\n").type for line in text.splitlines()]
    assert kinds == ["RMC", "GGA", "GSA"]
    status: dict[str, object] = {}
    for line in text.splitlines():
        status.update(nmea.receiver_status(nmea.parse_sentence(line + "\r\n")))
    assert status == {"fix_quality": "GPS", "satellites": 9, "hdop": 0.9, "fix_mode": "3D"}
    nofix = GpsSim(1)
    nofix.fix = False
    text = nofix.sentences(0.0, now)
    status = {}
    for line in text.splitlines():
        status.update(nmea.receiver_status(nmea.parse_sentence(line + "\r\n")))
    assert status["fix_quality"] == "no fix"
    assert ",V," in text.splitlines()[0]  # RMC status V


@pytest.mark.parametrize("status", ["stale", "damaged", "missing"])
def test_check_is_no_second_master_while_the_agent_holds_the_outbox(
        tmp_path: Path, status: str) -> None:
    """Review finding 9: a stale or damaged status file made check open the agent's RS-485 bus.

    The agent holds the outbox lock while it runs, whatever its status file says.
    """
    from edge.buffer.store import Outbox

    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
        {"name": "rs485", "type": "modbus_rtu", "port": "/dev/null"}], devices=[
        tilt_device("manhole-1", "rs485", 80, transport="modbus_rtu")])
    loaded.state_dir.mkdir(parents=True, exist_ok=True)
    if status == "stale":
        (loaded.state_dir / "status.json").write_text(json.dumps({
            "version": "x", "pid": os.getpid(), "written_at": time.time() - 3600,
            "buses": {"rs485": {}}, "time_quality": "synced", "config": {}, "outbox": {},
            "devices": {}}))
    elif status == "damaged":
        (loaded.state_dir / "status.json").write_text('{"written_at": ')
    store = Outbox(loaded.state_dir / loaded.config.outbox.path)
    store.open()  # what a running agent holds
    try:
        checks = asyncio.run(check_modbus_devices(loaded, set()))
    finally:
        store.close()
    [check] = checks
    assert check.status == FAIL
    assert check.detail.startswith("not checked: the agent is running (it holds the outbox) "
                                   "and drives bus rs485 (/dev/null)"), check.detail


async def test_a_serial_port_already_open_refuses_a_second_opener() -> None:
    """Review finding 9: the second opener of an RS-485 port fails cleanly (exclusive lock)."""
    import pty

    from edge.errors import DeviceUnavailableError
    from edge.transports.serial import SerialPort

    controller, device_fd = pty.openpty()
    path = os.ttyname(device_fd)
    first, second = SerialPort(path, 9600), SerialPort(path, 9600)
    try:
        await first.open("gps-1")
        with pytest.raises(DeviceUnavailableError, match="cannot open"):
            await second.open("gps-1")
    finally:
        await first.close()
        await second.close()
        os.close(controller)
        os.close(device_fd)


def test_edge_check_says_a_missing_platform_keys_file_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # issue 22 integrator #7: `edge check` printed the agent's log line on stderr on top of
    # its own ⚠ line for the same file; the agent itself still logs it
    missing = tmp_path / "platform-keys.json"
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[], devices=[],
                          gateway={"platform_keys_file": str(missing)})
    with caplog.at_level(logging.DEBUG, logger="edge.commands.keys"):
        assert check_platform_keys(loaded).status == WARN
    assert not [r for r in caplog.records if r.name == "edge.commands.keys"]
    edge = Path(sys.executable).parent / "edge"
    done = subprocess.run([str(edge), "check", "--config", str(loaded.path)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert "no platform keys file" not in done.stdout + done.stderr
    assert done.stdout.count(f"{missing} is missing") == 1, done.stdout
    with caplog.at_level(logging.WARNING, logger="edge.commands.keys"):
        load_platform_keys(loaded.config, loaded.base_dir)
    assert [r.getMessage() for r in caplog.records if r.name == "edge.commands.keys"] == [
        f"no platform keys file {missing}: only keys in devices.yaml may sign"]


def test_a_lock_file_we_may_not_open_counts_as_held(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 2 #7: a technician who cannot open the service user's 0600 lock is not told
    "no agent" (and then read a bus the agent may be driving)."""
    import os as os_module

    from edge.buffer import database as store_module

    db = tmp_path / "outbox.db"
    (tmp_path / "outbox.db.lock").write_bytes(b"")
    assert store_module.held_by_an_agent(db) is False  # nobody holds it
    real_open = os_module.open

    def denied(path: object, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".lock"):
            raise PermissionError(13, "Permission denied")
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os_module, "open", denied)
    assert store_module.held_by_an_agent(db) is True
    assert store_module.held_by_an_agent(tmp_path / "none.db") is True  # cannot tell: careful
