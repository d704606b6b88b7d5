"""FHIR search semantics through the real server: each test scopes itself by a unique tag."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
TAGS = "urn:medbridge:test"
MRN = "urn:medbridge:mrn"
ACSN = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def tagged(resource: dict[str, Any], tag: str) -> dict[str, Any]:
    resource["meta"] = {"tag": [{"system": TAGS, "code": tag}]}
    return resource


def make(fhir: httpx.Client, resource: dict[str, Any]) -> str:
    response = fhir.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def ids(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    return [e["resource"]["id"] for e in body.get("entry", []) if e["search"]["mode"] == "match"]


def find(fhir: httpx.Client, query: str, tag: str) -> list[str]:
    separator = "&" if "?" in query else "?"
    return sorted(ids(fhir.get(f"{query}{separator}_tag={TAGS}|{tag}&_count=100")))


def person(
    tag: str, family: str, given: str, mrn: str, birth: str = "1980-05-17"
) -> dict[str, Any]:
    return tagged(
        {
            "resourceType": "Patient",
            "identifier": [{"system": MRN, "value": mrn}],
            "name": [{"family": family, "given": [given]}],
            "gender": "female",
            "birthDate": birth,
        },
        tag,
    )


def study(tag: str, patient: str, modality: str, started: str, accession: str) -> dict[str, Any]:
    return tagged(
        {
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": {"reference": f"Patient/{patient}"},
            "started": started,
            "identifier": [
                {"system": "urn:dicom:uid", "value": f"urn:oid:2.25.{uuid.uuid4().int}"},
                {
                    "type": {"coding": [{"system": ACSN, "code": "ACSN"}]},
                    "system": "urn:medbridge:accession",
                    "value": accession,
                },
            ],
            "series": [{"uid": f"1.2.{accession}", "modality": {"system": DCM, "code": modality}}],
        },
        tag,
    )


@pytest.fixture
def people(fhir: httpx.Client, unique: str) -> dict[str, str]:
    return {
        "simkus": make(fhir, person(unique, "Šimkus", "Jonas", f"{unique}-1")),
        "petraitiene": make(fhir, person(unique, "Petraitienė", "Ona", f"{unique}-2", "1975")),
        "elkin": make(fhir, person(unique, "Ёлкин", "Пётр", f"{unique}-3", "2001-02-03")),
    }


def test_strings_fold_case_and_accents(
    fhir: httpx.Client, unique: str, people: dict[str, str]
) -> None:
    assert find(fhir, "/Patient?name=simkus", unique) == [people["simkus"]]
    assert find(fhir, "/Patient?family=PETRAITIENE", unique) == [people["petraitiene"]]
    assert find(fhir, "/Patient?name=елкин", unique) == [people["elkin"]]
    assert find(fhir, "/Patient?given=пет", unique) == [people["elkin"]]
    assert find(fhir, "/Patient?family:exact=Šimkus", unique) == [people["simkus"]]
    assert find(fhir, "/Patient?family:exact=simkus", unique) == []
    assert find(fhir, "/Patient?family:contains=raitie", unique) == [people["petraitiene"]]
    both = find(fhir, "/Patient?family=simk,petr", unique)
    assert both == sorted([people["simkus"], people["petraitiene"]])
    assert find(fhir, "/Patient?family=simk&given=ona", unique) == []


def test_tokens(fhir: httpx.Client, unique: str, people: dict[str, str]) -> None:
    assert find(fhir, f"/Patient?identifier={MRN}|{unique}-1", unique) == [people["simkus"]]
    assert find(fhir, f"/Patient?identifier={unique}-2", unique) == [people["petraitiene"]]
    assert find(fhir, f"/Patient?identifier=|{unique}-2", unique) == []
    assert len(find(fhir, f"/Patient?identifier={MRN}|", unique)) == 3
    not_simkus = find(fhir, f"/Patient?identifier:not={MRN}|{unique}-1", unique)
    assert not_simkus == sorted([people["petraitiene"], people["elkin"]])
    assert len(find(fhir, "/Patient?gender=female", unique)) == 3


def test_dates_with_prefixes_and_precision(
    fhir: httpx.Client, unique: str, people: dict[str, str]
) -> None:
    assert find(fhir, "/Patient?birthdate=1980-05", unique) == [people["simkus"]]
    assert find(fhir, "/Patient?birthdate=1980", unique) == [people["simkus"]]
    assert find(fhir, "/Patient?birthdate=lt1980-01-01", unique) == [people["petraitiene"]]
    assert find(fhir, "/Patient?birthdate=ge2001-02-03", unique) == [people["elkin"]]
    assert find(fhir, "/Patient?birthdate=sa1990", unique) == [people["elkin"]]
    assert find(fhir, "/Patient?birthdate=eb1976", unique) == [people["petraitiene"]]
    assert len(find(fhir, "/Patient?birthdate=ne1980-05-17", unique)) == 2
    # 1975 (a whole year) is not "equal" to a day inside it, but it overlaps it
    assert find(fhir, "/Patient?birthdate=1975-06-01", unique) == []
    ranged = find(fhir, "/Patient?birthdate=gt1970&birthdate=lt1990", unique)
    assert ranged == sorted([people["simkus"], people["petraitiene"]])


def test_references_chains_and_has(
    fhir: httpx.Client, unique: str, people: dict[str, str], server: Any
) -> None:
    simkus = people["simkus"]
    ct = make(fhir, study(unique, simkus, "CT", "2024-03-05T10:00:00Z", f"A{unique}"))
    mr = make(fhir, study(unique, people["elkin"], "MR", "2024-04-01", f"B{unique}"))
    assert find(fhir, f"/ImagingStudy?subject=Patient/{simkus}", unique) == [ct]
    assert find(fhir, f"/ImagingStudy?patient={simkus}", unique) == [ct]
    absolute = f"{server.fhir_base}/Patient/{simkus}"
    assert find(fhir, f"/ImagingStudy?subject={absolute}", unique) == [ct]
    assert find(fhir, f"/ImagingStudy?subject:Patient.identifier={MRN}|{unique}-3", unique) == [mr]
    assert find(fhir, "/ImagingStudy?patient.name=simkus", unique) == [ct]
    assert find(fhir, f"/Patient?_has:ImagingStudy:patient:modality={DCM}|MR", unique) == [
        people["elkin"]
    ]
    of_type = f"/ImagingStudy?identifier:of-type={ACSN}|ACSN|A{unique}"
    assert find(fhir, of_type, unique) == [ct]
    assert find(fhir, "/ImagingStudy?modality=CT,MR&started=2024-03", unique) == [ct]
    assert find(fhir, "/ImagingStudy?started=ge2024-03-06", unique) == [mr]


def test_missing_and_identifier_reference(fhir: httpx.Client, unique: str) -> None:
    with_id = tagged(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"identifier": {"system": MRN, "value": f"{unique}-x"}},
        },
        unique,
    )
    without = tagged(
        {
            "resourceType": "ServiceRequest",
            "status": "active",
            "intent": "order",
            "subject": {"reference": "Patient/nobody"},
            "authoredOn": "2024-01-01",
        },
        unique,
    )
    first, second = make(fhir, with_id), make(fhir, without)
    assert find(fhir, "/ServiceRequest?authored:missing=true", unique) == [first]
    assert find(fhir, "/ServiceRequest?authored:missing=false", unique) == [second]
    query = f"/ServiceRequest?subject:identifier={MRN}|{unique}-x"
    assert find(fhir, query, unique) == [first]


def test_sort_count_and_stable_paging(fhir: httpx.Client, unique: str) -> None:
    created = [
        make(fhir, person(unique, f"Family{n % 3}", f"Given{n}", f"{unique}-{n}")) for n in range(7)
    ]
    url = f"/Patient?_tag={TAGS}|{unique}&_sort=-family,given&_count=3"
    first = fhir.get(url).json()
    assert first["total"] == 7
    names = [e["resource"]["name"][0] for e in first["entry"]]
    assert [n["family"] for n in names] == ["Family2", "Family2", "Family1"]
    assert [n["given"][0] for n in names[:2]] == ["Given2", "Given5"]
    seen = [e["resource"]["id"] for e in first["entry"]]
    # another client writes between pages: a resource that sorts before the cursor
    make(fhir, person(unique, "Family9", "Given9", f"{unique}-9"))
    link = next(lk["url"] for lk in first["link"] if lk["relation"] == "next")
    while link:
        page = fhir.get(link).json()
        seen += [e["resource"]["id"] for e in page["entry"]]
        link = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), "")
    assert sorted(seen) == sorted(created)  # nothing repeated, nothing skipped
    back = fhir.get(url.replace("_count=3", "_count=2")).json()
    second = fhir.get(next(lk["url"] for lk in back["link"] if lk["relation"] == "next")).json()
    previous = next(lk["url"] for lk in second["link"] if lk["relation"] == "previous")
    assert ids(fhir.get(previous)) == [e["resource"]["id"] for e in back["entry"]]


def test_result_parameters(fhir: httpx.Client, unique: str, people: dict[str, str]) -> None:
    base = f"/Patient?_tag={TAGS}|{unique}"
    counted = fhir.get(f"{base}&_summary=count").json()
    assert counted["total"] == 3
    assert "entry" not in counted or counted["entry"] == []
    assert "total" not in fhir.get(f"{base}&_total=none").json()
    elements = fhir.get(f"{base}&_elements=gender").json()["entry"][0]["resource"]
    assert "gender" in elements
    assert "name" not in elements
    assert any(t["code"] == "SUBSETTED" for t in elements["meta"]["tag"])
    summary = fhir.get(f"{base}&_summary=true").json()["entry"][0]["resource"]
    assert "name" in summary


def test_strict_and_lenient_handling(fhir: httpx.Client, unique: str) -> None:
    url = f"/Patient?_tag={TAGS}|{unique}&nonsense=1&birthdate=notadate"
    strict = fhir.get(url, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    issue = strict.json()["issue"][0]
    assert issue["expression"] == ["nonsense"]
    # lenient: an unknown parameter is ignored, a known one with a bad value is not
    lenient = fhir.get(f"/Patient?_tag={TAGS}|{unique}&nonsense=1")
    assert lenient.status_code == 200
    self_link = next(lk["url"] for lk in lenient.json()["link"] if lk["relation"] == "self")
    assert "nonsense" not in self_link
    assert "_tag=" in self_link
    malformed = fhir.get(url)
    assert malformed.status_code == 400
    assert malformed.json()["issue"][0]["expression"] == ["birthdate"]


def test_post_search_and_compartments(
    fhir: httpx.Client, unique: str, people: dict[str, str]
) -> None:
    simkus = people["simkus"]
    posted = fhir.post(
        "/Patient/_search",
        content=f"name=šimk&_tag={TAGS}|{unique}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert ids(posted) == [simkus]
    mine = make(fhir, study(unique, simkus, "CT", "2024-01-01", f"C{unique}"))
    make(fhir, study(unique, people["elkin"], "CT", "2024-01-01", f"D{unique}"))
    assert ids(fhir.get(f"/Patient/{simkus}/ImagingStudy")) == [mine]
    everything = fhir.get(f"/Patient/{simkus}/$everything").json()
    found = [e["fullUrl"].split("/fhir/")[1] for e in everything["entry"]]
    assert found == [f"Patient/{simkus}", f"ImagingStudy/{mine}"]  # each once, Patient first


def test_include_revinclude_and_iterate(fhir: httpx.Client, unique: str) -> None:
    patient = make(fhir, person(unique, "Kazlauskas", "Tomas", f"{unique}-k"))
    order = make(
        fhir,
        tagged(
            {
                "resourceType": "ServiceRequest",
                "status": "active",
                "intent": "order",
                "subject": {"reference": f"Patient/{patient}"},
            },
            unique,
        ),
    )
    imaging = study(unique, patient, "CT", "2024-05-05", f"E{unique}")
    imaging["basedOn"] = [{"reference": f"ServiceRequest/{order}"}]
    study_id = make(fhir, imaging)
    report = make(
        fhir,
        tagged(
            {
                "resourceType": "DiagnosticReport",
                "status": "final",
                "code": {"text": "CT report"},
                "subject": {"reference": f"Patient/{patient}"},
                "imagingStudy": [{"reference": f"ImagingStudy/{study_id}"}],
            },
            unique,
        ),
    )
    response = fhir.get(
        f"/DiagnosticReport?_id={report}&_include=DiagnosticReport:study"
        "&_include:iterate=ImagingStudy:basedon"
    ).json()
    modes = {e["fullUrl"].split("/fhir/")[1]: e["search"]["mode"] for e in response["entry"]}
    assert modes == {
        f"DiagnosticReport/{report}": "match",
        f"ImagingStudy/{study_id}": "include",
        f"ServiceRequest/{order}": "include",
    }
    reverse = fhir.get(f"/ServiceRequest?_id={order}&_revinclude=ImagingStudy:basedon").json()
    assert {e["resource"]["id"] for e in reverse["entry"]} == {order, study_id}


def test_default_order_pages_by_id_without_repeats(fhir: httpx.Client, unique: str) -> None:
    created = {make(fhir, person(unique, "Page", f"G{n}", f"{unique}-{n}")) for n in range(5)}
    link = f"{fhir.base_url}/Patient?_tag={TAGS}|{unique}&_count=2"
    seen: list[str] = []
    while link:
        page = fhir.get(link).json()
        assert page["total"] >= 5
        seen += [e["resource"]["id"] for e in page["entry"]]
        if len(seen) == 2:  # another client writes while this one pages
            make(fhir, person(unique, "Page", "Late", f"{unique}-late"))
        link = next((lk["url"] for lk in page["link"] if lk["relation"] == "next"), "")
    assert len(seen) == len(set(seen))
    assert created <= set(seen)
    assert seen[:2] == sorted(seen[:2])


def test_quantity_uri_text_and_last_updated(fhir: httpx.Client, unique: str) -> None:
    ucum = "http://unitsofmeasure.org"
    profile = f"https://medbridge.example.org/fhir/StructureDefinition/test-{unique}"

    def weight(value: float, code: str) -> dict[str, Any]:
        resource = tagged(
            {
                "resourceType": "Observation",
                "status": "final",
                "code": {
                    "coding": [
                        {"system": "http://loinc.org", "code": "29463-7", "display": "Body weight"}
                    ]
                },
                "valueQuantity": {"value": value, "system": ucum, "code": code, "unit": code},
            },
            unique,
        )
        resource["meta"]["profile"] = [profile]
        return resource

    light, heavy = make(fhir, weight(5.4, "kg")), make(fhir, weight(80, "kg"))
    grams = make(fhir, weight(5400, "g"))
    assert find(fhir, f"/Observation?value-quantity=5.4|{ucum}|kg", unique) == [light]
    assert find(fhir, "/Observation?value-quantity=5.4||kg", unique) == [light]
    assert find(fhir, "/Observation?value-quantity=gt50||kg", unique) == [heavy]
    assert find(fhir, "/Observation?value-quantity=ap5400", unique) == [grams]
    assert len(find(fhir, "/Observation?code:text=body wei", unique)) == 3
    assert len(find(fhir, f"/Observation?_profile={profile}", unique)) == 3
    below = profile.rsplit("/", 1)[0]
    assert len(find(fhir, f"/Observation?_profile:below={below}", unique)) == 3
    assert find(fhir, "/Observation?_lastUpdated=lt2000-01-01", unique) == []
    assert len(find(fhir, "/Observation?_lastUpdated=gt2020-01-01", unique)) == 3
