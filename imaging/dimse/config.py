"""Our AE, the peers table and the association limits, from settings and a YAML/JSON file.

The peers table is data (AE title, host, port, allowed services) so a site adds a
modality or a PACS without touching code. An unknown calling AE title is refused at
association time unless the server is configured open.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SERVICES = frozenset({"echo", "store", "find", "worklist", "move", "get"})
OPEN_SERVICES = frozenset({"echo", "store", "find", "worklist", "get"})


class PeersFileError(ValueError):
    """The peers table cannot be read; the server refuses to start with it."""


@dataclass(frozen=True, slots=True)
class Peer:
    ae_title: str
    host: str | None = None
    port: int | None = None
    services: frozenset[str] = SERVICES
    issuer: str | None = None  # IssuerOfPatientID of its instances that carry none
    # subject CNs of the TLS client certificates that may call with this AE title
    certificate_cns: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class DimseConfig:
    ae_title: str = "MEDBRIDGE"
    peers: dict[str, Peer] = field(default_factory=dict)
    open: bool = True  # accept calling AE titles that are not in the peers table
    open_services: frozenset[str] = OPEN_SERVICES
    max_associations: int = 16
    reserved_associations: int = 4  # slots only calling AE titles in the peers table get
    idle_timeout: float = 300.0  # no request but C-ECHO this long: A-ABORT
    request_timeout: float = 5.0  # a new connection's wait for its A-ASSOCIATE-RQ
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    max_pdu: int = 262_144
    default_issuer: str | None = None  # for calling AE titles without their own issuer

    @property
    def handler_timeout(self) -> float:
        """A handler's wait on the asyncio loop: below the DIMSE timeout, so we answer first."""
        return max(1.0, self.dimse_timeout * 0.8)

    def peer(self, calling_ae: str) -> Peer | None:
        """The calling AE's row, or an implicit row when the server is open."""
        known = self.peers.get(calling_ae.strip())
        if known is not None:
            return known
        if self.open:
            return Peer(calling_ae.strip(), services=self.open_services)
        return None

    def issuer(self, calling_ae: str) -> str | None:
        """The issuer of PatientIDs this AE title sends without IssuerOfPatientID."""
        peer = self.peers.get(calling_ae.strip())
        return (peer.issuer if peer is not None else None) or self.default_issuer

    def certificate_names(self, calling_ae: str) -> frozenset[str]:
        """The client certificate CNs bound to this calling AE title (none: unlisted)."""
        peer = self.peers.get(calling_ae.strip())
        return peer.certificate_cns if peer is not None else frozenset()

    def allows(self, calling_ae: str, service: str) -> bool:
        peer = self.peer(calling_ae)
        return peer is not None and service in peer.services


def load_peers(path: Path | None) -> dict[str, Peer]:
    """Read `peers: [{ae_title, host, port, services, issuer, certificate_cn}]` from a YAML
    or JSON file."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
        loaded: Any = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as error:
        raise PeersFileError(f"peers file {path.name} unreadable: {error}") from error
    rows = loaded.get("peers", []) if isinstance(loaded, dict) else loaded
    if not isinstance(rows, list):
        raise PeersFileError("peers file must hold a list under 'peers'")
    peers: dict[str, Peer] = {}
    for row in rows:
        peer = _peer(row)
        peers[peer.ae_title] = peer
    return peers


def _peer(row: Any) -> Peer:
    if not isinstance(row, dict) or not isinstance(row.get("ae_title"), str):
        raise PeersFileError("each peer needs an ae_title")
    ae_title = row["ae_title"].strip()
    if not 0 < len(ae_title) <= 16:
        raise PeersFileError(f"AE title {ae_title!r} must be 1-16 characters")
    services = frozenset(row.get("services", sorted(SERVICES)))
    unknown = services - SERVICES
    if unknown:
        raise PeersFileError(f"peer {ae_title}: unknown services {sorted(unknown)}")
    port = row.get("port")
    if port is not None and not (isinstance(port, int) and 0 < port < 65536):
        raise PeersFileError(f"peer {ae_title}: port must be 1-65535")
    host = row.get("host")
    issuer = row.get("issuer")
    if issuer is not None and not (isinstance(issuer, str) and 0 < len(issuer.strip()) <= 64):
        raise PeersFileError(f"peer {ae_title}: issuer must be 1-64 characters (LO)")
    return Peer(
        ae_title,
        str(host) if host is not None else None,
        port,
        services,
        issuer.strip() if issuer else None,
        _certificate_cns(ae_title, row.get("certificate_cn")),
    )


def _certificate_cns(ae_title: str, value: Any) -> frozenset[str]:
    """`certificate_cn: NAME` or a list of names."""
    names = [value] if isinstance(value, str) else value
    if names is None:
        return frozenset()
    if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
        raise PeersFileError(f"peer {ae_title}: certificate_cn must be a name or a list of names")
    return frozenset(n.strip() for n in names)
