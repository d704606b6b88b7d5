"""ORU^R01 pieces: order-number domains, OBX documents and UIDs, lab vs imaging OBR-18."""

from __future__ import annotations

import base64
import hashlib
from zoneinfo import ZoneInfo

import pytest
from pydantic import ValidationError

from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import V2Message
from mappings.hl7v2.reports import Document, document, order_domain, uid_kind
from mappings.hl7v2.tables import Tables, load_tables, parse_order_domains
from mappings.hl7v2.translate import REPORT_KEY, Report, Translation, Upsert, translate
from medbridge.settings import Settings
from tests.unit.mappings.test_hl7v2_translate import segment

DOMAIN = "https://medbridge.example.org/hl7v2/order-domain"
PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"


def msh(sender: str, facility: str, event: str = "ORU^R01^ORU_R01") -> str:
    return f"MSH|^~\\&|{sender}|{facility}|MB|MB|20261122101500||{event}|C1|P|2.5.1\r"


def run(text: str, tables: Tables | None = None) -> Translation:
    return translate(V2Message(text), tables, ZoneInfo("UTC"))


def report_of(translation: Translation) -> Report:
    [report] = [a for a in translation.actions if isinstance(a, Report)]
    return report


def of_type(report: Report, resource_type: str) -> list[Upsert]:
    return [a for a in report.actions if a.resource["resourceType"] == resource_type]


def oru(*obx: str, obr: dict[int, str] | None = None, sender: str = "RIS") -> str:
    fields = {1: "1", 2: "PL-1", 3: "F-1", 4: "71020^Chest X-ray^C4", 18: "ACC-1", 25: "F"}
    return (
        msh(sender, "HOSP")
        + "PID|1||123^^^LTPK||Doe^Jane\r"
        + segment("OBR", {**fields, **(obr or {})})
        + "".join(obx)
    )


def obx(number: int, value_type: str, code: str, value: str, sub_id: str = "") -> str:
    return segment("OBX", {1: str(number), 2: value_type, 3: code, 4: sub_id, 5: value, 11: "F"})


# order-number domains -----------------------------------------------------------------


def test_order_domains_setting_is_parsed() -> None:
    assert parse_order_domains(" radiology = HIS, RIS ; lab=LIS^LAB1 ") == {
        "HIS": "radiology",
        "RIS": "radiology",
        "LIS^LAB1": "lab",
    }
    assert parse_order_domains("") == {}
    for bad in ("HIS,RIS", "=HIS", "radiology="):
        with pytest.raises(ValueError, match="NAME=SENDER"):
            parse_order_domains(bad)


def test_malformed_order_domains_stop_the_settings() -> None:
    with pytest.raises(ValidationError, match="NAME=SENDER"):
        Settings(hl7_order_domains="HIS RIS")


def test_order_domain_configured_else_facility() -> None:
    domains = parse_order_domains("radiology=HIS,RIS^NORTH;lab=^LABS")
    header = V2Message(msh("RIS", "NORTH") + "PID|1||1\r").header
    assert order_domain(header, domains) == "radiology"
    assert order_domain(V2Message(msh("RIS", "SOUTH")).header, domains) == "facility-SOUTH"
    assert order_domain(V2Message(msh("HIS", "SOUTH")).header, domains) == "radiology"
    assert order_domain(V2Message(msh("ANY", "LABS")).header, domains) == "lab"
    assert order_domain(V2Message(msh("PACS", "")).header, {}) == "sender-PACS"


def test_his_order_and_ris_report_share_a_configured_domain() -> None:
    tables = load_tables(None, "radiology=HIS^EAST,RIS^WEST")
    order = (
        msh("HIS", "EAST", "ORM^O01")
        + "PID|1||123^^^LTPK||Doe^Jane\r"
        + "ORC|NW|PL-1\r"
        + segment("OBR", {1: "1", 2: "PL-1", 4: "71020^Chest X-ray^C4"})
    )
    [request] = [
        a for a in run(order, tables).actions
        if isinstance(a, Upsert) and a.resource["resourceType"] == "ServiceRequest"
    ]  # fmt: skip
    assert request.resource["identifier"][0]["system"] == f"{DOMAIN}/radiology"
    # the sender-scoped system of earlier versions still matches the stored order
    assert request.criteria == (
        f"identifier={DOMAIN}/radiology|PL-1,"
        "https://medbridge.example.org/hl7v2/sender/HIS-EAST/id|PL-1"
    )
    report = report_of(run(oru(obx(1, "TX", "R^Report^L", "Clear."), sender="RIS"), tables))
    # (the ORU's MSH-4 is HOSP, not WEST: the facility's own domain)
    assert report.base["system"] == f"{DOMAIN}/facility-HOSP"
    west = oru(obx(1, "TX", "R^Report^L", "Clear.")).replace("|RIS|HOSP|", "|RIS|WEST|")
    report = report_of(run(west, tables))
    assert report.base == {
        "system": f"{DOMAIN}/radiology",
        "value": "F-1",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "FILL"}]},
    }  # fmt: skip
    [diagnostic] = of_type(report, "DiagnosticReport")
    based_on = diagnostic.resource["basedOn"][0]["reference"]
    assert based_on.startswith(f"ServiceRequest?identifier={DOMAIN}/radiology|F-1,")
    # filler first, then placer, then accession, all in the domain
    assert [f.split("|")[1].split(",")[0] for f in report.fallbacks[based_on]] == [
        "PL-1",
        "ACC-1",
    ]


def test_report_actions_carry_the_report_key() -> None:
    report = report_of(run(oru(obx(1, "NM", "8867-4^Heart rate^LN", "72"))))
    [diagnostic] = of_type(report, "DiagnosticReport")
    assert diagnostic.criteria == f"identifier={DOMAIN}/facility-HOSP|{REPORT_KEY}"
    [observation] = of_type(report, "Observation")
    assert observation.resource["identifier"][0]["value"] == f"{REPORT_KEY}-obx1"
    assert report.fresh == "F-1^C1.1"
    assert report.code == "71020"
    assert report.correction is False
    corrected = report_of(run(oru(obr={25: "C"})))
    assert corrected.correction is True


# documents ---------------------------------------------------------------------------


def test_ed_pdf_becomes_binary_attachment_and_document_reference() -> None:
    data = base64.b64encode(PDF).decode()
    report = report_of(
        run(oru(obx(1, "TX", "R^Report^L", "Clear."),
                obx(2, "ED", "18748-4^Diagnostic Imaging Report^LN",
                    f"^Application^PDF^Base64^{data}")))
    )  # fmt: skip
    [binary] = of_type(report, "Binary")
    assert binary.resource == {"resourceType": "Binary", "contentType": "application/pdf",
                               "data": data}  # fmt: skip
    binary_id = binary.criteria.removeprefix("_id=")
    [diagnostic] = of_type(report, "DiagnosticReport")
    text, pdf = diagnostic.resource["presentedForm"]
    assert base64.b64decode(text["data"]) == b"Clear."
    assert pdf == {
        "contentType": "application/pdf",
        "url": f"Binary/{binary_id}",
        "size": len(PDF),
        "hash": base64.b64encode(hashlib.sha1(PDF, usedforsecurity=False).digest()).decode(),
        "title": "Diagnostic Imaging Report",
    }
    [reference] = of_type(report, "DocumentReference")
    resource = reference.resource
    assert resource["content"] == [{"attachment": pdf}]
    assert resource["status"] == "current"
    assert resource["docStatus"] == "final"
    assert resource["type"]["coding"][0]["code"] == "18748-4"
    assert resource["subject"] == diagnostic.resource["subject"]
    related = [r["reference"] for r in resource["context"]["related"]]
    assert related == [
        diagnostic.resource["basedOn"][0]["reference"],
        f"DiagnosticReport?{diagnostic.criteria}",
    ]
    # the same bytes again are the same Binary: its id is the content's
    again = report_of(run(oru(obx(5, "ED", "PDF^Report^L", f"^AP^PDF^Base64^{data}"))))
    assert of_type(again, "Binary")[0].criteria == binary.criteria


def test_document_encodings_and_pointers() -> None:
    def one(value_type: str, value: str) -> Document | None:
        return document(V2Message(oru(obx(1, value_type, "D^Doc^L", value))).all("OBX")[0])

    rtf = b"{\\rtf1 Clear.}"
    hexed = one("ED", "^TEXT^RTF^Hex^" + rtf.hex())
    assert hexed is not None
    assert (hexed.content_type, hexed.data) == ("text/rtf", rtf)
    pointer = one("RP", "https://pacs.example.org/reports/1.pdf^PACS^AP^PDF")
    assert pointer is not None
    assert pointer.url == "https://pacs.example.org/reports/1.pdf"
    assert one("RP", "file:///etc/passwd^^AP^PDF") is None  # never fetched, never linked
    assert one("ED", "109") is None  # a lab's ED holding a bare number is no document
    with pytest.raises(MappingError) as raised:
        one("ED", "^AP^PDF^Base64^not base64!")
    assert (raised.value.code, raised.value.location) == ("102", "OBX^4^5")  # the 4th segment


# UIDs, impression, lab OBR-18 ---------------------------------------------------------


def test_uids_are_not_report_text() -> None:
    segments = V2Message(
        oru(obx(1, "ST", "113014^DICOM Study^DCM", "1.2.3.4"),
            obx(2, "ST", "^Series Instance UID", "1.2.3.4.1"),
            obx(3, "ST", "^SR Instance UID", "1.2.3.4.1.1"),
            obx(4, "ST", "113014^DICOM Study^DCM", "not a uid"),
            obx(5, "TX", "R^Report^L", "1.2.3 is a version, not a UID OBX"))
    ).all("OBX")  # fmt: skip
    assert [uid_kind(s) for s in segments] == ["study", "series", "instance", None, None]
    message = oru(
        obx(1, "ST", "113014^DICOM Study^DCM", "1.2.3.4"),
        obx(2, "ST", "^SR Instance UID", "1.2.3.4.1.1"),
        obx(3, "TX", "R^Findings^L", "Normal heart."),
        obx(4, "TX", "R^Impression^L", "No disease.", sub_id="IMP"),
    )
    report = report_of(run(message))
    [diagnostic] = of_type(report, "DiagnosticReport")
    resource = diagnostic.resource
    text = base64.b64decode(resource["presentedForm"][0]["data"]).decode()
    assert text == "Normal heart.\nNo disease."
    assert resource["conclusion"] == "No disease."
    assert resource["imagingStudy"] == [{
        "reference": "ImagingStudy?identifier=urn:dicom:uid|urn:oid:1.2.3.4",
        "type": "ImagingStudy",
        "identifier": {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"},
    }]  # fmt: skip
    assert {"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4.1.1"} in resource["identifier"]


@pytest.mark.parametrize(
    ("section", "results", "imaging"),
    [
        ("LAB", [obx(1, "TX", "R^Report^L", "Text only")], False),
        ("CT", [obx(1, "NM", "8867-4^Heart rate^LN", "72")], True),
        ("", [obx(1, "NM", "2345-7^Glucose^LN", "5.4")], False),
        ("", [obx(1, "TX", "R^Report^L", "Clear.")], True),
        ("", [obx(1, "NM", "8867-4^HR^LN", "72"), obx(2, "TX", "R&IMP^Imp^L", "Ok.")], True),
    ],
)
def test_obr_18_is_an_accession_only_on_imaging_reports(
    section: str, results: list[str], imaging: bool
) -> None:
    report = report_of(run(oru(*results, obr={24: section})))
    [diagnostic] = of_type(report, "DiagnosticReport")
    resource = diagnostic.resource
    assert ("imagingStudy" in resource) is imaging
    assert any(i.get("value") == "ACC-1" for i in resource["identifier"]) is imaging
