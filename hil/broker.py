"""Start a private mosquitto (TLS + client certificates, or plain for fault proxies)."""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from hil.pki import Pki


class BrokerMissingError(RuntimeError):
    """mosquitto is not installed."""


def find_mosquitto() -> str:
    """Return the mosquitto binary; raise BrokerMissingError with the install command."""
    exe = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/bin")
    if exe is None:
        raise BrokerMissingError("mosquitto is not installed: apt-get install mosquitto")
    return exe


def free_port() -> int:
    """Return a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, timeout_s: float = 5.0, host: str = "127.0.0.1") -> None:
    """Poll connect() until something listens; raise TimeoutError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.02)


def gateway_acl(prefix: str, platform_users: tuple[str, ...] = ("receiver",)) -> str:
    """Return the acl_file of docs/scale.md: each gateway its own topics, the platform all.

    With ``use_identity_as_username`` the certificate's CN is ``%u``: a gateway (CN = its id)
    may write only its own events and state and read only its own commands; the platform's
    certificates read every gateway's events and state and write commands.
    """
    lines = ["# every gateway: its own topics only (CN = gateway id)",
             f"pattern write {prefix}/%u/events", f"pattern write {prefix}/%u/state",
             f"pattern read {prefix}/%u/cmd"]
    for user in platform_users:
        lines += [f"user {user}", f"topic read {prefix}/+/events",
                  f"topic read {prefix}/+/state", f"topic write {prefix}/+/cmd"]
    return "\n".join(lines) + "\n"


@dataclass
class Mosquitto:
    """A mosquitto process with its own config in ``workdir``."""

    workdir: Path
    port: int
    pki: Pki | None = None
    acl: str | None = None  # acl_file contents
    require_certificate: bool = True
    tls_version: str = "tlsv1.2"
    persistence: bool = False  # keep subscriber sessions across a restart (SIGTERM saves)
    max_inflight: int = 100  # what the broker advertises as Receive Maximum (MQTT 5)
    extra: tuple[str, ...] = ()  # more mosquitto.conf lines (a bridge section: docs/scale.md)
    proc: subprocess.Popen[bytes] | None = None

    def conf_text(self) -> str:
        """Return the mosquitto.conf for this broker."""
        # run as whoever started it: as root, mosquitto would switch to its own user and
        # could not read our 0600 keys
        lines = [f"user {pwd.getpwuid(os.geteuid()).pw_name}",
                 f"listener {self.port} 127.0.0.1",
                 f"persistence {'true' if self.persistence else 'false'}",
                 f"persistence_location {self.workdir}/",
                 f"max_inflight_messages {self.max_inflight}", "max_queued_messages 100000"]
        if self.pki is not None:
            lines += [f"cafile {self.pki.cert('ca')}", f"certfile {self.pki.cert('broker')}",
                      f"keyfile {self.pki.key('broker')}", f"tls_version {self.tls_version}"]
            if self.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username true"]
            else:
                lines += ["allow_anonymous true"]
        else:
            lines += ["allow_anonymous true"]
        if self.acl is not None:
            acl_path = self.workdir / "acl"
            acl_path.write_text(self.acl)
            lines.append(f"acl_file {acl_path}")
        if self.pki is not None and self.require_certificate:
            lines.append("allow_anonymous false")
        lines += self.extra  # last: a bridge "connection" section takes the lines after it
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        """Start the broker and wait until it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.conf_text())
        log = (self.workdir / "mosquitto.log").open("ab")
        # A file, not a PIPE: a pipe nobody reads fills up and stalls the broker.
        self.proc = subprocess.Popen([find_mosquitto(), "-c", str(conf)], stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ})
        log.close()
        try:
            wait_listening(self.port, 5.0)
        except TimeoutError:
            self.stop()
            text = (self.workdir / "mosquitto.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"mosquitto did not start on port {self.port}:\n{text}") from None

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL)."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None
