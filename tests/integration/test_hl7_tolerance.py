"""HL7 tolerance where it is safe, and reprocessing, over real MLLP against `serve`.

Issue 11 (tolerance, `""`, offsets, ADT as source of demographics, resend after AE,
`hl7 replay` through the running server) and issue 17 L4 (broken MLLP frame ends).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient, MongoClient

from hl7_bridge.framing import END, START
from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_mllp import (
    LTPK,
    RIS,
    adt,
    archive,
    err,
    msa,
    msh,
    one,
    orm,
    segment,
    send,
)
from tests.support.servers import RunningServer, start_server

LAB_ORU = Path(__file__).parents[1] / "data" / "hl7" / "oru-r01_v2.5.1_v2tofhir-lri-basic.hl7"


def lab_report(unique: str, birth_date: str) -> bytes:
    """The NIST LRI lab report with unique keys and the given PID-7."""
    text = LAB_ORU.read_bytes().decode("utf-8")
    for old, new in (
        ("NIST-LOI_5.0_1.1-NG", f"LRI-{unique}"),
        ("PATID5421", f"PAT{unique}"),
        ("ORD448811", f"ORD{unique}"),
        ("R-511", f"R{unique}"),
        ("|19820304|", f"|{birth_date}|"),
    ):
        assert old in text
        text = text.replace(old, new)
    return text.encode("utf-8")


def search(fhir: httpx.Client, resource_type: str, **query: str) -> list[dict[str, Any]]:
    bundle = fhir.get(resource_type, params={**query, "_count": "100"}).json()
    return [entry["resource"] for entry in bundle.get("entry", [])]


async def test_lab_report_with_malformed_birth_date_is_applied_with_a_warning(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    [ack] = await send(server, lab_report(unique, "01/10/1948^53 Y"))
    assert msa(ack)[1:3] == ["AA", f"LRI-{unique}"]
    warning = err(ack)
    assert warning[2] == "PID^2^7"  # ERR-2: the field dropped
    assert warning[3] == "102^Data type error^HL70357"  # ERR-3
    assert warning[4] == "W"  # ERR-4: severity warning, the message was applied
    patient = one(fhir, "Patient", identifier=f"PAT{unique}")
    assert "birthDate" not in patient
    assert patient["name"][0]["family"] == "Wilson"
    assert patient["gender"] == "female"
    assert patient["address"][0]["city"] == "Los Angeles"
    report = one(fhir, "DiagnosticReport", subject=f"Patient/{patient['id']}")
    assert report["code"]["coding"][0]["code"] == "1000"
    results = search(fhir, "Observation", subject=f"Patient/{patient['id']}")
    assert len(results) == 3
    quantity = next(o["valueQuantity"] for o in results if "valueQuantity" in o)
    assert (quantity["value"], quantity["code"]) == (0.7, "[IU]/mL")


async def test_bad_value_in_a_key_field_keeps_ae(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    text = lab_report(unique, "19820304").replace(b"||0.70|", b"||zero point seven|")
    [ack] = await send(server, text)
    assert msa(ack)[1] == "AE"
    error = err(ack)
    assert (error[2], error[3], error[4]) == ("OBX^7^5", "102^Data type error^HL70357", "E")
    assert search(fhir, "Patient", identifier=f"PAT{unique}") == []  # nothing applied


def pid(unique: str, **fields: str) -> str:
    numbered = {int(k[1:]): v for k, v in fields.items()}
    return segment("PID", {1: "1", 3: f"P{unique}^^^LTPK", **numbered})


async def test_explicit_null_clears_fields(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    first = msh("ADT^A04", f"N1-{unique}") + pid(
        unique, f5="Doe^Jane", f7="19480110", f11="Gedimino 1^^Vilnius^^01103^LTU", f13="5551234"
    )
    second = msh("ADT^A08", f"N2-{unique}") + pid(
        unique, f5="Doe^Jane", f7='""', f11='Gedimino 1^^Vilnius^^01103^""', f13='""'
    )
    acks = await send(server, first, second)
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    patient = one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")
    assert patient["address"] == [
        {"line": ["Gedimino 1"], "city": "Vilnius", "postalCode": "01103"}
    ]  # no `"country": "\"\""`
    assert "birthDate" not in patient
    assert "telecom" not in patient
    assert patient["name"] == [{"family": "Doe", "given": ["Jane"]}]


async def test_time_without_offset_takes_msh7_offset(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    header = msh("ADT^A01", f"TZ-{unique}").replace("20261122101500", "20261122101500-0500")
    message = (
        header
        + pid(unique, f5="Doe^Jane")
        + segment("PV1", {1: "1", 2: "O", 19: f"V{unique}^^^VLN^VN", 44: "20261122093000",
                          45: "20261122113000+0200"})
    )  # fmt: skip
    [ack] = await send(server, message)
    assert msa(ack)[1] == "AA"
    encounter = one(fhir, "Encounter", identifier=f"V{unique}")
    assert encounter["period"]["start"] == "2026-11-22T09:30:00-05:00"
    assert encounter["period"]["end"] == "2026-11-22T11:30:00+02:00"  # its own offset kept


async def test_order_does_not_overwrite_the_name_from_adt(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    order = f"PL-{unique}"
    acks = await send(
        server,
        adt("A01", unique, f"P{unique}", "SILVERHEELS^JAY"),
        orm(unique, f"P{unique}", "NW", order, f"ACC-{unique}"),  # PID-5 Jonaitis^Petras
    )
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    patient = one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")
    assert patient["name"] == [{"family": "SILVERHEELS", "given": ["JAY"]}]
    assert patient["birthDate"] == "1987-03-18"
    request = one(fhir, "ServiceRequest", identifier=f"{RIS}|{order}")
    assert request["subject"]["reference"] == f"Patient/{patient['id']}"


async def test_order_for_a_new_patient_still_creates_it(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    [ack] = await send(server, orm(unique, f"P{unique}", "NW", f"PL-{unique}", "A1"))
    assert msa(ack)[1] == "AA"
    patient = one(fhir, "Patient", identifier=f"{LTPK}|P{unique}")
    assert patient["name"] == [{"family": "Jonaitis", "given": ["Petras"]}]


def merge_message(unique: str) -> str:
    return (
        msh("ADT^A40", f"A40-{unique}")
        + segment("EVN", {1: "A40", 2: "20261122101500"})
        + segment("PID", {1: "1", 3: f"NEW{unique}^^^LTPK", 5: "Šimkutė^Rūta"})
        + segment("MRG", {1: f"OLD{unique}^^^LTPK"})
    )


async def test_resend_after_ae_is_processed_again(
    server: RunningServer,
    fhir: httpx.Client,
    unique: str,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> None:
    merge = merge_message(unique)
    [refused] = await send(server, merge)
    assert msa(refused)[1] == "AE"  # MRG-1 names a patient that does not exist yet
    assert err(refused)[3].startswith("204^")
    acks = await send(server, adt("A04", f"o{unique}", f"OLD{unique}"), merge)
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]  # the unchanged resend is applied
    old = one(fhir, "Patient", identifier=f"{LTPK}|OLD{unique}")
    new = one(fhir, "Patient", identifier=f"{LTPK}|NEW{unique}")
    assert old["active"] is False
    assert old["link"] == [{"other": {"reference": f"Patient/{new['id']}"}, "type": "replaced-by"}]
    [again] = await send(server, merge)  # applied now: a further resend is deduplicated
    assert again == acks[1]
    documents = [d async for d in archive(mongo, server).find({"control_id": f"A40-{unique}"})]
    statuses = sorted(d["status"] for d in documents)
    assert statuses == ["duplicate", "duplicate", "processed"]
    first = next(d for d in documents if d["status"] == "processed")
    assert first["attempts"] == 2


async def read_acks(reader: asyncio.StreamReader, count: int) -> list[str]:
    data = b""
    while data.count(END) < count:
        chunk = await asyncio.wait_for(reader.read(65536), 30)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    return [part.lstrip(START).decode() for part in data.split(END)[:count]]


async def test_frame_ending_in_fs_without_cr_is_ar_and_the_next_frame_gets_its_ack(
    server: RunningServer,
    fhir: httpx.Client,
    unique: str,
    mongo: AsyncMongoClient[dict[str, Any]],
) -> None:
    broken = adt("A08", f"fs{unique}", f"FS{unique}").encode()
    normal = adt("A08", f"ok{unique}", f"OK{unique}").encode()
    inner = adt("A08", f"vt{unique}", f"VT{unique}").encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.mllp_port)
    try:
        writer.write(START + broken + b"\x1c" + START + normal + END)
        writer.write(START + inner + START + normal.replace(b"ok", b"o2") + END)
        await writer.drain()
        acks = await read_acks(reader, 4)
    finally:
        writer.close()
    assert [msa(a)[1:3] for a in acks] == [
        ["AR", f"A08-fs{unique}"], ["AA", f"A08-ok{unique}"],
        ["AR", f"A08-vt{unique}"], ["AA", f"A08-o2{unique}"],
    ]  # fmt: skip
    assert err(acks[0])[3] == "207^Application internal error^HL70357"
    assert "0x1C without 0x0D" in err(acks[0])[8]
    assert "start block" in err(acks[2])[8]
    assert search(fhir, "Patient", identifier=f"{LTPK}|FS{unique}") == []
    patient = one(fhir, "Patient", identifier=f"{LTPK}|OK{unique}")
    assert patient["identifier"][0]["value"] == f"OK{unique}"  # no control bytes in it
    kept = await archive(mongo, server).find_one({"control_id": f"A08-fs{unique}"})
    assert kept is not None
    assert (kept["status"], kept["raw"]) == ("rejected", broken)  # raw message kept


def replay_command(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "medbridge", "hl7", "replay", *args],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip


def test_replay_failed_goes_through_the_running_server(
    tmp_path: Path, store: EmbeddedMongo, unique: str
) -> None:
    # a server of its own: `--failed` replays every dead letter of its database
    data_dir = tmp_path / "data"
    server = start_server(data_dir, store.uri)
    try:
        order = f"PL-{unique}"
        cancel = orm(unique, f"P{unique}", "CA", order, f"ACC-{unique}")
        [refused] = asyncio.run(send(server, cancel))
        assert msa(refused)[1] == "AE"  # the order to cancel is not known yet
        [created] = asyncio.run(send(server, orm(unique, f"P{unique}", "NW", order, "A1")))
        assert msa(created)[1] == "AA"
        # no --mongodb-uri: without going through the server, the command would start an
        # embedded store of its own in data_dir and find nothing to replay
        completed = replay_command("--failed", "--data-dir", str(data_dir))
        assert completed.returncode == 0, completed.stderr.decode()[-2000:]
        client: MongoClient[dict[str, Any]] = MongoClient(store.uri)
        try:
            messages = client[server.database]["hl7_messages"]
            dead = messages.find_one({"control_id": f"ORM-CA-{unique}"})
            assert dead is not None
            assert completed.stdout.decode().strip() == f"{dead['_id']}: AA"
            assert (dead["status"], dead["attempts"]) == ("processed", 2)
        finally:
            client.close()
        with httpx.Client(base_url=server.fhir_base, timeout=30.0) as fhir:
            request = one(fhir, "ServiceRequest", identifier=f"{RIS}|{order}")
        assert request["status"] == "revoked"
        unknown = replay_command("no-such-id", "--data-dir", str(data_dir))
        assert unknown.returncode == 1
        assert b"no-such-id: no such archived message" in unknown.stderr
        elsewhere = replay_command("--failed", "--data-dir", str(data_dir), "--database", "other")
        assert elsewhere.returncode == 1  # the server serves another database: refused
        assert b"not 'other'" in elsewhere.stderr
    finally:
        server.stop()
