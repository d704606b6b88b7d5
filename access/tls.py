"""TLS for every listener: one server context (TLS 1.2 and 1.3 only, client certificates
when a CA is given) and the subject CN a client certificate authenticates.

Every door (HTTPS, MLLP, DICOM) builds its context here, so the protocol floor and the
client-certificate rule are one decision, not three.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# BCP 195 (RFC 9325): TLS 1.0 and 1.1 are deprecated and must not be negotiated
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class TlsFiles:
    certificate: Path
    key: Path
    client_ca: Path | None = None  # client certificates are required when set


def server_context(files: TlsFiles) -> ssl.SSLContext:
    """Server context: TLS 1.2 and 1.3 only; client certificate check when a CA is given."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    context.load_cert_chain(str(files.certificate), str(files.key))
    if files.client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=str(files.client_ca))
    return context


def tls_files(
    certificate: Path | None, key: Path | None, client_ca: Path | None
) -> TlsFiles | None:
    """The files of one listener's settings, or None when it speaks plain TCP."""
    if certificate is None and key is None:
        return None
    if certificate is None or key is None:
        raise ValueError("a TLS certificate needs its private key and the key its certificate")
    return TlsFiles(certificate, key, client_ca)


def common_name(certificate: dict[str, Any] | None) -> str | None:
    """The subject CN of a verified peer certificate (`SSLSocket.getpeercert()`)."""
    if not certificate:
        return None
    for relative_name in certificate.get("subject", ()):
        for key, value in relative_name:
            if key == "commonName":
                return str(value)
    return None
