"""Southbound MQTT for devices: one link per device to the local broker, JSON in and out.

Uses the same paho adapter as the uplink (edge/transports/mqtt.py); devices never see paho.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge.config import SouthboundMqttConfig
from edge.drivers._codecs import json_doc
from edge.errors import DeviceProtocolError, DeviceUnavailableError, LinkError
from edge.security.secrets import read_secret
from edge.transports.mqtt import Inbound, MqttLink
from edge.transports.tls import client_context


class DeviceBroker:
    """Connects a device's link to the southbound broker (injected into drivers)."""

    def __init__(self, config: SouthboundMqttConfig, *, base_dir: Path, gateway_id: str) -> None:
        self.config = config
        self.base_dir = base_dir
        self.gateway_id = gateway_id

    async def connect(self, device: str, subscriptions: list[str], *,
                      client_id: str | None = None) -> MqttLink:
        """Return a connected link subscribed to ``subscriptions``; DeviceUnavailableError.

        ``client_id`` defaults to ``<gateway>-<device>``, the device's own session.
        """
        cfg = self.config
        password = None
        if cfg.password_file is not None:
            password = read_secret(self.base_dir / cfg.password_file, "southbound password")
        tls = None if cfg.tls is False else client_context(cfg.tls, self.base_dir)
        link = MqttLink(host=cfg.host, port=cfg.port,
                        client_id=client_id or f"{self.gateway_id}-{device}",
                        protocol="5", keepalive_s=cfg.keepalive_s, connect_timeout_s=10,
                        tls=tls, username=cfg.username, password=password, inbound_max=1000)
        try:
            await link.connect()
            refused = [topic for topic in subscriptions if not await link.subscribe(topic)]
        except LinkError as exc:
            await link.close()
            raise DeviceUnavailableError(device, f"southbound broker: {exc}") from exc
        except BaseException:  # cancelled mid-connect: the link must not live on (D84 review)
            await link.close()  # closes its socket even if cancelled again
            raise
        if refused:
            # without its subscription the device would only look silent (comm_lost, with no
            # reason): say why, and let the supervisor retry (an ACL may be fixed meanwhile)
            await link.close()
            raise DeviceUnavailableError(
                device, f"southbound broker refused the subscription to {', '.join(refused)} "
                        f"(check the broker's ACL for user {cfg.username or '(none)'})")
        return link


async def next_report(link: MqttLink, device: str, silence_s: float) -> Inbound | None:
    """Return the device's next message, or None after ``silence_s`` without one.

    A lost broker link raises DeviceUnavailableError at once (the supervisor reconnects).
    """
    try:
        return await link.next_inbound(silence_s)
    except TimeoutError:
        return None
    except LinkError as exc:
        raise DeviceUnavailableError(device, f"southbound broker: {exc}") from exc


def pick(doc: Mapping[str, Any], path: str) -> Any:
    """Return the value at a dotted ``path`` of a JSON document (None when absent)."""
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def parse_json(device: str, item: Inbound) -> dict[str, Any]:
    """Decode a device's JSON message; DeviceProtocolError when it is not a JSON object.

    Also refused: more than 64 KiB, nesting deeper than the parser's guard, non-UTF-8
    (json_doc.loads). NaN/±Infinity/1e400 come back as ``json_doc.NON_FINITE`` for the
    driver to refuse value by value.
    """
    try:
        return json_doc.loads(item.payload)
    except ValueError as exc:
        raise DeviceProtocolError(device, f"bad JSON on {item.topic}: {exc}") from exc
