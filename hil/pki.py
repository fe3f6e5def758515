"""A private CA and certificates for the demo and the tests (cryptography only).

The demo runs TLS with client certificates even on loopback: the product has no plaintext
path to exercise, so the demo must not need one either.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    """Paths of a CA and the certificates issued by it."""

    folder: Path

    def cert(self, name: str) -> Path:
        """Return the certificate path of ``name`` (``ca``, ``broker``, ``gateway`` ...)."""
        return self.folder / f"{name}.pem"

    def key(self, name: str) -> Path:
        """Return the private key path of ``name``."""
        return self.folder / f"{name}-key.pem"


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, cn: str, *,
          server: bool, not_before: dt.datetime | None = None,
          not_after: dt.datetime | None = None,
          hosts: tuple[str, ...] = ("localhost", "127.0.0.1")
          ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Issue a leaf certificate (server: with SANs for ``hosts``; else a client cert)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(not_before or now - dt.timedelta(minutes=5))
               .not_valid_after(not_after or now + dt.timedelta(days=825))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if server:
        sans: list[x509.GeneralName] = []
        for host in hosts:
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        usage = ExtendedKeyUsageOID.SERVER_AUTH
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH
    builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_ca(cn: str = "edge demo CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """Return a new self-signed CA."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def write_cert(path: Path, cert: x509.Certificate) -> None:
    """Write a certificate as PEM."""
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def common_name(path: Path) -> str:
    """Return the CN of the certificate at ``path``."""
    cert = x509.load_pem_x509_certificate(path.read_bytes())
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


def ensure_pki(folder: Path, clients: tuple[str, ...] = ("gateway", "receiver"),
               cns: dict[str, str] | None = None) -> Pki:
    """Create (once) a CA, a broker certificate for localhost/127.0.0.1 and client certs.

    A client's CN is its name unless ``cns`` maps it: the broker's per-gateway ACL takes the
    CN as the user name, so a gateway's certificate must carry its gateway id (docs/scale.md).
    A client certificate with another CN is issued again by the same CA.
    """
    pki = Pki(folder)
    cns = cns or {}
    if not (pki.cert("ca").exists() and pki.key("ca").exists() and pki.cert("broker").exists()):
        folder.mkdir(parents=True, exist_ok=True)
        ca_key, ca_cert = make_ca()
        _write_key(pki.key("ca"), ca_key)
        write_cert(pki.cert("ca"), ca_cert)
        key, cert = issue(ca_key, ca_cert, "localhost", server=True)
        _write_key(pki.key("broker"), key)
        write_cert(pki.cert("broker"), cert)
        for stale in clients:
            pki.cert(stale).unlink(missing_ok=True)
    for client in clients:
        cn = cns.get(client, client)
        if pki.cert(client).exists() and common_name(pki.cert(client)) == cn:
            continue
        loaded = serialization.load_pem_private_key(pki.key("ca").read_bytes(), None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        ca_key, ca_cert = loaded, x509.load_pem_x509_certificate(pki.cert("ca").read_bytes())
        key, cert = issue(ca_key, ca_cert, cn, server=False)
        _write_key(pki.key(client), key)
        write_cert(pki.cert(client), cert)
    return pki
