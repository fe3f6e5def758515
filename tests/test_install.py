"""systemd/install.sh staged into a folder (DESTDIR), then commissioned as a technician would.

The staged tree is bind-mounted at the real paths (/etc/edge, /var/lib/edge, /opt/edge) in a
private mount namespace, so `edge check` and `edge run` read exactly the files install.sh made,
at the paths the site config names, as the service user — never as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import shutil
import ssl
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from edge.config_loader import load_config
from hil.broker import Mosquitto, free_port
from hil.pki import Pki
from hil.receiver.core import Receiver, load_gateway_keys
from hil.receiver.service import run_mqtt
from hil.receiver.store import ReceiverStore
from hil.sims.modbus_sim import ModbusTcpSim, lamp_unit, tilt_unit
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
MOUNTS = ("etc/edge", "var/lib/edge", "opt/edge")
GW = "gw-320508-0007"


@dataclass(frozen=True)
class Staged:
    """A staged install and the throwaway service user it belongs to."""

    root: Path
    user: str
    stdout: str

    def run(self, *argv: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` as the service user with the staged tree at the real paths."""
        return subprocess.run(self.command(*argv), capture_output=True, text=True,
                              timeout=timeout_s, check=False, env=self.env())

    def command(self, *argv: str) -> list[str]:
        """Return the command line that runs ``argv`` inside the namespace."""
        pw = pwd.getpwnam(self.user)
        script = ('set -e; for d in etc/edge var/lib/edge opt/edge; do '
                  'mount --bind "$STAGED/$d" "/$d"; done; cd /var/lib/edge; '
                  f'exec setpriv --reuid={pw.pw_uid} --regid={pw.pw_gid} --init-groups "$@"')
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                *argv]

    def env(self) -> dict[str, str]:
        """Return a service-like environment (no HOME, no EDGE_CONFIG, no NOTIFY_SOCKET)."""
        return {"PATH": "/opt/edge/venv/bin:/usr/bin:/bin", "LANG": "C.UTF-8",
                "STAGED": str(self.root)}


def _install(root: Path, user: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT / "systemd" / "install.sh"), "--no-start",
                           "--user", user],
                          env={**os.environ, "DESTDIR": str(root)}, capture_output=True,
                          text=True, timeout=600, check=False)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Staged]:
    """install.sh into a temporary root, owned by a throwaway system user (removed after)."""
    if os.geteuid() != 0:
        pytest.fail("the staged install test needs root (useradd, mount namespaces)")
    user = f"edget{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", user], check=True)
    made = [Path("/") / m for m in MOUNTS if not (Path("/") / m).exists()]
    try:
        for mount_point in made:  # empty mount points, only for the private namespace
            mount_point.mkdir(parents=True)
        root = tmp_path_factory.mktemp("stage") / "root"
        result = _install(root, user)
        assert result.returncode == 0, result.stderr[-3000:]
        yield Staged(root, user, result.stdout)
    finally:
        for mount_point in reversed(made):
            with contextlib.suppress(OSError):
                mount_point.rmdir()
        subprocess.run(["userdel", user], check=False)


@pytest.mark.slow
def test_install_script_stages_a_gateway(staged: Staged) -> None:
    root = staged.root
    key = root / "etc/edge/keys/gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.stat().st_uid == pwd.getpwnam(staged.user).pw_uid
    assert stat.S_IMODE((root / "var/lib/edge").stat().st_mode) == 0o700
    unit = (root / "etc/systemd/system/edge.service").read_text()
    assert f"User={staged.user}\n" in unit
    assert unit.replace(staged.user, "edge") == (ROOT / "systemd/edge.service").read_text()
    assert (root / "etc/edge/devices.yaml").read_text() == \
        (ROOT / "systemd/devices.site.yaml").read_text()
    assert (root / "usr/local/bin/edge").readlink() == Path("/opt/edge/venv/bin/edge")
    assert "register with the platform" in staged.stdout
    # a staged install names the files it made where they are (issue 21 f10)
    assert f"installed {root}/etc/edge/devices.yaml" in staged.stdout
    # install.sh ran `edge --version` as the service user itself (issue 21 f2)
    assert f"edge runs as {staged.user}: edge " in staged.stdout
    version = staged.run("/opt/edge/venv/bin/edge", "--version")
    assert version.stdout.startswith("edge "), version.stderr
    # a second run keeps the provisioned key and config
    before = key.read_bytes()
    again = _install(root, staged.user)
    assert again.returncode == 0, again.stderr[-3000:]
    assert key.read_bytes() == before


def test_install_refuses_an_interpreter_the_service_user_cannot_run(tmp_path: Path) -> None:
    # issue 21 f2: as root with pyenv on PATH, the venv's python pointed into /root/.pyenv and
    # the service user got "Permission denied"; the tests themselves run under that python
    if os.geteuid() != 0:
        pytest.fail("needs root (useradd)")
    real = Path(os.path.realpath(sys.executable))
    user = f"edgep{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--user-group", user], check=True)
    try:
        probe = subprocess.run(["runuser", "-u", user, "--", str(real), "-c", "pass"],
                               capture_output=True, check=False)
        if probe.returncode == 0:
            pytest.skip(f"{real} is runnable by any user here; nothing to refuse")
        root = tmp_path / "root"
        result = subprocess.run(
            ["bash", str(ROOT / "systemd" / "install.sh"), "--no-start", "--user", user,
             "--python", sys.executable], env={**os.environ, "DESTDIR": str(root)},
            capture_output=True, text=True, timeout=120, check=False)
        assert result.returncode == 1, result.stdout + result.stderr
        assert f"refusing {sys.executable} ({real}): the service user {user} cannot " in \
            result.stderr, result.stderr
        assert "--python /usr/bin/python3" in result.stderr
        assert not (root / "opt/edge/venv").exists()  # refused before anything was made
    finally:
        subprocess.run(["userdel", user], check=False)


def test_check_fails_the_site_templates_placeholders_until_they_are_edited() -> None:
    """The template parses, so only this check says the EDIT values are still there."""
    from edge.preflight import FAIL, OK, check_placeholders

    loaded = load_config(ROOT / "systemd" / "devices.site.yaml")
    left = check_placeholders(loaded)
    assert left.status == FAIL
    for what in ("gateway.id gw-000000-0001", "gateway.county_code 000000",
                 "uplink.host mqtt.platform.invalid", "asset name (EDIT)"):
        assert what in left.detail, left.detail
    demo = check_placeholders(load_config(ROOT / "devices.yaml"))
    assert demo.status == OK, demo.detail


def test_site_template_names_the_paths_install_sh_creates() -> None:
    loaded = load_config(ROOT / "systemd" / "devices.site.yaml")
    gateway, tls = loaded.config.gateway, loaded.config.uplink.tls
    assert gateway.key_file == "/etc/edge/keys/gateway.key"
    assert gateway.state_dir == "/var/lib/edge"  # the unit's StateDirectory, writable
    assert tls is not False
    assert [tls.ca_file, tls.cert_file, tls.key_file] == [
        "/etc/edge/pki/ca.pem", "/etc/edge/pki/gateway.pem", "/etc/edge/pki/gateway-key.pem"]
    assert {b.type for b in loaded.config.buses} == {"modbus_rtu", "modbus_tcp"}


def _commission(staged: Staged, broker: Mosquitto, pki: Pki, modbus_port: int) -> None:
    """Edit /etc/edge/devices.yaml and drop the certificates in, as the README tells."""
    etc = staged.root / "etc/edge"
    yaml = YAML()
    doc = yaml.load((etc / "devices.yaml").read_text(encoding="utf-8"))
    doc["gateway"].update({"id": GW, "county_code": "320508", "time_source": "system"})
    doc["uplink"].update({"host": "127.0.0.1", "port": broker.port, "boot_delay_max_s": 0})
    doc["buses"] = [{"name": "cabinet", "type": "modbus_tcp", "host": "127.0.0.1",
                     "port": modbus_port, "timeout_s": 0.5}]
    for device, unit_id in zip(doc["devices"], (80, 1), strict=True):
        device.update({"transport": "modbus_tcp", "bus": "cabinet", "unit_id": unit_id,
                       "poll_interval_s": 0.5})
        asset = device["asset"]
        asset["code"] = "320508" + asset["code"][6:]
        asset["grid"] = "320508" + asset["grid"][6:]
        asset["name"] = asset["name"].replace(" (EDIT)", "")
    with (etc / "devices.yaml").open("w", encoding="utf-8") as fh:
        yaml.dump(doc, fh)
    pw = pwd.getpwnam(staged.user)
    for name, target in (("ca", "ca.pem"), ("gateway", "gateway.pem")):
        shutil.copyfile(pki.cert(name), etc / "pki" / target)
    shutil.copyfile(pki.key("gateway"), etc / "pki/gateway-key.pem")
    os.chown(etc / "pki/gateway-key.pem", pw.pw_uid, pw.pw_gid)
    (etc / "pki/gateway-key.pem").chmod(0o600)
    for target in ("ca.pem", "gateway.pem"):
        os.chown(etc / "pki" / target, 0, pw.pw_gid)
        (etc / "pki" / target).chmod(0o640)


def _receiver_tls(pki: Pki) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.cert("ca")))
    ctx.load_cert_chain(str(pki.cert("receiver")), str(pki.key("receiver")))
    return ctx


@pytest.mark.slow
async def test_staged_install_checks_and_delivers_as_the_service_user(
        staged: Staged, broker: Mosquitto, pki: Pki, tmp_path: Path) -> None:
    modbus_port = free_port()
    sim = ModbusTcpSim({80: tilt_unit(), 1: lamp_unit()}, modbus_port)
    await sim.start()
    try:
        _commission(staged, broker, pki, modbus_port)
        # no --config: the installed /etc/edge/devices.yaml is found (cwd is /var/lib/edge)
        check = await asyncio.to_thread(staged.run, "edge", "check")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "/var/lib/edge writable" in check.stdout
        assert "/etc/edge/keys/gateway.key" in check.stdout
        assert "/etc/edge/var" not in check.stdout
        for device in ("manhole-01", "lamp-01"):  # each unit read as the service user
            assert f"✔ device {device}: unit " in check.stdout, check.stdout
        shown = await asyncio.to_thread(staged.run, "edge", "keys", "show", "--json")
        assert shown.returncode == 0, shown.stderr
        facts = json.loads(shown.stdout)
        # the key the platform registers is the one install.sh printed: no second key
        assert facts["kid"] in staged.stdout
        again = await asyncio.to_thread(staged.run, "edge", "keys", "init")
        assert again.returncode == 1, again.stdout  # refuses to replace a provisioned key
        store = ReceiverStore(tmp_path / "receiver.db")
        receiver = Receiver(store, load_gateway_keys({GW: facts["public_key_hex"]}))
        ready = asyncio.Event()
        rx = asyncio.create_task(run_mqtt(receiver, host="127.0.0.1", port=broker.port,
                                          tls=_receiver_tls(pki), ready=ready), name="receiver")
        agent = subprocess.Popen(staged.command("edge", "run"), env=staged.env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            await asyncio.wait_for(ready.wait(), 10)
            await wait_until(lambda: store.seq_count(GW)[0] >= 6, 30,
                             "readings from the staged agent at the receiver")
            assert store.counters().get("rejected.signature", 0) == 0
            await wait_until(lambda: {e["asset"]["code"] for e in store.events(500)} >= {
                "3205080106000001", "3205080118000001"}, 20, "events from both devices")
        finally:
            if agent.poll() is None:
                agent.terminate()
            out, _ = await asyncio.to_thread(agent.communicate, timeout=30)
            rx.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await rx
            store.close()
        assert agent.returncode == 0, out.decode(errors="replace")[-3000:]
        outbox = staged.root / "var/lib/edge/outbox.db"
        assert outbox.stat().st_uid == pwd.getpwnam(staged.user).pw_uid
        assert not (staged.root / "etc/edge/var").exists()
    finally:
        await sim.stop()


@pytest.mark.parametrize("name", ["edge/x", "Edge", "1edge", "e;touch /tmp/pwned", "e" * 33,
                                  "-edge", "edge\nx"])
def test_install_refuses_a_user_name_that_is_not_one(tmp_path: Path, name: str) -> None:
    """Review finding 20: NAME went into sed (and useradd) unchecked."""
    root = tmp_path / "root"
    result = subprocess.run(["bash", str(ROOT / "systemd" / "install.sh"), "--no-start",
                             "--user", name], env={**os.environ, "DESTDIR": str(root)},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not a valid user name" in result.stderr
    assert not root.exists()  # refused before anything was made


def test_install_checks_the_service_user_runs_edge_before_starting_it() -> None:
    """Review finding 20: the service was enabled and started before `edge --version` ran."""
    script = (ROOT / "systemd" / "install.sh").read_text()
    assert script.index("edge --version") < script.index("systemctl enable --now edge.service")


@pytest.mark.slow
def test_install_writes_the_service_users_real_primary_group(tmp_path: Path) -> None:
    """Review finding 20: Group=NAME was written, not the group install.sh chowned with."""
    if os.geteuid() != 0:
        pytest.fail("needs root (useradd)")
    suffix = uuid.uuid4().hex[:6]
    user, group = f"edgeg{suffix}", f"cabinet{suffix}"
    subprocess.run(["groupadd", "--system", group], check=True)
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    "--gid", group, user], check=True)
    try:
        root = tmp_path / "root"
        result = _install(root, user)
        assert result.returncode == 0, result.stderr[-3000:]
        unit = (root / "etc/systemd/system/edge.service").read_text()
        assert f"User={user}\n" in unit
        assert f"Group={group}\n" in unit
        assert (root / "var/lib/edge").stat().st_gid == grp.getgrnam(group).gr_gid
    finally:
        subprocess.run(["userdel", user], check=False)
        subprocess.run(["groupdel", group], check=False)
