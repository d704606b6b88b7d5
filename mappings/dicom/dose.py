"""Radiation Dose SR -> the study's total DLP and CTDIvol, and the Observation recording them.

Pure: walks the SR content tree (bounded depth) for the concepts in dose.yaml.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydicom.dataset import Dataset

DCM = "http://dicom.nema.org/resources/ontology/DCM"
UCUM = "http://unitsofmeasure.org"
MAX_DEPTH = 16


@cache
def _table() -> dict[str, Any]:
    text = (resources.files("mappings.dicom") / "dose.yaml").read_text(encoding="utf-8")
    loaded: dict[str, Any] = yaml.safe_load(text)
    return loaded


def dose_values(dataset: Dataset) -> dict[str, float]:
    """measure name -> value for a dose SR; empty for anything else."""
    table = _table()
    if str(dataset.get("SOPClassUID", "")) not in table["sop_classes"]:
        return {}
    by_code = {m["code"]: name for name, m in table["measures"].items()}
    found: dict[str, list[float]] = {}
    _walk(dataset, by_code, found, 0)
    return {name: max(values) for name, values in found.items() if values}


def _walk(
    item: Dataset, by_code: dict[str, str], found: dict[str, list[float]], depth: int
) -> None:
    if depth > MAX_DEPTH:
        return
    for content in item.get("ContentSequence", []):
        if content.get("ValueType") == "NUM":
            names = content.get("ConceptNameCodeSequence", [])
            name = by_code.get(str(names[0].get("CodeValue", ""))) if names else None
            measured = content.get("MeasuredValueSequence", [])
            if name and measured and "NumericValue" in measured[0]:
                found.setdefault(name, []).append(float(measured[0].NumericValue))
        _walk(content, by_code, found, depth + 1)


def dose_observation(
    values: dict[str, float], study_reference: str, subject: str, sop_instance: str
) -> dict[str, Any]:
    """One Observation per dose report: total DLP as value, CTDIvol as a component."""
    measures = _table()["measures"]

    def quantity(name: str) -> dict[str, Any]:
        unit = measures[name]["unit"]
        return {"value": values[name], "unit": unit, "system": UCUM, "code": unit}

    def concept(name: str) -> dict[str, Any]:
        measure = measures[name]
        return {"coding": [{"system": DCM, "code": measure["code"], "display": measure["display"]}]}

    observation: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{sop_instance}"}],
        "category": [
            {
                "coding": [
                    {"system": DCM, "code": "113701", "display": "X-Ray Radiation Dose Report"}
                ]
            }
        ],
        "code": concept("dlp_total") if "dlp_total" in values else concept("ctdivol"),
        "subject": {"reference": subject},
        "partOf": [{"reference": study_reference}],
        "derivedFrom": [{"reference": study_reference}],
    }
    if "dlp_total" in values:
        observation["valueQuantity"] = quantity("dlp_total")
        if "ctdivol" in values:
            observation["component"] = [
                {"code": concept("ctdivol"), "valueQuantity": quantity("ctdivol")}
            ]
    elif "ctdivol" in values:
        observation["valueQuantity"] = quantity("ctdivol")
    return observation
