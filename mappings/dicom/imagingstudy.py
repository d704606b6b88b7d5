"""DICOM index rows -> FHIR ImagingStudy and Patient: a small engine over the YAML tables.

Pure: takes the study/series/instance rows (DICOM keyword -> scalar) and the references
the caller resolved (patient, endpoint, orders), returns resource dicts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from mappings.hl7v2.tables import load_tables

DICOM_UID_SYSTEM = "urn:dicom:uid"
ACCESSION_TYPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]
}
Row = dict[str, Any]
# meta.tag codes on an ImagingStudy whose header disagrees with its order's patient
# (docs/dicom.md, "Patient identity"): `ImagingStudy?_tag=<system>|` lists them all
RECONCILIATION = "https://medbridge.example.org/fhir/CodeSystem/imaging-reconciliation"
RECONCILIATION_DISPLAY = {
    "patient-id-mismatch": "PatientID of the header is not an identifier of the order's patient",
    "patient-name-mismatch": "PatientName of the header differs from the order's patient",
}


@dataclass(slots=True)
class StudyLinks:
    """References resolved by the caller (FHIR searches are not this module's job)."""

    patient: str  # "Patient/<id>"
    endpoint: str | None = None
    based_on: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)  # RECONCILIATION codes: header vs order


@cache
def _table(name: str) -> dict[str, Any]:
    text = (resources.files("mappings.dicom") / name).read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


_SITE_AUTHORITIES: list[Path] = []  # the site's MEDBRIDGE_HL7_AUTHORITIES file, if any


def use_site_authorities(path: Path | None) -> None:
    """Read the site's assigning-authority file too (the composition root calls this), so
    an issuer the HL7 side maps to a site system (an OID) names that system here too."""
    _SITE_AUTHORITIES[:] = [path] if path is not None else []
    _issuers.cache_clear()


@cache
def _issuers() -> dict[str, Any]:
    """This package's issuer table over the HL7 bridge's assigning-authority table
    (shipped, plus the site's file)."""
    merged: dict[str, Any] = dict(_table("patient_identifiers.yaml"))
    hl7 = load_tables(_SITE_AUTHORITIES[0] if _SITE_AUTHORITIES else None)
    merged["authorities"] = {**hl7.authorities, **merged["authorities"]}
    merged["default"] = hl7.default_system
    return merged


def patient_identifier(patient_id: str, issuer: str | None) -> dict[str, str]:
    """PatientID + IssuerOfPatientID -> the Identifier the HL7 bridge uses too."""
    table = _issuers()
    if not issuer:
        system = str(table["unassigned"])
    elif issuer in table["authorities"]:
        system = str(table["authorities"][issuer])
    else:
        part = "".join(c if c.isalnum() or c in "-._" else "-" for c in issuer)
        system = str(table["default"]).format(authority=part)
    return {"system": system, "value": patient_id}


def anonymous_identifier(study_uid: str) -> dict[str, str]:
    """The Patient of a study whose header names nobody (no PatientID): identified by
    the study, so each such study has its own Patient and a resend finds it again."""
    return {"system": str(_issuers()["anonymous"]), "value": study_uid}


def issuer_of(system: str) -> str | None:
    """The IssuerOfPatientID (assigning authority) an identifier system stands for; None
    for systems no authority names (an OID, this server's unassigned systems)."""
    table = _issuers()
    for authority, known in table["authorities"].items():
        if known == system:
            return str(authority)
    prefix, _, suffix = str(table["default"]).partition("{authority}")
    if system.startswith(prefix) and system.endswith(suffix) and len(system) > len(prefix):
        part = system[len(prefix) : len(system) - len(suffix)]
        return part if part and "/" not in part else None
    return None


def human_name(person_name: str) -> dict[str, Any] | None:
    """DICOM PN (family^given^middle^prefix^suffix, up to three `=` groups) -> HumanName;
    None when every component is empty (`^^^^`). The first group that names someone is
    used: the alphabetic one, else the ideographic, else the phonetic."""
    for group in person_name.split("="):
        parts = [p.strip() for p in group.split("^")] + [""] * 5
        family, given, middle, prefix, suffix = parts[:5]
        if not any((family, given, middle, prefix, suffix)):
            continue
        human: dict[str, Any] = {}
        words = [w for w in (prefix, given, middle, family, suffix) if w]
        human["text"] = " ".join(words)
        if family:
            human["family"] = family
        names = [n for n in (given, *middle.split(" ")) if n]
        if names:
            human["given"] = names
        if prefix:
            human["prefix"] = [prefix]
        if suffix:
            human["suffix"] = [suffix]
        return human
    return None


def patient_from_header(study: Row, identifier: dict[str, str] | None = None) -> dict[str, Any]:
    """A Patient created from the DICOM header when the patient is not known yet;
    `identifier` when the caller resolved it (default issuer, anonymous rule)."""
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [
            identifier
            or patient_identifier(str(study.get("PatientID", "")), study.get("IssuerOfPatientID"))
        ],
    }
    name = human_name(str(study.get("PatientName") or ""))
    if name:
        patient["name"] = [name]
    birth = str(study.get("PatientBirthDate", ""))
    if re.fullmatch(r"\d{8}", birth):
        patient["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    sex = {"M": "male", "F": "female", "O": "other"}.get(str(study.get("PatientSex", "")))
    if sex:
        patient["gender"] = sex
    return patient


def imaging_study(study: Row, series: list[Row], links: StudyLinks) -> dict[str, Any]:
    """The ImagingStudy for one study: `series` rows carry their `instances` rows."""
    table = _table("imagingstudy.yaml")
    uid = str(study["_id"])
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}],
        "status": "available",
        "subject": {"reference": links.patient},
    }
    if links.tags:
        resource["meta"] = {
            "tag": [
                {"system": RECONCILIATION, "code": code, "display": RECONCILIATION_DISPLAY[code]}
                for code in links.tags
            ]
        }
    accession = study.get("AccessionNumber")
    if accession:
        resource["identifier"].append({"type": ACCESSION_TYPE, "value": str(accession)})
    started = _started(study)
    if started:
        resource["started"] = started
    if links.based_on:
        resource["basedOn"] = [{"reference": ref} for ref in links.based_on]
    referrer = human_name(str(study.get("ReferringPhysicianName") or ""))
    if referrer:
        resource["referrer"] = {"display": referrer["text"]}
    if links.endpoint:
        resource["endpoint"] = [{"reference": links.endpoint}]
    resource.update(_apply(table["study"], study, table["tables"]))
    ordered = sorted(series, key=lambda row: (row.get("SeriesNumber") or 0, row["_id"]))
    modalities: dict[str, dict[str, str]] = {}
    fhir_series = []
    for row in ordered:
        entry = _apply(table["series"], {**row, "SeriesInstanceUID": row["_id"]}, table["tables"])
        instances = sorted(
            row.get("instances", []), key=lambda i: (i.get("InstanceNumber") or 0, i["_id"])
        )
        entry["numberOfInstances"] = len(instances)
        entry["instance"] = [
            _apply(table["instance"], {**i, "SOPInstanceUID": i["_id"]}, table["tables"])
            for i in instances
        ]
        if links.endpoint:
            entry["endpoint"] = [{"reference": links.endpoint}]
        if "modality" in entry:
            modalities.setdefault(entry["modality"]["code"], entry["modality"])
        fhir_series.append(entry)
    if modalities:
        resource["modality"] = list(modalities.values())
    resource["numberOfSeries"] = len(fhir_series)
    resource["numberOfInstances"] = sum(s["numberOfInstances"] for s in fhir_series)
    if fhir_series:
        resource["series"] = fhir_series
    return resource


def _apply(rules: list[dict[str, Any]], row: Row, tables: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for rule in rules:
        value = row.get(rule["from"])
        if value is None or value == "":
            continue
        kind = rule["type"]
        if kind == "string":
            if str(value).strip():  # FHIR strings cannot be blank
                out[rule["element"]] = str(value).strip()
        elif kind == "unsignedInt":
            if isinstance(value, int | float) and value >= 0:
                out[rule["element"]] = int(value)
        elif kind == "coding":
            out[rule["element"]] = {"system": rule["system"], "code": str(value)}
        elif kind == "uid-coding":
            out[rule["element"]] = {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{value}"}
        elif kind == "code-sequence" and isinstance(value, dict):
            schemes = _table("imagingstudy.yaml")["coding_schemes"]
            scheme = str(value.get("scheme", ""))
            coding = {"code": str(value["value"])}
            if scheme:
                coding["system"] = schemes.get(scheme) or f"urn:dicom:coding-scheme:{scheme}"
            if value.get("meaning"):
                coding["display"] = str(value["meaning"])
            concept = {"coding": [coding]}
            out[rule["element"]] = [concept] if rule.get("repeat") else concept
        elif kind == "table-coding":
            coding = tables[rule["table"]].get(str(value).upper())
            out[rule["element"]] = dict(coding) if coding else {"display": str(value)}
    return out


def _started(study: Row) -> str | None:
    date = str(study.get("StudyDate", ""))
    if not re.fullmatch(r"\d{8}", date):
        return None
    day = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    time = str(study.get("StudyTime", ""))
    offset = str(study.get("TimezoneOffsetFromUTC", ""))
    if re.match(r"\d{6}", time) and re.fullmatch(r"[+-]\d{4}", offset):
        # FHIR needs a zone with a time: without TimezoneOffsetFromUTC the date alone is honest
        return f"{day}T{time[:2]}:{time[2:4]}:{time[4:6]}{offset[:3]}:{offset[3:]}"
    return day
