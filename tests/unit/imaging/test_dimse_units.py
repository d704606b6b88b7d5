"""imaging.dimse pieces alone: peers table, matching, status mapping, worklist records."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from access.errors import AccessError
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.config import DimseConfig, Peer, PeersFileError, load_peers
from imaging.dimse.matching import matches
from imaging.dimse.query import parse_identifier
from imaging.dimse.status import (
    CANNOT_UNDERSTAND,
    OUT_OF_RESOURCES,
    UNABLE_TO_PROCESS,
    attempt,
)
from imaging.dimse.worklist import build_record, parse_worklist, record_matches
from mappings.dicom.worklist_identifiers import (
    REQUESTED_PROCEDURE_ID,
    SCHEDULED_PROCEDURE_STEP_ID,
)


def test_peers_from_yaml_and_json(tmp_path: Path) -> None:
    yaml_file = tmp_path / "peers.yaml"
    yaml_file.write_text(
        "peers:\n  - {ae_title: CT01, host: 10.0.0.5, port: 104, services: [store, worklist]}\n"
    )
    json_file = tmp_path / "peers.json"
    json_file.write_text('[{"ae_title": "PACS", "host": "pacs", "port": 11112}]')
    ct = load_peers(yaml_file)["CT01"]
    assert (ct.host, ct.port, ct.services) == ("10.0.0.5", 104, frozenset({"store", "worklist"}))
    pacs = load_peers(json_file)["PACS"]
    assert "move" in pacs.services
    assert load_peers(None) == {}


@pytest.mark.parametrize(
    "text",
    [
        "peers: [{host: x}]",
        "peers: [{ae_title: WAY-TOO-LONG-AE-TITLE}]",
        "peers: [{ae_title: A, services: [teleport]}]",
        "peers: [{ae_title: A, port: 70000}]",
        "peers: {ae_title: A}",
        "peers: [unclosed",
    ],
)
def test_bad_peers_files_are_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "peers.yaml"
    path.write_text(text)
    with pytest.raises(PeersFileError):
        load_peers(path)


def test_open_and_closed_servers() -> None:
    peers = {"CT01": Peer("CT01", services=frozenset({"store"}))}
    closed = DimseConfig(peers=peers, open=False)
    assert closed.allows("CT01", "store")
    assert not closed.allows("CT01", "find")
    assert not closed.allows("STRANGER", "echo")
    opened = DimseConfig(peers=peers, open=True)
    assert opened.allows("STRANGER", "find")
    assert not opened.allows("STRANGER", "move")  # moving data out needs a listed peer
    assert opened.handler_timeout < opened.dimse_timeout


@pytest.mark.parametrize(
    ("wanted", "value", "vr", "expected"),
    [
        ("", "anything", "LO", True),
        ("*", None, "LO", True),
        ("ABC", "ABC", "LO", True),
        ("ABC", "ABCD", "LO", False),
        ("AB*", "ABCD", "LO", True),
        ("A?C", "ABC", "LO", True),
        ("A?C", "ABBC", "LO", False),
        ("doe^j*", "DOE^JOHN", "PN", True),
        ("20200101-20201231", "20200615", "DA", True),
        ("20200101-20201231", "20210101", "DA", False),
        ("-20200101", "20191231", "DA", True),
        ("20200101-", "20191231", "DA", False),
        ("0900-1000", "093000", "TM", True),
        ("1.2.3\\1.2.4", "1.2.4", "UI", True),
        ("1.2.3\\1.2.4", "1.2.5", "UI", False),
        ("CT\\MR", "MR", "CS", True),
        ("CT", None, "CS", False),
    ],
)
def test_matching_rules(wanted: str, value: str | None, vr: str, expected: bool) -> None:
    assert matches(wanted, value, vr) is expected


def test_attempt_maps_errors_to_statuses() -> None:
    with attempt("test") as answer:
        raise AccessError("MB-3002")
    assert answer.status == 0xA900
    assert answer.code == "MB-3002"
    with attempt("test") as answer:
        raise TimeoutError
    assert answer.status == OUT_OF_RESOURCES
    with attempt("test", UNABLE_TO_PROCESS) as answer:
        raise KeyError("boom")
    assert answer.status == UNABLE_TO_PROCESS
    with attempt("test") as answer:
        raise ValueError("boom")
    assert answer.status == CANNOT_UNDERSTAND
    with attempt("test") as answer:
        pass
    assert answer.status == 0


def test_bridge_runs_on_the_loop_and_times_out() -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        bridge = LoopBridge(loop, timeout=0.5)

        async def which_loop() -> bool:
            return asyncio.get_running_loop() is loop

        assert bridge.run(which_loop())
        with pytest.raises(TimeoutError):
            bridge.run(asyncio.sleep(5))
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_identifier_levels_and_keys() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = "1.2.3"
    identifier.Modality = "CT"
    identifier.SeriesDescription = ""
    query = parse_identifier(identifier, "study")
    assert query.level == "SERIES"
    assert [m.keyword for m in query.matches["STUDY"]] == ["StudyInstanceUID"]
    assert [m.keyword for m in query.matches["SERIES"]] == ["Modality"]
    assert [e.keyword for e in query.returned] == [
        "Modality", "SeriesDescription", "StudyInstanceUID",
    ]  # fmt: skip
    identifier.QueryRetrieveLevel = "PATIENT"
    with pytest.raises(AccessError) as raised:
        parse_identifier(identifier, "study")
    assert raised.value.code == "MB-4002"
    assert parse_identifier(identifier, "patient").level == "PATIENT"


ORDER = {
    "resourceType": "ServiceRequest",
    "id": "order-with-a-rather-long-id",
    "status": "active",
    "identifier": [
        {"type": {"coding": [{"code": "ACSN"}]}, "value": "ACC1"},
        {"system": "urn:dicom:uid", "value": "urn:oid:1.2.840.99"},
    ],
    "category": [{"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM",
                              "code": "MR"}]}],
    "code": {"coding": [{"system": "http://loinc.org", "code": "1", "display": "MR head"}]},
    "occurrencePeriod": {"start": "2026-01-02T07:05:09Z"},
    "priority": "stat",
    "performer": [{"display": "somebody"}, {"identifier": {"system": "urn:dicom:ae",
                                                            "value": "MR7"}}],
}  # fmt: skip
PATIENT = {
    "resourceType": "Patient",
    "identifier": [{"value": "P1"}],
    "name": [{"family": "Doe", "given": ["Jane"]}],
    "gender": "other",
}


def test_worklist_record_from_order_and_patient() -> None:
    record = build_record(ORDER, PATIENT)
    assert record["AccessionNumber"] == "ACC1"
    assert record["StudyInstanceUID"] == "1.2.840.99"
    # no IPC-2 nor FILL identifier: the id, within SH's 16 characters
    assert record["RequestedProcedureID"] == ORDER["id"][:16]
    assert record["RequestedProcedureDescription"] == "MR head"
    assert record["RequestedProcedurePriority"] == "STAT"
    assert (record["PatientName"], record["PatientID"], record["PatientSex"]) == (
        "Doe^Jane", "P1", "O",
    )  # fmt: skip
    step = record["step"]
    assert step["Modality"] == "MR"
    assert step["ScheduledStationAETitle"] == "MR7"
    assert (step["ScheduledProcedureStepStartDate"], step["ScheduledProcedureStepStartTime"]) == (
        "20260102", "070509",
    )  # fmt: skip
    assert step["ScheduledProcedureStepID"] == ORDER["id"][:16]
    code = record["RequestedProcedureCodeSequence"][0]
    assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == ("1", "LN", "MR head")


def test_worklist_matching_on_step_keys() -> None:
    record = build_record(ORDER, PATIENT)
    identifier = Dataset()
    identifier.PatientName = "DOE*"
    step = Dataset()
    step.Modality = "MR"
    step.ScheduledProcedureStepStartDate = "20260101-20260103"
    identifier.ScheduledProcedureStepSequence = [step]
    assert record_matches(record, parse_worklist(identifier))
    step.Modality = "CT"
    assert not record_matches(record, parse_worklist(identifier))


def test_each_association_gets_its_own_copy_of_the_contexts() -> None:
    from copy import deepcopy

    from imaging.dimse.service import QuickCopyContexts, build_ae

    contexts = QuickCopyContexts(build_ae(DimseConfig()).supported_contexts)
    copied = deepcopy(contexts)
    assert [(c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in copied] == [
        (c.abstract_syntax, c.transfer_syntax, c.scu_role, c.scp_role) for c in contexts
    ]
    copied[0].transfer_syntax.append("1.2.3.4")  # negotiation on one association ...
    copied[0].context_id = 7
    assert "1.2.3.4" not in contexts[0].transfer_syntax  # ... never reaches the next one
    assert contexts[0].context_id is None


@pytest.mark.parametrize(
    ("sop_class", "sop_instance", "transfer_syntax"),
    [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", "1.2.840.10008.1.2.1"),  # even, even, odd
        ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", "1.2.840.10008.1.2"),  # odd lengths
        ("1.2.840.10008.5.1.4.1.1.7", "1." + "2" * 62, "1.2.840.10008.1.2.4.50"),  # 64 chars
    ],
)
def test_file_meta_is_the_bytes_pynetdicom_writes(
    sop_class: str, sop_instance: str, transfer_syntax: str
) -> None:
    from pydicom.uid import UID
    from pynetdicom.dsutils import create_file_meta, encode_file_meta

    from imaging.dimse.part10 import file_meta

    theirs = encode_file_meta(
        create_file_meta(
            sop_class_uid=UID(sop_class),
            sop_instance_uid=UID(sop_instance),
            transfer_syntax=UID(transfer_syntax),
        )
    )
    assert file_meta(sop_class, sop_instance, transfer_syntax) == theirs


def test_worklist_identity_and_procedure_ids_from_the_order() -> None:
    hosp = "https://medbridge.example.org/hl7v2/authority/HOSP"
    order = {**ORDER, "identifier": [
        *ORDER["identifier"],
        {"system": REQUESTED_PROCEDURE_ID, "value": "RP-1"},
        {"system": SCHEDULED_PROCEDURE_STEP_ID, "value": "SPS-1"},
    ]}  # fmt: skip
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": hosp, "value": "MRN5005"}],
        "name": [{"family": "Doe", "given": ["John", "Quincy"], "prefix": ["Dr."],
                  "suffix": ["Jr.", "MD"]}],
    }  # fmt: skip
    record = build_record(order, patient)
    assert (record["PatientID"], record["IssuerOfPatientID"]) == ("MRN5005", "HOSP")
    assert record["PatientName"] == "Doe^John^Quincy^Dr.^Jr. MD"
    assert (record["RequestedProcedureID"], record["step"]["ScheduledProcedureStepID"]) == (
        "RP-1", "SPS-1",
    )  # fmt: skip
    filler = {**ORDER, "identifier": [{"type": {"coding": [{"code": "FILL"}]}, "value": "F-7"}]}
    assert build_record(filler, PATIENT)["RequestedProcedureID"] == "F-7"
    # a patient identifier no authority names: PatientID without an issuer
    assert "IssuerOfPatientID" not in build_record(order, PATIENT)
    assert build_record(order, {"name": [{"family": "Doe"}]})["PatientName"] == "Doe"


def test_worklist_systems_agree_with_the_tables() -> None:
    root = Path(__file__).resolve().parents[3]
    segments = (root / "mappings/hl7v2/tables/segments.yaml").read_text(encoding="utf-8")
    worklist = (root / "imaging/dimse/worklist.yaml").read_text(encoding="utf-8")
    for system in (REQUESTED_PROCEDURE_ID, SCHEDULED_PROCEDURE_STEP_ID):
        assert f'"{system}"' in segments
        assert f'"{system}"' in worklist


def test_peer_issuer_and_default_issuer(tmp_path: Path) -> None:
    path = tmp_path / "peers.yaml"
    path.write_text("peers:\n  - {ae_title: CT01, issuer: HOSP}\n  - {ae_title: MR01}\n")
    config = DimseConfig(peers=load_peers(path), default_issuer="CLINIC")
    assert config.peers["CT01"].issuer == "HOSP"
    assert [config.issuer(ae) for ae in ("CT01", "MR01", "UNKNOWN")] == ["HOSP", "CLINIC", "CLINIC"]
    assert DimseConfig(peers=load_peers(path)).issuer("MR01") is None
    path.write_text("peers:\n  - {ae_title: CT01, issuer: ''}\n")
    with pytest.raises(PeersFileError):
        load_peers(path)
