"""Message text in, FHIR write actions out: no socket, no store."""

from __future__ import annotations

import base64
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mappings.dicom.worklist_identifiers import (
    REQUESTED_PROCEDURE_ID,
    SCHEDULED_PROCEDURE_STEP_ID,
)
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import V2Message
from mappings.hl7v2.tables import load_tables
from mappings.hl7v2.translate import Merge, Report, Translation, Upsert, translate

LTPK = "https://www.esveikata.lt/fhir/sid/asmens-kodas"


def msh(event: str, version: str = "2.5.1", control: str = "C1") -> str:
    return (
        f"MSH|^~\\&|RIS|HOSP|MB|MB|20261122101500||{event}|{control}|P|{version}"
        "|||||LT|UNICODE UTF-8\r"
    )


def segment(name: str, fields: dict[int, str]) -> str:
    """A segment with the given fields set (HL7 numbering), the rest empty."""
    values = [""] * max(fields)
    for number, value in fields.items():
        values[number - 1] = value
    return "|".join([name, *values]) + "\r"


def run(text: str) -> Translation:
    return translate(V2Message(text), timezone=ZoneInfo("Europe/Vilnius"))


def flat(translation: Translation) -> list[Upsert]:
    """Upserts in order, a Report's own (with their report key placeholder) in place."""
    out: list[Upsert] = []
    for action in translation.actions:
        if isinstance(action, Report):
            out.extend(action.actions)
        elif isinstance(action, Upsert):
            out.append(action)
    return out


def upserts(translation: Translation, resource_type: str) -> list[Upsert]:
    return [a for a in flat(translation) if a.resource["resourceType"] == resource_type]


ADT_A01 = (
    msh("ADT^A01^ADT_A01")
    + "EVN|A01|20261122101500\r"
    + "PID|1||38703181745^^^LTPK^NI~H123^^^VLN^MR||Šimkutė^Rūta^Marija^^Dr.||19870318|F|||"
    "Gedimino pr. 1^^Vilnius^^01103^LT^H||+37060000000^PRN^CP~^NET^Internet^ruta@example.lt\r"
    + "PD1|||Šeimos klinika|D100^Petraitis^Jonas^^^^^^VLN\r"
    + segment(
        "PV1",
        {
            1: "1",
            2: "I",
            3: "W1^101^1",
            7: "A200^Kazlauskas^Tomas^^^Dr.^^^VLN",
            19: "V555^^^VLN^VN",
            44: "20261122100000",
        },
    )
)


def test_adt_a01_patient_fields() -> None:
    translation = run(ADT_A01)
    assert translation.event == "ADT^A01"
    patient = upserts(translation, "Patient")[0]
    resource = patient.resource
    assert resource["identifier"][0] == {
        "system": LTPK,
        "value": "38703181745",
        "type": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]
        },
    }
    assert (
        resource["identifier"][1]["system"] == "https://medbridge.example.org/hl7v2/authority/VLN"
    )
    assert resource["name"] == [
        {"family": "Šimkutė", "given": ["Rūta", "Marija"], "prefix": ["Dr."]}
    ]
    assert resource["birthDate"] == "1987-03-18"
    assert resource["gender"] == "female"
    assert resource["address"] == [
        {"line": ["Gedimino pr. 1"], "city": "Vilnius", "postalCode": "01103",
         "country": "LT", "use": "home"}
    ]  # fmt: skip
    assert resource["telecom"] == [
        {"system": "phone", "value": "+37060000000", "use": "home"},
        {"system": "email", "value": "ruta@example.lt", "use": "home"},
    ]
    assert resource["generalPractitioner"][0]["reference"].startswith("Practitioner?identifier=")
    assert patient.criteria == (
        f"identifier={LTPK}|38703181745,https://medbridge.example.org/hl7v2/authority/VLN|H123"
    )


def test_adt_a01_encounter_and_practitioners() -> None:
    translation = run(ADT_A01)
    encounter = upserts(translation, "Encounter")[0].resource
    assert encounter["status"] == "in-progress"
    assert encounter["class"] == {
        "code": "IMP", "display": "inpatient encounter",
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
    }  # fmt: skip
    assert encounter["identifier"][0]["value"] == "V555"
    # No offset in PV1-44: the configured zone (Vilnius, UTC+2 in November) is applied.
    assert encounter["period"]["start"] == "2026-11-22T10:00:00+02:00"
    assert encounter["subject"]["reference"].startswith("Patient?identifier=")
    names = [p.resource["name"][0]["family"] for p in upserts(translation, "Practitioner")]
    assert names == ["Petraitis", "Kazlauskas"]
    kinds = [a.resource["resourceType"] for a in translation.actions if isinstance(a, Upsert)]
    # practitioners are written before the resources naming them
    assert kinds.index("Practitioner") < kinds.index("Patient")


def test_cyrillic_name_intact() -> None:
    text = msh("ADT^A08") + "PID|1||7701^^^RUSNILS||Иванов^Пётр^Сергеевич||19700101|M\r"
    patient = upserts(run(text), "Patient")[0].resource
    assert patient["name"][0] == {"family": "Иванов", "given": ["Пётр", "Сергеевич"]}
    assert patient["identifier"][0]["system"] == "http://esnsi.gosuslugi.ru/fhir/sid/snils"


@pytest.mark.parametrize("event", ["A04", "A08", "A28", "A31"])
def test_other_adt_events(event: str) -> None:
    text = msh(f"ADT^{event}") + "PID|1||55^^^LTPK||Jonaitis^Petras\rPV1|1|O\r"
    translation = run(text)
    assert upserts(translation, "Patient")
    assert bool(upserts(translation, "Encounter")) == (event == "A04")


def test_missing_patient_identifier_is_101() -> None:
    with pytest.raises(MappingError) as raised:
        run(msh("ADT^A08") + "PID|1||||Doe^John\r")
    assert (raised.value.code, raised.value.location, raised.value.reject) == (
        "101", "PID^2^3", False,
    )  # fmt: skip


def test_unparseable_birth_date_is_a_102_warning_and_dropped() -> None:
    translation = run(msh("ADT^A08") + "PID|1||1^^^LTPK||Doe^John||19871345\r")
    [warning] = translation.warnings
    assert (warning.code, warning.location) == ("102", "PID^2^7")
    [patient] = upserts(translation, "Patient")
    assert "birthDate" not in patient.resource
    assert patient.resource["name"] == [{"family": "Doe", "given": ["John"]}]


@pytest.mark.parametrize(
    ("event", "code"), [("SIU^S12", "200"), ("ADT^A99", "201"), ("ORU^R30", "201")]
)
def test_unsupported_events_are_rejected(event: str, code: str) -> None:
    with pytest.raises(MappingError) as raised:
        run(msh(event) + "PID|1||1^^^LTPK\r")
    assert raised.value.code == code
    assert raised.value.reject


ORM = (
    msh("ORM^O01", "2.3.1")
    + "PID|1||123^^^LTPK||Šimkus^Jonas\r"
    + "PV1|1|O|||||||||||||||||V9^^^VLN\r"
    + segment(
        "ORC",
        {
            1: "{control}",
            2: "PL-1^RIS",
            3: "FL-1^PACS",
            5: "{status}",
            7: "^^^20261123080000^^S",
            9: "20261122101000",
            12: "D7^Ruta^Jurgita^^^Dr.^^^VLN",
        },
    )
    + segment(
        "OBR",
        {
            1: "1",
            2: "PL-1^RIS",
            3: "FL-1^PACS",
            4: "71020^Chest X-ray^C4",
            18: "ACC-42",
            31: "^Suspected pneumonia",
        },
    )
    + "ZDS|1.2.826.0.1.3680043.2.1125.1^MB^Application^DICOM\r"
)


def test_orm_new_order() -> None:
    translation = run(ORM.format(control="NW", status=""))
    request = upserts(translation, "ServiceRequest")[0]
    resource = request.resource
    types = {i["type"]["coding"][0]["code"]: i for i in resource["identifier"] if "type" in i}
    assert types["PLAC"]["value"] == "PL-1"
    assert types["PLAC"]["system"] == "https://medbridge.example.org/hl7v2/authority/RIS"
    assert types["FILL"]["value"] == "FL-1"
    assert types["ACSN"]["value"] == "ACC-42"
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.826.0.1.3680043.2.1125.1"} in (
        resource["identifier"]
    )
    assert resource["code"]["coding"][0] == {
        "code": "71020", "system": "http://www.ama-assn.org/go/cpt", "display": "Chest X-ray",
    }  # fmt: skip
    assert resource["status"] == "active"
    assert resource["intent"] == "order"
    assert resource["priority"] == "stat"
    assert resource["occurrenceDateTime"] == "2026-11-23T08:00:00+02:00"
    assert resource["authoredOn"] == "2026-11-22T10:10:00+02:00"
    assert resource["requester"]["reference"].startswith("Practitioner?identifier=")
    assert resource["reasonCode"] == [{"text": "Suspected pneumonia"}]
    assert resource["encounter"]["reference"].startswith("Encounter?identifier=")
    assert request.mode == "upsert"
    assert request.criteria == "identifier=https://medbridge.example.org/hl7v2/authority/RIS|PL-1"


@pytest.mark.parametrize(
    ("control", "status", "expected", "mode"),
    [
        ("XO", "", "active", "upsert"),
        ("CA", "", "revoked", "existing"),
        ("DC", "", "revoked", "existing"),
        ("SC", "CM", "completed", "existing"),
        ("SC", "HD", "on-hold", "existing"),
    ],
)
def test_order_control(control: str, status: str, expected: str, mode: str) -> None:
    request = upserts(run(ORM.format(control=control, status=status)), "ServiceRequest")[0]
    assert request.resource["status"] == expected
    assert request.mode == mode
    if mode == "existing":
        assert request.only == ("status",)


def test_status_change_without_status_is_101() -> None:
    with pytest.raises(MappingError) as raised:
        run(ORM.format(control="SC", status=""))
    assert (raised.value.code, raised.value.location) == ("101", "ORC^4^5")


def test_unknown_order_control_is_103() -> None:
    with pytest.raises(MappingError) as raised:
        run(ORM.format(control="ZZ", status=""))
    assert raised.value.code == "103"


def test_omi_accession_from_ipc() -> None:
    text = (
        msh("OMI^O23^OMI_O23", "2.5.1")
        + "PID|1||123^^^LTPK||Doe^Jane\r"
        + "ORC|NW|PL-7^RIS|||||||||||\r"
        + "OBR|1|PL-7^RIS||CT-HEAD^CT head^L\r"
        + "IPC|ACC-77^RIS|RP-1|1.2.3.4.5|SPS-1|CT\r"
    )
    resource = upserts(run(text), "ServiceRequest")[0].resource
    accession = [i for i in resource["identifier"] if i.get("type", {}).get("coding", [{}])[0].get(
        "code") == "ACSN"]  # fmt: skip
    assert accession[0]["value"] == "ACC-77"
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.5"} in resource["identifier"]


def test_modality_and_station_from_ipc_and_obr_24() -> None:
    omi = (
        msh("OMI^O23^OMI_O23", "2.5.1")
        + "PID|1||123^^^LTPK||Doe^Jane\r"
        + "ORC|NW|PL-8^RIS|||||||||||\r"
        + "OBR|1|PL-8^RIS||MR-HEAD^MR head^L\r"
        + "IPC|ACC-78^RIS|RP-2|1.2.3.4.6|SPS-2|MR^Magnetic resonance^DCM||||MRI01\r"
    )
    resource = upserts(run(omi), "ServiceRequest")[0].resource
    assert resource["category"] == [
        {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}]}
    ]
    assert resource["performer"] == [{"identifier": {"system": "urn:dicom:ae", "value": "MRI01"}}]
    # ORM^O01 carries the modality in OBR-24; table 0074's NMR is magnetic resonance (MR)
    orm = (
        msh("ORM^O01", "2.3.1")
        + "PID|1||123^^^LTPK||Doe^Jane\r"
        + "ORC|NW|PL-9^RIS\r"
        + segment("OBR", {1: "1", 2: "PL-9^RIS", 4: "70553^MRI Brain^C4", 24: "NMR"})
    )
    resource = upserts(run(orm), "ServiceRequest")[0].resource
    assert resource["category"][0]["coding"][0]["code"] == "MR"
    assert "performer" not in resource
    unknown = orm.replace("|NMR", "|XYZ")
    assert "category" not in upserts(run(unknown), "ServiceRequest")[0].resource


ORU = (
    msh("ORU^R01^ORU_R01")
    + "PID|1||123^^^LTPK||Šimkus^Jonas\r"
    + "ORC|RE|PL-1^RIS|FL-1^PACS\r"
    + segment(
        "OBR",
        {
            1: "1",
            2: "PL-1^RIS",
            3: "FL-1^PACS",
            4: "71020^Chest X-ray^C4",
            7: "20261122110000",
            18: "ACC-42",
            25: "F",
        },
    )
    + "OBX|1|TX|71020&GDT^Report^C4||Lungs are clear.||||||F\r"
    + "OBX|2|TX|71020&IMP^Impression^C4||No pneumonia.||||||F\r"
    + "OBX|3|NM|8867-4^Heart rate^LN||72|/min^per minute^UCUM|60-100|N|||F\r"
    + "OBX|4|CWE|8480-6^Finding^LN||260385009^Negative^SCT||||||P\r"
    + "OBX|5|SN|2345-7^Glucose^LN||<^5.5|mmol/L^mmol/L^UCUM||||F\r"
)


def test_oru_report_and_observations() -> None:
    translation = run(ORU)
    report = upserts(translation, "DiagnosticReport")[0].resource
    assert report["status"] == "final"
    assert report["code"]["coding"][0]["code"] == "71020"
    assert report["effectiveDateTime"] == "2026-11-22T11:00:00+02:00"
    assert report["conclusion"] == "No pneumonia."
    text = base64.b64decode(report["presentedForm"][0]["data"]).decode()
    assert text == "Lungs are clear.\nNo pneumonia."
    # the order by filler number first, then placer number, then accession number
    assert report["basedOn"][0]["reference"] == (
        "ServiceRequest?identifier=https://medbridge.example.org/hl7v2/authority/PACS|FL-1"
    )
    assert report["basedOn"][0]["identifier"]["value"] == "FL-1"
    assert report["imagingStudy"][0] == {
        "reference": "ImagingStudy?identifier=ACC-42",
        "type": "ImagingStudy",
        "identifier": {"value": "ACC-42"},
    }
    observations = [u.resource for u in upserts(translation, "Observation")]
    assert len(observations) == 3  # numeric, coded and structured numeric; text goes to the report
    assert observations[0]["valueQuantity"] == {
        "value": 72, "unit": "per minute", "system": "http://unitsofmeasure.org", "code": "/min",
    }  # fmt: skip
    assert observations[0]["referenceRange"] == [{"text": "60-100"}]
    assert observations[0]["interpretation"][0]["coding"][0]["code"] == "N"
    assert (
        observations[1]["valueCodeableConcept"]["coding"][0]["system"] == "http://snomed.info/sct"
    )
    assert observations[1]["status"] == "preliminary"
    assert observations[2]["valueQuantity"]["comparator"] == "<"
    assert observations[2]["valueQuantity"]["value"] == 5.5
    assert len(report["result"]) == 3
    kinds = [a.resource["resourceType"] for a in flat(translation)]
    assert kinds.index("Observation") < kinds.index("DiagnosticReport")


def test_oru_bad_number_is_102() -> None:
    bad = ORU.replace("||72|", "||seventy|")
    with pytest.raises(MappingError) as raised:
        run(bad)
    assert (raised.value.code, raised.value.location) == ("102", "OBX^7^5")


def test_a40_merge() -> None:
    text = msh("ADT^A40") + "PID|1||KEEP-1^^^LTPK||Doe^Jane\rMRG|OLD-1^^^LTPK\r"
    translation = run(text)
    merge = translation.actions[-1]
    assert isinstance(merge, Merge)
    assert merge.surviving == f"identifier={LTPK}|KEEP-1"
    assert merge.merged == f"identifier={LTPK}|OLD-1"
    with pytest.raises(MappingError) as raised:
        run(msh("ADT^A40") + "PID|1||KEEP-1^^^LTPK\rMRG|\r")
    assert raised.value.code == "101"


def test_worklist_procedure_ids_from_ipc_2_and_ipc_4() -> None:
    text = (
        msh("OMI^O23^OMI_O23", "2.5.1")
        + "PID|1||123^^^LTPK||Doe^Jane\r"
        + "ORC|NW|PL-8^RIS\r"
        + segment("OBR", {1: "1", 2: "PL-8^RIS", 4: "CT-HEAD^CT head^L", 19: "RP-OBR", 20: "S-OBR"})
        + "IPC|ACC-78^RIS|RP-8|1.2.3.4.6|SPS-8|CT\r"
    )
    identifiers = upserts(run(text), "ServiceRequest")[0].resource["identifier"]
    assert {"system": REQUESTED_PROCEDURE_ID, "value": "RP-8"} in identifiers
    assert {"system": SCHEDULED_PROCEDURE_STEP_ID, "value": "SPS-8"} in identifiers
    assert not [i for i in identifiers if i["value"] in ("RP-OBR", "S-OBR")]  # IPC first


def test_worklist_procedure_ids_from_obr_19_and_obr_20() -> None:
    obr = segment("OBR", {1: "1", 2: "PO-9^RIS", 4: "74177^CT abdomen^C4", 19: "RP-9", 20: "S9"})
    text = msh("ORM^O01", "2.3.1") + "PID|1||123^^^LTPK||Doe^Jane\rORC|NW|PO-9^RIS\r" + obr
    identifiers = upserts(run(text), "ServiceRequest")[0].resource["identifier"]
    assert {"system": REQUESTED_PROCEDURE_ID, "value": "RP-9"} in identifiers
    assert {"system": SCHEDULED_PROCEDURE_STEP_ID, "value": "S9"} in identifiers


def test_sender_default_issuer_for_patient_identifiers(tmp_path: Path) -> None:
    site = tmp_path / "authorities.yaml"
    site.write_text("senders:\n  RIS-HOSP: HOSP\nauthorities:\n  LOCAL: urn:local\n")
    tables = load_tables(site)
    assert tables.authorities["LOCAL"] == "urn:local"
    assert "senders" not in tables.authorities
    text = msh("ADT^A40") + "PID|1||KEEP-2~X-9^^^LTPK||Doe^Jane\rMRG|OLD-2\r"
    translation = translate(V2Message(text), tables)
    patient = upserts(translation, "Patient")[0]
    hosp = "https://medbridge.example.org/hl7v2/authority/HOSP"
    assert patient.resource["identifier"] == [
        {"system": hosp, "value": "KEEP-2"},  # no CX-4: the sender's authority
        {"system": LTPK, "value": "X-9"},  # its own authority wins
    ]
    merge = translation.actions[-1]
    assert isinstance(merge, Merge)
    assert merge.merged == f"identifier={hosp}|OLD-2"
    # without a `senders` row the sender-scoped system stays
    plain = upserts(run(msh("ADT^A08") + "PID|1||KEEP-2||Doe^Jane\r"), "Patient")[0]
    assert plain.resource["identifier"][0]["system"].startswith(
        "https://medbridge.example.org/hl7v2/sender/RIS-HOSP/"
    )
