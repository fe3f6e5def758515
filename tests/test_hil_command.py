"""``python -m hil command``: the platform stand-in signs what the contract allows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import hil.commander
from hil.__main__ import main
from tests.cfg import tilt_device, write_config


@pytest.mark.parametrize(("device", "action", "sent_to"), [
    ("-", "agent.state", None), ("mh-1", "device.read", "mh-1")])
def test_a_command_to_the_gateway_itself_has_no_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, device: str, action: str,
        sent_to: str | None) -> None:
    """agent.state's ``device`` is null; the CLI's "-" says so (a name is refused for it)."""
    loaded = write_config(tmp_path, broker_port=1, pki=None, buses=[
        {"name": "b", "type": "modbus_tcp", "host": "127.0.0.1", "port": 1}],
        devices=[tilt_device("mh-1", "b", 1)])
    sent: list[dict[str, Any]] = []

    async def keep(envelope: bytes, **_where: object) -> None:  # the broker is not the point
        sent.append(json.loads(json.loads(envelope)["body"]))

    monkeypatch.setattr(hil.commander, "send", keep)
    assert main(["--config", str(loaded.path), "command", device, action]) == 0
    assert [(b["device"], b["action"]) for b in sent] == [(sent_to, action)]
    # a device name for the gateway's own action: the published contract refuses it
    assert main(["--config", str(loaded.path), "command", "mh-1", "agent.state"]) == 2
    assert len(sent) == 1
