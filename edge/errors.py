"""The one error hierarchy of the agent.

Every error carries a stable ``code`` (for metrics, logs and audit) and a ``retryable``
flag (the retry policy lives in the type, never in string matching)::

    EdgeError                       code                retryable
    ├── ConfigError                 config.invalid      no    devices.yaml is wrong
    ├── DeviceError                 device              no    always carries .device
    │   ├── DeviceUnavailableError  device.unavailable  yes   timeout, no answer, port gone
    │   ├── DeviceProtocolError     device.protocol     yes   bad CRC, short or undecodable frame
    │   └── DeviceRejectedError     device.rejected     no    Modbus exception code
    ├── StoreError                  store               no
    │   ├── StoreFullError          store.full          yes
    │   ├── StoreCorruptError       store.corrupt       no    failed check, unknown schema version
    │   └── EventRejectedError      store.rejected      no    the event cannot be encoded (NaN)
    ├── LinkError                   link                no    an MQTT session (edge.transports)
    │   ├── LinkUnavailableError    link.unavailable    yes   not connected, lost, timed out
    │   ├── LinkTLSError            link.tls            yes   refused certificate; never plaintext
    │   └── LinkRefusedError        link.refused        no    an MQTT reason code >= 0x80
    ├── UplinkError                 uplink              no
    │   ├── UplinkUnavailableError  uplink.unavailable  yes   network down, HTTP 5xx
    │   ├── UplinkTLSError          uplink.tls          yes   refused certificate; never plaintext
    │   └── UplinkRejectedError     uplink.rejected     no    PUBACK failure code, HTTP 4xx
    ├── CommandRejectedError        command.rejected    no    a downlink command failed a check
    ├── KeyFileError                keys.invalid        no    gateway key unusable or too open
    ├── PlatformKeysError       keys.platform_invalid   no    platform keys file refused: none used
    └── SecretError                 secret.invalid      no    secret file missing, open, placeholder

Third-party exceptions become these at the adapter that imports the library.
"""

from __future__ import annotations

from typing import ClassVar


class EdgeError(Exception):
    """Base of every error the agent raises on purpose."""

    code: ClassVar[str] = "edge"
    retryable: ClassVar[bool] = False


class ConfigError(EdgeError):
    """devices.yaml is invalid; ``problems`` holds one ``file:line: field: message`` each."""

    code = "config.invalid"

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class DeviceError(EdgeError):
    """A device failed; ``device`` names it as in devices.yaml."""

    code = "device"

    def __init__(self, device: str, message: str) -> None:
        super().__init__(f"{device}: {message}")
        self.device = device
        self.detail = message


class DeviceUnavailableError(DeviceError):
    """No answer in time, port gone, connection refused: the next poll may work."""

    code = "device.unavailable"
    retryable = True


class DeviceProtocolError(DeviceError):
    """Bad CRC, short or undecodable frame: noise on the line, the next poll may work."""

    code = "device.protocol"
    retryable = True


class DeviceRejectedError(DeviceError):
    """The device answered with a Modbus exception: the same request will fail again."""

    code = "device.rejected"

    def __init__(self, device: str, *, unit_id: int, address: int, exception_code: int,
                 name: str = "") -> None:
        # the adapter names the code (ILLEGAL DATA ADDRESS...): a technician reads names
        super().__init__(device, f"unit {unit_id} refused 0x{address:04x}: {name} (exception "
                                 f"{exception_code})" if name else
                         f"unit {unit_id} refused 0x{address:04x} (code {exception_code})")
        self.unit_id = unit_id
        self.address = address
        self.exception_code = exception_code


class StoreError(EdgeError):
    """The outbox failed."""

    code = "store"


class StoreFullError(StoreError):
    """The quota or the disk is full; the event was refused (alarms never are while space lasts)."""

    code = "store.full"
    retryable = True


class StoreCorruptError(StoreError):
    """The store failed its check or has an unknown schema version."""

    code = "store.corrupt"


class EventRejectedError(StoreError):
    """The event cannot be encoded (NaN, infinity, a non-JSON value): it alone is refused."""

    code = "store.rejected"


class LinkError(EdgeError):
    """A network link failed: an MQTT session or its TLS (edge.transports, any user of it).

    The uplink turns these into its own ``UplinkError`` (``as_uplink_error``); a southbound
    driver into a ``DeviceError``; each part counts them under its own codes.
    """

    code = "link"


class LinkUnavailableError(LinkError):
    """No connection, lost, timed out, or the peer is busy: back off and retry."""

    code = "link.unavailable"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class LinkTLSError(LinkError):
    """TLS failed: an unusable certificate file or a refused handshake. Never retried plain."""

    code = "link.tls"
    retryable = True


class LinkRefusedError(LinkError):
    """The peer refused the connection or a request (an MQTT reason code >= 0x80)."""

    code = "link.refused"

    def __init__(self, message: str, *, reason_code: int) -> None:
        super().__init__(message)
        self.reason_code = reason_code


class UplinkError(EdgeError):
    """The uplink failed."""

    code = "uplink"


class UplinkUnavailableError(UplinkError):
    """Network down, broker gone, HTTP 5xx or 429: back off and retry."""

    code = "uplink.unavailable"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UplinkTLSError(UplinkError):
    """The TLS handshake failed verification. Retried with backoff, never without TLS."""

    code = "uplink.tls"
    retryable = True


class UplinkRejectedError(UplinkError):
    """The platform refused a batch (PUBACK failure code or HTTP 4xx)."""

    code = "uplink.rejected"

    def __init__(self, message: str, *, reason_code: int) -> None:
        super().__init__(message)
        self.reason_code = reason_code


def as_uplink_error(exc: LinkError) -> UplinkError:
    """Return the uplink's error for a failure of its link (the codes its counters use)."""
    if isinstance(exc, LinkTLSError):
        return UplinkTLSError(str(exc))
    if isinstance(exc, LinkRefusedError):
        return UplinkRejectedError(str(exc), reason_code=exc.reason_code)
    retry_after_s = exc.retry_after_s if isinstance(exc, LinkUnavailableError) else None
    return UplinkUnavailableError(str(exc), retry_after_s=retry_after_s)


class CommandRejectedError(EdgeError):
    """A downlink command failed one of its checks; ``reason`` is a stable short string."""

    code = "command.rejected"

    def __init__(self, reason: str, detail: str = "", *, cmd_id: str | None = None,
                 action: str | None = None, device: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        self.cmd_id, self.action, self.device = cmd_id, action, device


class KeyFileError(EdgeError):
    """A key file is missing, unreadable, too open, or not an Ed25519 key."""

    code = "keys.invalid"


class PlatformKeysError(EdgeError):
    """The platform keys are unsafe or invalid: none of them is used.

    Not retryable: the file must be fixed; ``edge reload`` or a restart reads it again.
    """

    code = "keys.platform_invalid"


class SecretError(EdgeError):
    """A secret file is missing, too open, or holds a placeholder."""

    code = "secret.invalid"
