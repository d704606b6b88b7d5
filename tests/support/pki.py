"""A throw-away certificate authority for the TLS tests: a CA, a server certificate for
localhost/127.0.0.1 and client certificates by subject CN (EC P-256, one day)."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path  # subject CN "ris"
    client_key: Path
    ca_key: ec.EllipticCurvePrivateKey
    ca_cert: x509.Certificate

    def client(self, common_name: str) -> tuple[Path, Path]:
        """(certificate, key) of a new client certificate with this subject CN."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = issue(common_name, self.ca_cert.subject, self.ca_key, key)
        path = _write(self.ca.parent / f"client-{common_name}.pem", key, certificate)
        return path, path.with_suffix(".key")


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def issue(
    subject: str,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


def make_pki(folder: Path) -> Pki:
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = issue("MedBridge test CA", _name("MedBridge test CA"), ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    ca = _write(folder / "ca.pem", ca_key, ca_cert)
    server = _write(
        folder / "server.pem", server_key, issue("localhost", ca_cert.subject, ca_key, server_key)
    )
    client = _write(
        folder / "client.pem", client_key, issue("ris", ca_cert.subject, ca_key, client_key)
    )
    return Pki(
        ca, server, server.with_suffix(".key"), client, client.with_suffix(".key"),
        ca_key, ca_cert,
    )  # fmt: skip
