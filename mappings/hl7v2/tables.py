"""Code maps and the assigning-authority table, loaded from YAML beside this module."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

ISO_OID = "urn:oid:"


@dataclass(frozen=True, slots=True)
class Tables:
    codes: dict[str, dict[str, str]]  # table name -> HL7 code -> FHIR code
    coding_systems: dict[str, str]  # CWE-3 name of coding system -> FHIR system URI
    authorities: dict[str, str]  # assigning authority namespace id -> identifier system
    default_system: str  # pattern for unknown authorities: {authority}
    unassigned_system: str  # pattern without authority: {sender} {kind}
    # senders ("MSH-3" or "MSH-3^MSH-4") -> order-number domain (reports.py)
    order_domains: dict[str, str] = field(default_factory=dict)
    # sender (MSH-3-MSH-4, MSH-4 or MSH-3) -> assigning authority of its PID-3 / MRG-1
    # identifiers that name none (the HL7 side of the default IssuerOfPatientID)
    sender_issuers: dict[str, str] = field(default_factory=dict)

    def sender_issuer(self, application: str, facility: str) -> str | None:
        """The default assigning authority of a sender's patient identifiers, if any."""
        joined = "-".join(p for p in (application, facility) if p)
        for key in (joined, facility, application):
            if key and key in self.sender_issuers:
                return self.sender_issuers[key]
        return None

    def code(self, table: str, value: str) -> str | None:
        return self.codes.get(table, {}).get(value.upper()) if value else None

    def coding_system(self, name: str) -> str | None:
        if not name:
            return None
        return self.coding_systems.get(name.upper(), self.default_system.format(authority=name))

    def system_for(
        self, namespace: str, universal: str, universal_type: str, sender: str, kind: str
    ) -> str:
        """Identifier system of an assigning authority (HD), per the configured table."""
        if namespace and namespace in self.authorities:
            return self.authorities[namespace]
        if universal and universal_type.upper() == "ISO":
            return ISO_OID + universal
        if universal and universal in self.authorities:
            return self.authorities[universal]
        if namespace:
            return self.default_system.format(authority=_uri_part(namespace))
        return self.unassigned_system.format(sender=_uri_part(sender), kind=_uri_part(kind or "id"))


@lru_cache(maxsize=1024)  # a few senders and authorities, met in every message
def _uri_part(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "-" for c in text) or "unknown"


@cache
def default_tables() -> Tables:
    return load_tables(None)


def load_tables(authorities_file: Path | None, order_domains: str = "") -> Tables:
    """The shipped tables; `authorities_file` (YAML) adds or overrides assigning authorities
    (`authorities:`, or the mapping itself) and senders' default authorities (`senders:`);
    `order_domains` (`NAME=SENDER,SENDER;...`) names senders sharing order numbers."""
    codes: dict[str, Any] = _read("codes.yaml")
    identifiers: dict[str, Any] = _read("identifier_systems.yaml")
    authorities = dict(identifiers["authorities"])
    senders = dict(identifiers.get("senders") or {})
    if authorities_file is not None:
        extra: dict[str, Any] = yaml.safe_load(authorities_file.read_text("utf-8")) or {}
        senders.update(extra.get("senders") or {})
        if "authorities" in extra or "senders" in extra:
            authorities.update(extra.get("authorities") or {})
        else:
            authorities.update(extra)
    return Tables(
        codes={
            name: {str(k).upper(): str(v) for k, v in t.items()}
            for name, t in codes.items()
            if name != "coding-systems"
        },
        coding_systems={str(k).upper(): str(v) for k, v in codes["coding-systems"].items()},
        authorities={str(k): str(v) for k, v in authorities.items()},
        default_system=identifiers["default"],
        unassigned_system=identifiers["unassigned"],
        order_domains=parse_order_domains(order_domains),
        sender_issuers={str(k): str(v) for k, v in senders.items()},
    )


def parse_order_domains(text: str) -> dict[str, str]:
    """`radiology=HIS,RIS;lab=LIS^LAB1` -> {"HIS": "radiology", "RIS": ..., "LIS^LAB1": "lab"}.

    ValueError names the part that is not `NAME=SENDER[,SENDER...]`.
    """
    domains: dict[str, str] = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        name, equals, senders = part.partition("=")
        members = [s.strip() for s in senders.split(",") if s.strip()]
        if not equals or not name.strip() or not members:
            raise ValueError(f"order domain {part[:60]!r} is not NAME=SENDER[,SENDER...]")
        for member in members:
            domains[member.upper()] = name.strip()
    return domains


def _read(name: str) -> dict[str, Any]:
    text = (resources.files("mappings.hl7v2") / "tables" / name).read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data
