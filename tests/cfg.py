"""Build small devices.yaml files for tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from edge.config_file import LoadedConfig
from edge.config_loader import load_config
from edge.security.keys import init_key
from hil.pki import Pki

TILT_ASSET = {"code": "3205080106000123", "class": "0106", "grid": "320508001002003",
              "name": "路灯井盖 测试", "lat": 31.3105, "lon": 120.6302}
LAMP_ASSET = {"code": "3205080118000007", "class": "0118", "grid": "320508001002003",
              "name": "路灯 测试", "lat": 31.3107, "lon": 120.6311}


def tilt_device(name: str, bus: str, unit_id: int, **extra: Any) -> dict[str, Any]:
    """A WitMotion tilt sensor on a Modbus TCP bus."""
    return {"name": name, "kind": "manhole_tilt", "transport": "modbus_tcp", "bus": bus,
            "unit_id": unit_id, "model": "witmotion", "poll_interval_s": 0.1,
            "asset": {**TILT_ASSET, "code": f"32050801060{unit_id:05d}"},
            "alarms": {"cover_open": {"threshold": 15.0, "clear_below": 10.0,
                                      "raise_after": 2, "clear_after": 2}}, **extra}


def lamp_device(name: str, bus: str, unit_id: int, **extra: Any) -> dict[str, Any]:
    """A lamp controller on a Modbus TCP bus."""
    return {"name": name, "kind": "streetlight", "transport": "modbus_tcp", "bus": bus,
            "unit_id": unit_id, "model": "lamp_controller", "poll_interval_s": 0.5,
            "asset": LAMP_ASSET, **extra}


def write_config(folder: Path, *, broker_port: int, pki: Pki | None,
                 devices: list[dict[str, Any]], buses: list[dict[str, Any]],
                 uplink: dict[str, Any] | None = None,
                 outbox: dict[str, Any] | None = None,
                 gateway: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None) -> LoadedConfig:
    """Write devices.yaml (+ gateway key) into ``folder`` and load it."""
    folder.mkdir(parents=True, exist_ok=True)
    tls: Any = False
    if pki is not None:
        tls = {"ca_file": str(pki.cert("ca")), "cert_file": str(pki.cert("gateway")),
               "key_file": str(pki.key("gateway"))}
    doc = {
        "gateway": {"id": "gw-320508-0007", "county_code": "320508", "time_source": "system",
                    "key_file": "keys/gateway.key", "state_dir": "state", **(gateway or {})},
        "uplink": {"host": "127.0.0.1", "port": broker_port, "tls": tls, "keepalive_s": 5,
                   "boot_delay_max_s": 0, "reconnect_base_s": 0.2, "reconnect_cap_s": 1.0,
                   "connect_timeout_s": 3, **(uplink or {})},
        "outbox": {"commit_max_wait_s": 0.01, **(outbox or {})},
        "buses": buses,
        "devices": devices,
        **(extra or {}),
    }
    path = folder / "devices.yaml"
    with path.open("w", encoding="utf-8") as fh:
        YAML().dump(doc, fh)
    key = folder / "keys" / "gateway.key"
    if not key.exists():
        init_key(key)
    return load_config(path)
