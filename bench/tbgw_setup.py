"""thingsboard-gateway 3.8.x for side-by-side benchmarks: its own venv, its config files.

Installed once into var/bench/tbgw-venv (outside our venv: the bench never installs into the
agent's environment). It pins pymodbus 3.9.2 and pip-installs it at start when another version
is present, so that version is installed here, before the run: inside the benchmark's network
namespace it could not download anything (which is the point: it calls an update server).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hil.pki import Pki

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "var" / "bench" / "tbgw-venv"
PACKAGES = ("thingsboard-gateway==3.8.2", "pymodbus==3.9.2", "pyserial", "pyserial-asyncio")


def tbgw_python() -> Path:
    """Return the tbgw venv's interpreter, creating the venv on first use."""
    python = VENV / "bin" / "python"
    stamp = VENV / ".installed"
    if stamp.exists() and stamp.read_text() == " ".join(PACKAGES):
        return python
    print(f"installing {', '.join(PACKAGES)} into {VENV} (once; bench only)", flush=True)
    base = shutil.which("python3.11") or sys.executable
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", *PACKAGES], check=True)
    stamp.write_text(" ".join(PACKAGES))
    return python


def write_config(folder: Path, *, broker_port: int, sim_port: int, units: range,
                 poll_ms: int, pki: Pki) -> Path:
    """Write tbgw's config dir: MQTT to our broker, one Modbus slave entry per device.

    Configured at its best for this job, as its docs allow: one wide-range read of the ten
    registers per device (``"address": "0-9"``), report on every poll, no statistics, no remote
    configuration or shell, logging at ERROR, memory storage.
    """
    folder.mkdir(parents=True, exist_ok=True)
    defaults = VENV.glob("lib/python*/site-packages/thingsboard_gateway/config/logs.json")
    logs: dict[str, Any] = json.loads(next(iter(defaults)).read_text())
    for handler in logs["handlers"].values():
        handler["level"] = "ERROR"
        if "filename" in handler:
            handler["filename"] = str(folder / "logs" / Path(handler["filename"]).name)
    for logger in logs.get("loggers", {}).values():
        logger["level"] = "ERROR"
    (folder / "logs").mkdir(exist_ok=True)
    (folder / "logs.json").write_text(json.dumps(logs))
    gateway = {
        "thingsboard": {
            "host": "127.0.0.1", "port": broker_port, "remoteShell": False,
            "remoteConfiguration": False, "latencyDebugMode": False,
            "statistics": {"enable": False, "statsSendPeriodInSeconds": 3600,
                           "customStatsSendPeriodInSeconds": 3600},
            "deviceFiltering": {"enable": False},
            "maxPayloadSizeBytes": 8196, "minPackSendDelayMS": 50, "minPackSizeToSend": 500,
            "checkConnectorsConfigurationInSeconds": 3600, "handleDeviceRenaming": False,
            # TLS with a client certificate, as our agent: tbgw 3.8.2 always starts TLS
            # (and falls back to plaintext on a TLS EOF), so a plain broker cannot serve it
            "security": {"type": "usernamePassword", "username": "tbgw", "password": "tbgw",
                         "clientId": "tbgw-bench", "tls": True,
                         "caCert": str(pki.cert("ca")), "cert": str(pki.cert("tbgw")),
                         "privateKey": str(pki.key("tbgw"))},
            "qos": 1, "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        "storage": {"type": "memory", "read_records_count": 100,
                    "max_records_count": 1_000_000},
        "grpc": {"enabled": False},
        "connectors": [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}],
    }
    (folder / "tb_gateway.json").write_text(json.dumps(gateway))
    slaves = [{
        "host": "127.0.0.1", "port": sim_port, "type": "tcp", "method": "socket",
        "timeout": 1, "byteOrder": "BIG", "wordOrder": "LITTLE", "retries": False,
        "pollPeriod": poll_ms, "unitId": unit, "deviceName": f"tb-{unit:03d}",
        "sendDataOnlyOnChange": False, "reportStrategy": {"type": "ON_RECEIVED"},
        "connectAttemptTimeMs": 500, "connectAttemptCount": 5, "waitAfterFailedAttemptsMs": 1000,
        "attributes": [],
        "timeseries": [{"tag": "r_${address}", "type": "16uint", "functionCode": 4,
                        "objectsCount": 1, "address": "0-9"}],
        "attributeUpdates": [], "rpc": [],
    } for unit in units]
    (folder / "modbus.json").write_text(json.dumps({"master": {"slaves": slaves}}))
    return folder
