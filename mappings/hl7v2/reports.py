"""ORU^R01 building blocks: order-number domains, OBX documents and OBX DICOM UIDs.

Pure functions over parsed segments; translate.py assembles them into the report's writes.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml

from mappings.hl7v2.datatypes import Context, Element
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import Header, Segment, component_of, segment_location

UID = re.compile(r"[0-9]+(\.[0-9]+)+")
DICOM_UID = "urn:dicom:uid"
# HL7 table 0191 type of referenced data -> MIME top-level type
MIME_TYPES = {
    "AP": "application", "APPLICATION": "application", "IM": "image", "IMAGE": "image",
    "TEXT": "text", "TX": "text", "AU": "audio", "AUDIO": "audio", "VIDEO": "video",
    "MULTIPART": "multipart",
}  # fmt: skip
# an RP pointer is followed only to this server's own Binary or to a URL the reader can
# open: the bridge never fetches what a message points at (that would let a sender make
# the server request any address)
RESOLVABLE = re.compile(r"(https?://\S+|Binary/[A-Za-z0-9\-.]{1,64})")


@cache
def report_tables() -> dict[str, Any]:
    text = (resources.files("mappings.hl7v2") / "tables" / "reports.yaml").read_text("utf-8")
    data: dict[str, Any] = yaml.safe_load(text)
    return data


# order-number domains -----------------------------------------------------------------


def order_domain(header: Header, order_domains: dict[str, str]) -> str:
    """The domain of the sender's placer/filler numbers: configured, else its facility."""
    application, facility = header.sending_application, header.sending_facility
    for key in (f"{application}^{facility}", application, f"^{facility}"):
        domain = order_domains.get(key.upper())
        if domain:
            return domain
    return f"facility-{facility}" if facility else f"sender-{application or 'unknown'}"


@dataclass(frozen=True, slots=True)
class OrderNumbers:
    """Placer, filler and accession numbers sent without a namespace, in their domain.

    `legacy` is the sender-scoped system such numbers had before domains: lookups still
    match it, so orders and reports stored earlier keep being found (and updated ones
    gain the domain identifier).
    """

    system: str
    legacy: str

    def rescope(self, identifier: Element) -> Element:
        if identifier.get("system") == self.legacy:
            return {**identifier, "system": self.system}
        return identifier

    def criteria(self, identifier: Element) -> str:
        value = identifier["value"]
        systems = [identifier.get("system", "")]
        if systems[0] == self.system:
            systems.append(self.legacy)
        return "identifier=" + ",".join(f"{system}|{value}" for system in systems)


def order_numbers(header: Header, context: Context) -> OrderNumbers:
    domain = order_domain(header, context.tables.order_domains)
    pattern: str = report_tables()["order-domain-system"]
    safe = "".join(c if c.isalnum() or c in "-._" else "-" for c in domain) or "unknown"
    legacy = context.tables.system_for("", "", "", context.sender, "")
    return OrderNumbers(pattern.format(domain=safe), legacy)


# OBX -----------------------------------------------------------------------------------


def uid_kind(obx: Segment) -> str | None:
    """`study`, `series` or `instance` for an OBX carrying a DICOM UID; None otherwise."""
    if not UID.fullmatch(obx.value(5).strip()):
        return None
    identifier = obx.field(3)
    if not identifier:
        return None
    tables = report_tables()
    kind = tables["uid-codes"].get(component_of(identifier[0], 1).strip())
    if kind is None:
        kind = tables["uid-texts"].get(component_of(identifier[0], 2).strip().lower())
    return str(kind) if kind else None


def is_impression(obx: Segment) -> bool:
    """OBX-3 naming the impression (radiology `...&IMP`) or OBX-4 sub-ID `IMP`."""
    if obx.value(4).strip().upper() == "IMP":
        return True
    identifier = obx.field(3)
    if not identifier:
        return False
    parts = [sub for component in identifier[0][:1] + identifier[0][3:4] for sub in component]
    return any(part.upper().endswith("IMP") for part in parts)


@dataclass(frozen=True, slots=True)
class Document:
    """An ED document (its bytes) or an RP pointer (its URL) carried in OBX-5."""

    content_type: str
    title: str
    data: bytes | None = None
    url: str | None = None


def document(obx: Segment) -> Document | None:
    """OBX-2 ED / RP as a document; None when the OBX carries none (an ED holding a bare
    value, as some labs send, or an RP this server cannot resolve)."""
    repetitions = obx.field(5)
    if not repetitions:
        return None
    rep = repetitions[0]
    identifier = obx.field(3)
    title = component_of(identifier[0], 2) if identifier else ""
    if obx.value(2).upper() == "RP":
        pointer = component_of(rep, 1).strip()
        if not RESOLVABLE.fullmatch(pointer):
            return None
        return Document(_mime(component_of(rep, 3), component_of(rep, 4)), title, url=pointer)
    data = component_of(rep, 5)
    if len(rep) < 5 or not data:
        return None
    content_type = _mime(component_of(rep, 2), component_of(rep, 3))
    return Document(content_type, title, data=_decode(component_of(rep, 4), data, obx))


def _mime(kind: str, subtype: str) -> str:
    top = MIME_TYPES.get(kind.strip().upper(), "application")
    sub = subtype.strip().lower() or "octet-stream"
    return f"{top}/{sub}"


def _decode(encoding: str, data: str, obx: Segment) -> bytes:
    """ED-4 encoding (table 0299: Base64, Hex, A = ASCII) -> the document's bytes."""
    name = encoding.strip().upper()
    try:
        if name == "BASE64":
            return base64.b64decode("".join(data.split()), validate=True)
        if name == "HEX":
            return bytes.fromhex(data)
        if name in ("A", ""):
            return data.encode("utf-8")
    except (binascii.Error, ValueError):
        raise MappingError(
            "102", f"OBX-5 is not valid {encoding[:12]} data", segment_location(obx, 5)
        ) from None
    raise MappingError(
        "102", f"ED encoding {encoding[:12]!r} is not Base64, Hex or A", segment_location(obx, 5)
    )
