"""TLS is verified always (reliability.md R14): each misconfiguration is refused with a clear
error, and no connection ever carries anything but a TLS handshake (no plaintext retry)."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import threading
import warnings
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from edge.config import TlsConfig
from edge.config_loader import validate
from edge.errors import LinkError, LinkTLSError
from edge.transports.mqtt import MqttLink
from edge.transports.tls import client_context
from hil.broker import Mosquitto, free_port
from hil.pki import Pki, _write_key, ensure_pki, issue, make_ca, write_cert
from hil.proxy import FaultProxy
from tests.figures import figure

pytestmark = pytest.mark.reliability

TLS_HANDSHAKE = 0x16


def broker_pki(folder: Path, good: Pki, **issue_args: Any) -> tuple[Pki, x509.Certificate]:
    """A PKI whose broker certificate is issued with ``issue_args`` by a fresh CA that also
    signs nothing else; the client CA file is copied from ``good``."""
    folder.mkdir(parents=True)
    ca_key, ca_cert = make_ca("broker CA")
    key, cert = issue(ca_key, ca_cert, "localhost", server=True, **issue_args)
    _write_key(folder / "broker-key.pem", key)
    write_cert(folder / "broker.pem", cert)
    shutil.copy(good.cert("ca"), folder / "ca.pem")  # clients' certificates verify
    return Pki(folder), ca_cert


async def connect(port: int, tls: ssl.SSLContext) -> None:
    link = MqttLink(host="127.0.0.1", port=port, client_id="tls-test", protocol="5",
                    keepalive_s=5, connect_timeout_s=3, tls=tls)
    try:
        await link.connect()
    finally:
        await link.close()


def gateway_tls(pki: Pki, ca_file: Path | None = None, *, client_cert: bool = True) -> ssl.SSLContext:
    return client_context(TlsConfig(ca_file=str(ca_file or pki.cert("ca")),
                                    cert_file=str(pki.cert("gateway")) if client_cert else None,
                                    key_file=str(pki.key("gateway")) if client_cert else None))


async def refused_through_proxy(broker_port: int, tls: ssl.SSLContext) -> tuple[LinkError, list[int]]:
    proxy = FaultProxy(broker_port)
    await proxy.start()
    try:
        with pytest.raises(LinkError) as info:
            await connect(proxy.port, tls)
        with pytest.raises(LinkError):
            await connect(proxy.port, tls)  # and again: still TLS, never a plaintext retry
    finally:
        await proxy.stop()
    first = sorted({f"{b:#04x}" for b in proxy.first_bytes})
    figure("R14", f"{info.value.code}: refused ({str(info.value)[:70]}); first byte of every "
                  f"attempt {first} (a TLS handshake, never plaintext)")
    return info.value, proxy.first_bytes


async def test_good_tls_connects(broker: Mosquitto, pki: Pki) -> None:
    await connect(broker.port, gateway_tls(pki))


async def test_wrong_ca_is_refused(broker: Mosquitto, pki: Pki, tmp_path: Path) -> None:
    other = ensure_pki(tmp_path / "other")
    err, first = await refused_through_proxy(broker.port, gateway_tls(pki, other.cert("ca")))
    assert isinstance(err, LinkTLSError)
    assert "certificate refused" in str(err)
    assert first and set(first) == {TLS_HANDSHAKE}


@pytest.mark.parametrize(("case", "message"), [("expired", "expired"),
                                               ("mismatch", "mismatch")])
async def test_bad_broker_certificate_is_refused(pki: Pki, tmp_path: Path, case: str,
                                                 message: str) -> None:
    now = dt.datetime.now(dt.UTC)
    variants: dict[str, dict[str, Any]] = {
        "expired": {"not_before": now - dt.timedelta(days=30),
                    "not_after": now - dt.timedelta(days=1)},
        "mismatch": {"hosts": ("mqtt.other.example",)},
    }
    issue_args = variants[case]
    bad, ca_cert = broker_pki(tmp_path / case, pki, **issue_args)
    write_cert(tmp_path / "trust.pem", ca_cert)
    mq = Mosquitto(tmp_path / "mq", free_port(), bad)
    mq.start()
    try:
        err, first = await refused_through_proxy(mq.port, gateway_tls(pki, tmp_path / "trust.pem"))
    finally:
        mq.stop()
    assert isinstance(err, LinkTLSError)
    assert message in str(err)
    assert set(first) == {TLS_HANDSHAKE}


async def test_missing_client_certificate_is_refused(broker: Mosquitto, pki: Pki) -> None:
    err, first = await refused_through_proxy(broker.port, gateway_tls(pki, client_cert=False))
    assert isinstance(err, LinkTLSError)
    assert "client certificate" in str(err)
    assert set(first) == {TLS_HANDSHAKE}


async def test_tls_1_1_only_server_is_refused(pki: Pki, tmp_path: Path) -> None:
    """A server that offers TLS 1.0/1.1 only: the client's TLS 1.2 floor refuses it."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        with warnings.catch_warnings():  # deprecated on purpose: this is the bad server
            warnings.simplefilter("ignore", DeprecationWarning)
            server_ctx.minimum_version = ssl.TLSVersion.TLSv1
            server_ctx.maximum_version = ssl.TLSVersion.TLSv1_1
        server_ctx.set_ciphers("ALL:@SECLEVEL=0")
    except (ValueError, ssl.SSLError) as exc:
        pytest.fail(f"cannot build a TLS 1.1 server here: {exc}")
    server_ctx.load_cert_chain(pki.cert("broker"), pki.key("broker"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        listener.settimeout(10)
        for _ in range(2):
            try:
                conn, _addr = listener.accept()
            except OSError:
                return
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls_conn:
                    seen.append(tls_conn.version() or "?")
            except (ssl.SSLError, OSError) as exc:
                seen.append(f"refused: {exc.__class__.__name__}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        for _ in range(2):
            with pytest.raises(LinkTLSError) as info:
                await connect(port, gateway_tls(pki))
            assert "TLS failed" in str(info.value)
    finally:
        listener.close()
        thread.join(5)
    assert all(s.startswith("refused") for s in seen), seen



@pytest.mark.parametrize(("base_url", "host", "bad"), [
    ("http://203.0.113.7:8080", "127.0.0.1", True),  # uplink.host is loopback, the URL is not
    ("http://platform.example:8080", "localhost", True),
    ("http://127.0.0.1:8080", "203.0.113.7", False),  # the host actually connected to counts
    ("http://[::1]:8080", "127.0.0.1", False),
    ("http://localhost:8080", "127.0.0.1", False),
])
def test_tls_false_checks_the_https_base_url_host(base_url: str, host: str, bad: bool) -> None:
    from edge.config import EdgeConfig
    from edge.config_loader import cross_check

    cfg = validate(EdgeConfig, {
        "gateway": {"id": "gw", "county_code": "320508", "key_file": "k", "state_dir": "s"},
        "uplink": {"kind": "https", "host": host, "port": 1, "base_url": base_url,
                   "tls": False}})
    problems = [msg for loc, msg in cross_check(cfg) if "loopback" in msg]
    assert bool(problems) == bad, problems


@pytest.mark.parametrize("base_url", [
    "http://127.0.0.1@203.0.113.7/",  # userinfo does not fool the loopback rule: refused
    "https://user:secret@platform.example/",  # credentials would reach logs and status
    "https://platform.example/?token=secret",
    "ftp://platform.example/", "https:///no-host"])
def test_a_base_url_with_credentials_or_no_host_is_refused(base_url: str) -> None:
    from pydantic import ValidationError

    from edge.config import EdgeConfig

    with pytest.raises(ValidationError, match="base_url"):
        validate(EdgeConfig, {
            "gateway": {"id": "gw", "county_code": "320508", "key_file": "k", "state_dir": "s"},
            "uplink": {"kind": "https", "host": "127.0.0.1", "port": 1, "base_url": base_url,
                       "tls": False}})
