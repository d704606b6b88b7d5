"""Messages written by other systems (tests/data/hl7, provenance in SOURCES.md), sent
byte-exact over MLLP to the running server; each answer and each stored resource checked.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from hl7_bridge.charset import decode
from hl7_bridge.client import MllpClient
from mappings.dicom.worklist_identifiers import REQUESTED_PROCEDURE_ID, SCHEDULED_PROCEDURE_STEP_ID
from mappings.hl7v2.message import V2Message
from mappings.hl7v2.translate import Upsert, translate
from tests.support.servers import RunningServer

DATA = Path(__file__).parent.parent / "data" / "hl7"
# file -> MSA-1 expected. Two senders ask for no ACK (MSH-15/16 NE); they get one anyway,
# as MEDBRIDGE_HL7_HONOR_NO_ACK is off by default.
EXPECTED = {
    "adt-a01_v2.3.1_v2tofhir-vhis-simple-admit.hl7": "AA",
    "adt-a01_v2.3_fhirconv-bom-trailing-spaces.hl7": "AA",
    "adt-a04_v2.3.1_v2tofhir-allergies.hl7": "AA",
    "adt-a04_v2.3_fhirconv-bom.hl7": "AA",
    "adt-a04_v2.3_v2tofhir-redox.hl7": "AA",
    "adt-a08_v2.3_v2tofhir-cr-only.hl7": "AA",
    "adt-a40_v2.3_v2tofhir-redox-merge.hl7": "AA",
    "adt-a40_v2.5.1_v2tofhir-vhis-merge.hl7": "AE",  # MRG-1 names a patient never sent
    "orm-o01_v2.3.1_v2tofhir-ihe-rad4-zds.hl7": "AA",
    "orm-o01_v2.3_fhirconv-lab.hl7": "AA",
    "oru-r01_v2.3.1_v2tofhir-lab-panel.hl7": "AA",
    "oru-r01_v2.4_fhirconv-hl7-standard-glucose.hl7": "AA",
    "oru-r01_v2.5.1_v2tofhir-lri-basic.hl7": "AA",
    "oru-r01_v2.5_fhirconv-lab-multi-obr-spm.hl7": "AA",
    "oru-r01_v2.5.1_dcm4che-pdf.hl7": "AA",
    "siu-s12_v2.3_v2tofhir-new-appointment-cr-only.hl7": "AR",  # scheduling: not accepted
    "siu-s12_v2.3_v2tofhir-redox.hl7": "AR",
}
# The redox A40 merges MRN 53700 away: that patient is sent first, as its sender would have.
PRIOR = (
    "MSH|^~\\&|REDOX|RDX|||20190504180000||ADT^A04|prior-53700|T|2.3\r"
    "PID|||53700^^^MR||Bixby^Tim||20080106|M\r"
)


def test_every_sample_has_an_expectation() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in DATA.glob("*.hl7"))


async def _send(server: RunningServer, raw: bytes) -> str:
    client = await MllpClient.connect("127.0.0.1", server.mllp_port)
    try:
        return (await client.send(raw, 60)).decode(decode(raw).codec, "replace")
    finally:
        await client.close()


def _fields(resource: dict[str, Any]) -> dict[str, Any]:
    wanted = ("name", "birthDate", "gender", "code", "status", "intent", "valueQuantity")
    return {key: resource[key] for key in wanted if key in resource}


def send(server: RunningServer, raw: bytes) -> str:
    return asyncio.run(_send(server, raw))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample(server: RunningServer, fhir: httpx.Client, name: str) -> None:
    raw = (DATA / name).read_bytes()
    if name.startswith("adt-a40_v2.3"):
        send(server, PRIOR.encode())
    ack = send(server, raw)
    msa = next(s for s in ack.split("\r") if s.startswith("MSA")).split("|")
    message = V2Message(decode(raw).text)
    assert msa[1:3] == [EXPECTED[name], message.header.control_id], ack
    if EXPECTED[name] != "AA":
        assert "\rERR|" in ack
        return
    translation = translate(V2Message(decode(raw).text))
    for action in translation.actions:
        if not isinstance(action, Upsert) or action.mode != "upsert":
            continue
        resource_type = action.resource["resourceType"]
        key, _, value = action.criteria.partition("=")
        bundle = fhir.get(resource_type, params={key: value}).json()
        assert len(bundle.get("entry", [])) == 1, (resource_type, action.criteria)
        stored = bundle["entry"][0]["resource"]
        expected = _fields(action.resource)
        if resource_type == "Patient" and name.startswith("adt-a40"):
            expected.pop("name", None)  # the PRIOR patient's merge does not rename
        assert {k: stored[k] for k in expected} == expected, resource_type


def test_cr_only_sample_fields(server: RunningServer, fhir: httpx.Client) -> None:
    raw = (DATA / "adt-a08_v2.3_v2tofhir-cr-only.hl7").read_bytes()
    send(server, raw)
    system = "https://medbridge.example.org/hl7v2/sender/Ntierprise-Ntierprise-Clinic/id"
    bundle = fhir.get("Patient", params={"identifier": f"{system}|151"}).json()
    patient = bundle["entry"][0]["resource"]
    assert patient["name"] == [{"family": "Bond", "given": ["Tiny"]}]
    assert patient["birthDate"] == "1999-07-23"
    assert patient["address"][0]["line"] == ["8388 Secret Agent Way"]
    assert patient["address"][0]["city"] == "Raleigh"


def test_ihe_radiology_order_fields(server: RunningServer, fhir: httpx.Client) -> None:
    raw = (DATA / "orm-o01_v2.3.1_v2tofhir-ihe-rad4-zds.hl7").read_bytes()
    send(server, raw)
    system = "https://medbridge.example.org/hl7v2/authority/MESA_ORDPLC"
    bundle = fhir.get("ServiceRequest", params={"identifier": f"{system}|POISCVEP1"}).json()
    request = bundle["entry"][0]["resource"]
    codes = {i.get("type", {}).get("coding", [{}])[0].get("code"): i["value"]
             for i in request["identifier"]}  # fmt: skip
    assert codes["ACSN"] == "ACCISCVEP1"
    systems = {i.get("system"): i["value"] for i in request["identifier"]}
    assert systems["urn:dicom:uid"] == "urn:oid:1.2.567.26724.09515.3478.822.0123673"  # ZDS-1
    # IHE RAD-4 in v2.3.1: OBR-19 Requested Procedure ID, OBR-20 Scheduled Procedure Step ID
    assert systems[REQUESTED_PROCEDURE_ID] == "Radiology"
    assert systems[SCHEDULED_PROCEDURE_STEP_ID] == "FOISCVEP1"
    assert request["status"] == "active"
    assert request["requester"]["display"] == "DR JAIME ESTRADA"
    subject = fhir.get(request["subject"]["reference"]).json()
    assert subject["name"][0]["family"] == "LNISCVEP1"
