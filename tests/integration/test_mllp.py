"""The MLLP listener of a running `medbridge serve`: real sockets, real store, FHIR reads.

Every test uses its own identifiers (`unique`), so tests share the session server.
"""

from __future__ import annotations

import asyncio
import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from hl7_bridge.client import MllpClient
from tests.support.servers import RunningServer

LTPK = "https://www.esveikata.lt/fhir/sid/asmens-kodas"
RIS = "https://medbridge.example.org/hl7v2/authority/RIS"
MLLP_SEND = Path(sys.executable).parent / "mllp_send"


def segment(name: str, fields: dict[int, str]) -> str:
    values = [""] * max(fields)
    for number, value in fields.items():
        values[number - 1] = value
    return "|".join([name, *values]) + "\r"


def msh(event: str, control: str, version: str = "2.5.1", charset: str = "") -> str:
    # keys are one less than the HL7 numbers: MSH-1 is the separator the join supplies
    return segment(
        "MSH",
        {1: "^~\\&", 2: "RIS", 3: "HOSP", 4: "MEDBRIDGE", 5: "MB", 6: "20261122101500",
         8: event, 9: control, 10: "P", 11: version, **({17: charset} if charset else {})},
    )  # fmt: skip


def adt(event: str, unique: str, patient: str, name: str = "Šimkutė^Rūta", extra: str = "") -> str:
    return (
        msh(f"ADT^{event}", f"{event}-{unique}", charset="UNICODE UTF-8")
        + segment("EVN", {1: event, 2: "20261122101500"})
        + segment("PID", {1: "1", 3: f"{patient}^^^LTPK^NI", 5: name, 7: "19870318", 8: "F"})
        + extra
    )


def orm(unique: str, patient: str, control: str, order: str, accession: str) -> str:
    return (
        msh("ORM^O01", f"ORM-{control}-{unique}", "2.3.1")
        + segment("PID", {1: "1", 3: f"{patient}^^^LTPK", 5: "Jonaitis^Petras"})
        + segment("ORC", {1: control, 2: f"{order}^RIS", 9: "20261122101000",
                          12: "D7^Ruta^Jurgita^^^Dr.^^^VLN"})
        + segment("OBR", {1: "1", 2: f"{order}^RIS", 4: "71020^Chest X-ray^C4", 18: accession,
                          27: "^^^20261123080000^^R"})
    )  # fmt: skip


async def send(server: RunningServer, *messages: str | bytes) -> list[str]:
    """Send on one connection, each waiting for its ACK; ACK texts."""
    client = await MllpClient.connect("127.0.0.1", server.mllp_port)
    try:
        acks = []
        for message in messages:
            raw = message.encode("utf-8") if isinstance(message, str) else message
            acks.append((await client.send(raw, 60)).decode("utf-8", "replace"))
        return acks
    finally:
        await client.close()


def msa(ack: str) -> list[str]:
    line = next(s for s in ack.split("\r") if s.startswith("MSA"))
    return line.split("|")


def err(ack: str) -> list[str]:
    line = next(s for s in ack.split("\r") if s.startswith("ERR"))
    return line.split("|")


def one(fhir: httpx.Client, resource_type: str, **query: str) -> dict[str, Any]:
    bundle = fhir.get(resource_type, params=query).json()
    assert bundle.get("total", len(bundle.get("entry", []))) == 1, bundle
    resource: dict[str, Any] = bundle["entry"][0]["resource"]
    return resource


def read(fhir: httpx.Client, reference: str) -> dict[str, Any]:
    resource: dict[str, Any] = fhir.get(reference).json()
    return resource


def archive(mongo: AsyncMongoClient[dict[str, Any]], server: RunningServer) -> Any:
    return mongo[server.database]["hl7_messages"]


async def test_adt_a01_creates_patient_and_encounter(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    extra = segment("PD1", {4: f"GP-{unique}^Petraitis^Jonas^^^^^^VLN"}) + segment(
        "PV1", {1: "1", 2: "I", 19: f"V-{unique}^^^VLN^VN", 44: "20261122100000"}
    )
    [ack] = await send(server, adt("A01", unique, f"P{unique}", extra=extra))
    assert msa(ack)[1:3] == ["AA", f"A01-{unique}"]
    patient = one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")
    assert patient["name"] == [{"family": "Šimkutė", "given": ["Rūta"]}]
    assert patient["birthDate"] == "1987-03-18"
    assert patient["gender"] == "female"
    practitioner = read(fhir, patient["generalPractitioner"][0]["reference"])
    assert practitioner["name"][0]["family"] == "Petraitis"
    encounter = one(fhir, "Encounter", identifier=f"V-{unique}")
    assert encounter["subject"]["reference"] == f"Patient/{patient['id']}"
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "IMP"


async def test_8859_4_and_8859_5_names_arrive_intact(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    baltic = adt("A08", f"b{unique}", f"B{unique}", "Žukauskienė^Ona").replace(
        "UNICODE UTF-8", "8859/4"
    )
    cyrillic = adt("A08", f"c{unique}", f"C{unique}", "Иванов^Пётр").replace(
        "UNICODE UTF-8", "8859/5"
    )
    acks = await send(server, baltic.encode("iso8859-4"), cyrillic.encode("iso8859-5"))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    assert one(fhir, "Patient", identifier=f"{LTPK}|B{unique}")["name"][0]["family"] == (
        "Žukauskienė"
    )
    assert one(fhir, "Patient", identifier=f"{LTPK}|C{unique}")["name"][0]["given"] == ["Пётр"]


async def test_updates_merge_and_never_duplicate(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    first = adt("A04", f"1{unique}", f"P{unique}")
    address = segment("PID", {1: "1", 3: f"P{unique}^^^LTPK~H{unique}^^^VLN^MR",
                              5: "Šimkutė^Rūta", 11: "Gedimino 1^^Vilnius^^01103^LT"})  # fmt: skip
    second = msh("ADT^A08", f"2{unique}") + address
    acks = await send(server, first, second)
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    patient = one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")
    assert patient["address"][0]["city"] == "Vilnius"
    assert patient["birthDate"] == "1987-03-18"  # kept from the first message
    assert {i["value"] for i in patient["identifier"]} == {f"P{unique}", f"H{unique}"}
    assert patient["meta"]["versionId"] == "2"


async def test_resend_returns_original_ack_and_applies_once(
    server: RunningServer,
    fhir: httpx.Client,
    unique: str,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> None:
    message = adt("A08", unique, f"P{unique}")
    first, again = await send(server, message, message)
    assert first == again
    patient = one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")
    assert patient["meta"]["versionId"] == "1"
    documents = [d async for d in archive(mongo, server).find({"control_id": f"A08-{unique}"})]
    assert sorted(d["status"] for d in documents) == ["duplicate", "processed"]
    processed = next(d for d in documents if d["status"] == "processed")
    assert processed["raw"] == message.encode()
    assert processed["ack"] == first.encode()
    assert processed["references"] == [f"Patient/{patient['id']}/_history/1"]
    assert processed["peer"].startswith("127.0.0.1:")


async def test_same_control_id_other_payload_is_ae_205(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    first = adt("A08", unique, f"P{unique}", "Doe^Jane")
    other = adt("A08", unique, f"P{unique}", "Roe^Richard")
    acks = await send(server, first, other)
    assert msa(acks[0])[1] == "AA"
    assert msa(acks[1])[1:3] == ["AE", f"A08-{unique}"]
    assert err(acks[1])[3] == "205^Duplicate key identifier^HL70357"
    assert one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")["name"][0]["family"] == "Doe"


async def test_order_lifecycle(server: RunningServer, fhir: httpx.Client, unique: str) -> None:
    order = f"PL-{unique}"
    acks = await send(
        server,
        orm(unique, f"P{unique}", "NW", order, f"ACC-{unique}"),
        orm(unique, f"P{unique}", "CA", order, f"ACC-{unique}"),
    )
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    request = one(fhir, "ServiceRequest", identifier=f"{RIS}|{order}")
    assert request["status"] == "revoked"
    assert request["code"]["coding"][0]["code"] == "71020"
    assert request["priority"] == "routine"
    accession = [i for i in request["identifier"] if i.get("type", {}).get("coding", [{}])[0].get(
        "code") == "ACSN"]  # fmt: skip
    assert accession[0]["value"] == f"ACC-{unique}"
    requester = read(fhir, request["requester"]["reference"])
    assert requester["resourceType"] == "Practitioner"
    patient = one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")
    assert request["subject"]["reference"] == f"Patient/{patient['id']}"


async def test_cancel_of_unknown_order_is_ae_204_and_dead_lettered(
    server: RunningServer,
    mongo: AsyncMongoClient[dict[str, Any]],
    unique: str,
) -> None:
    [ack] = await send(server, orm(unique, f"P{unique}", "CA", f"NONE-{unique}", "X"))
    assert msa(ack)[1] == "AE"
    # v2.3.1: the location and code share ERR-1
    assert err(ack)[1] == "ORC^3^2^204&Unknown key identifier&HL70357"
    document = await archive(mongo, server).find_one({"control_id": f"ORM-CA-{unique}"})
    assert document is not None
    assert document["status"] == "dead-letter"
    assert document["err3"] == "204"
    assert "no ServiceRequest matches" in document["reason"]


async def test_report_links_order_and_study(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    order = f"PL-{unique}"
    report = (
        msh("ORU^R01^ORU_R01", f"ORU-{unique}")
        + segment("PID", {1: "1", 3: f"P{unique}^^^LTPK"})
        + segment("OBR", {1: "1", 2: f"{order}^RIS", 3: f"F-{unique}^PACS",
                          4: "71020^Chest X-ray^C4", 18: f"ACC-{unique}", 25: "F"})
        + segment("OBX", {1: "1", 2: "TX", 3: "71020&IMP^Impression^C4", 5: "No pneumonia.",
                          11: "F"})
        + segment("OBX", {1: "2", 2: "NM", 3: "8867-4^Heart rate^LN", 5: "72",
                          6: "/min^per minute^UCUM", 11: "F"})
    )  # fmt: skip
    acks = await send(server, orm(unique, f"P{unique}", "NW", order, f"ACC-{unique}"), report)
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    request = one(fhir, "ServiceRequest", identifier=f"{RIS}|{order}")
    diagnostic = one(fhir, "DiagnosticReport", identifier=f"F-{unique}")
    assert diagnostic["status"] == "final"
    assert diagnostic["basedOn"][0]["reference"] == f"ServiceRequest/{request['id']}"
    # no ImagingStudy yet: a logical reference by accession, resolvable when it arrives
    assert diagnostic["imagingStudy"][0]["identifier"]["value"] == f"ACC-{unique}"
    assert "reference" not in diagnostic["imagingStudy"][0]
    assert diagnostic["conclusion"] == "No pneumonia."
    assert base64.b64decode(diagnostic["presentedForm"][0]["data"]) == b"No pneumonia."
    observation = read(fhir, diagnostic["result"][0]["reference"])
    assert observation["valueQuantity"]["value"] == 72
    assert observation["subject"] == diagnostic["subject"]


async def test_a40_merge_repoints_references(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    visit = segment("PV1", {1: "1", 2: "O", 19: f"V-{unique}^^^VLN^VN"})
    merge = (
        msh("ADT^A40", f"A40-{unique}")
        + segment("PID", {1: "1", 3: f"NEW{unique}^^^LTPK", 5: "Šimkutė^Rūta"})
        + segment("MRG", {1: f"OLD{unique}^^^LTPK"})
    )
    acks = await send(
        server,
        adt("A04", f"o{unique}", f"OLD{unique}", extra=visit),
        orm(unique, f"OLD{unique}", "NW", f"PL-{unique}", f"ACC-{unique}"),
        adt("A04", f"n{unique}", f"NEW{unique}"),
        merge,
    )
    assert [msa(a)[1] for a in acks] == ["AA"] * 4
    old = one(fhir, "Patient", identifier=f"{LTPK}|OLD{unique}")
    new = one(fhir, "Patient", identifier=f"{LTPK}|NEW{unique}")
    assert old["active"] is False
    assert old["link"] == [{"other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"}]
    assert new["link"] == [{"other": {"reference": f"Patient/{old['id']}"}, "type": "replaces"}]
    encounter = one(fhir, "Encounter", identifier=f"V-{unique}")
    assert encounter["subject"]["reference"] == f"Patient/{new['id']}"
    request = one(fhir, "ServiceRequest", identifier=f"{RIS}|PL-{unique}")
    assert request["subject"]["reference"] == f"Patient/{new['id']}"


async def test_unsupported_and_unparseable_are_ar(server: RunningServer, unique: str) -> None:
    acks = await send(
        server,
        msh("SIU^S12", f"S-{unique}") + segment("SCH", {1: "1"}),
        msh("ADT^A08", f"V-{unique}", "9.9") + segment("PID", {3: "1^^^LTPK"}),
        "PID|1||nothing\r",
    )
    assert [msa(a)[1] for a in acks] == ["AR", "AR", "AR"]
    assert [err(a)[3].split("^")[0] for a in acks] == ["200", "203", "100"]


async def test_twenty_concurrent_connections(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    async def sender(n: int) -> list[str]:
        messages = [
            orm(f"{unique}-{n}-{k}", f"P{unique}-{n}", "NW", f"PL-{unique}-{n}-{k}", f"A{n}{k}")
            for k in range(3)
        ]
        return await send(server, *messages)

    results = await asyncio.gather(*(sender(n) for n in range(20)))
    assert [msa(a)[1] for acks in results for a in acks] == ["AA"] * 60
    for n in (0, 7, 19):
        one(fhir, "Patient", identifier=f"{LTPK}|P{unique}-{n}")
        for k in range(3):
            one(fhir, "ServiceRequest", identifier=f"{RIS}|PL-{unique}-{n}-{k}")


def test_python_hl7_mllp_send_as_client(
    server: RunningServer, fhir: httpx.Client, unique: str, tmp_path: Path
) -> None:
    file = tmp_path / "adt.hl7"
    file.write_bytes(adt("A08", unique, f"P{unique}").replace("\r", "\r\n").encode())
    completed = subprocess.run(
        [str(MLLP_SEND), "--loose", "--file", str(file), "--port", str(server.mllp_port),
         "127.0.0.1"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    output = completed.stdout.decode()
    assert f"MSA|AA|A08-{unique}" in output
    assert one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")["gender"] == "female"


def test_medbridge_hl7_send_prints_acks(server: RunningServer, unique: str, tmp_path: Path) -> None:
    file = tmp_path / "two.hl7"
    text = adt("A08", f"1{unique}", f"P{unique}") + adt("A28", f"2{unique}", f"P{unique}")
    file.write_bytes(text.replace("\r", "\n").encode())
    completed = subprocess.run(
        [sys.executable, "-m", "medbridge", "hl7", "send", str(file),
         "--port", str(server.mllp_port)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    output = completed.stdout.decode()
    assert f"MSA|AA|A08-1{unique}" in output
    assert f"MSA|AA|A28-2{unique}" in output
