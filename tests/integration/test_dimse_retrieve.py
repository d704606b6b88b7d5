"""C-MOVE, C-GET and the peers table, with dcmtk's movescu, getscu and storescp as peers.

The server here is closed (MEDBRIDGE_DICOM_OPEN=false): only AE titles in its peers
table may associate, each limited to its services.
"""

from __future__ import annotations

import io
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from medbridge.embedded_mongo import EmbeddedMongo, free_port
from tests.support import audit_log
from tests.support.dcmtk import findscu, run, storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer, start_server

PEERS = """
peers:
  - {{ae_title: DEST, host: 127.0.0.1, port: {dest_port}, services: [store]}}
  - {{ae_title: OFFLINE, host: 127.0.0.1, port: {offline_port}, services: [store]}}
  - {{ae_title: RETRIEVER, services: [echo, store, find, move, get]}}
  - {{ae_title: FINDONLY, services: [echo, find]}}
"""


@dataclass
class Site:
    server: RunningServer
    dest_dir: Path
    study: str
    series: list[str]
    instances: dict[str, str]  # SOP Instance UID -> transfer syntax sent
    broken_study: str
    audit: Path  # one JSON line per access the pipeline audited


def _wait_listening(port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("storescp did not start")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("retrieve")
    dest_port, dest_dir = free_port(), root / "dest"
    dest_dir.mkdir()
    storescp = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "DEST", "+xa", "-od", str(dest_dir), str(dest_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(dest_port)
        peers = root / "peers.yaml"
        peers.write_text(PEERS.format(dest_port=dest_port, offline_port=free_port()))
        env = {
            "MEDBRIDGE_DICOM_PEERS_FILE": str(peers),
            "MEDBRIDGE_DICOM_OPEN": "false",
            "MEDBRIDGE_DICOM_MAX_ASSOCIATIONS": "3",
            "MEDBRIDGE_DICOM_AE_TITLE": "ARCHIVE1",
            "MEDBRIDGE_EXTRA_HOOKS": "tests.support.audit_log:hooks",
            audit_log.FILE: str(root / "audit.jsonl"),
        }
        server = start_server(root / "server", store.uri, env=env)
        try:
            yield _load(server, root, dest_dir)
        finally:
            server.stop()
    finally:
        storescp.kill()
        storescp.wait(10)


def _load(server: RunningServer, root: Path, dest_dir: Path) -> Site:
    study, broken = generate_uid(), generate_uid()
    series = [generate_uid(), generate_uid()]
    blobs = {
        "ct0.dcm": renamed("CT_small.dcm", study=study, series=series[0], patient_id="MOVE1"),
        "ct1.dcm": renamed("CT_small.dcm", study=study, series=series[0], patient_id="MOVE1"),
        "jpeg.dcm": renamed("SC_rgb_small_odd_jpeg.dcm", study=study, series=series[1],
                            patient_id="MOVE1"),
        "b0.dcm": renamed("CT_small.dcm", study=broken, patient_id="MOVE2"),
        "b1.dcm": renamed("CT_small.dcm", study=broken, patient_id="MOVE2"),
    }  # fmt: skip
    instances: dict[str, str] = {}
    for name, blob in blobs.items():
        path = root / name
        path.write_bytes(blob)
        assert successes(storescu(server.dicom_port, [path], "RETRIEVER")) == 1
        ds = pydicom.dcmread(io.BytesIO(blob), stop_before_pixels=True)
        if ds.StudyInstanceUID == study:
            instances[str(ds.SOPInstanceUID)] = str(ds.file_meta.TransferSyntaxUID)
    # break one instance of the second study: its stored object disappears
    broken_sop = str(pydicom.dcmread(io.BytesIO(blobs["b1.dcm"])).SOPInstanceUID)
    objects = server.data_dir / "objects" / "dicom" / broken
    for path in objects.rglob("*.dcm"):
        if broken_sop in path.parts:
            path.unlink()
    return Site(server, dest_dir, study, series, instances, broken, root / "audit.jsonl")


def movescu(site: Site, calling: str, destination: str, *keys: str) -> str:
    args = ["-S", "-aet", calling, "-aec", "MEDBRIDGE", "-aem", destination]
    for key in keys:
        args += ["-k", key]
    return run("movescu", *args, "127.0.0.1", str(site.server.dicom_port))


def received(directory: Path) -> dict[str, Any]:
    out = {}
    for path in directory.iterdir():
        if path.is_file():
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            out[str(ds.SOPInstanceUID)] = str(ds.file_meta.TransferSyntaxUID)
    return out


def test_unknown_calling_ae_is_rejected(site: Site) -> None:
    port = str(site.server.dicom_port)
    refused = run("echoscu", "-aet", "STRANGER", "-aec", "MEDBRIDGE", "127.0.0.1", port)
    assert "Association Rejected" in refused
    accepted = run("echoscu", "-aet", "FINDONLY", "-aec", "MEDBRIDGE", "127.0.0.1", port)
    assert "Received Echo Response (Success)" in accepted


def test_peer_without_store_service_gets_refused_status(site: Site) -> None:
    ae = AE(ae_title="FINDONLY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)  # CT
    assoc = ae.associate("127.0.0.1", site.server.dicom_port, ae_title="MEDBRIDGE")
    assert assoc.is_established
    try:
        dataset = pydicom.dcmread(io.BytesIO(renamed("CT_small.dcm")))
        status = assoc.send_c_store(dataset)
    finally:
        assoc.release()
    assert int(status.Status) == 0x0124  # refused: not authorized


def test_c_move_study_to_a_peer_as_stored(site: Site) -> None:
    output = movescu(
        site, "RETRIEVER", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={site.study}"
    )
    assert "Received Final Move Response (Success)" in output, output[-3000:]
    got = received(site.dest_dir)
    assert {sop: got.get(sop) for sop in site.instances} == site.instances


def test_c_move_partial_failure_is_reported(site: Site) -> None:
    output = movescu(
        site, "RETRIEVER", "DEST", "QueryRetrieveLevel=STUDY",
        f"StudyInstanceUID={site.broken_study}",
    )  # fmt: skip
    assert "Received Final Move Response (Warning: SubOperationsCompleteOneOrMoreFailures)" in (
        output
    ), output[-3000:]
    got = received(site.dest_dir)
    assert len([sop for sop in got if sop not in site.instances]) == 1  # the intact one


def test_c_move_destination_unknown_or_unreachable(site: Site) -> None:
    for destination in ("NOWHERE", "OFFLINE"):
        output = movescu(
            site, "RETRIEVER", destination, "QueryRetrieveLevel=STUDY",
            f"StudyInstanceUID={site.study}",
        )  # fmt: skip
        assert "MoveDestinationUnknown" in output or "a801" in output.lower(), output[-2000:]


def test_c_move_needs_the_move_service(site: Site) -> None:
    output = movescu(
        site, "FINDONLY", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={site.study}"
    )
    assert "Received Final Move Response (Success)" not in output
    assert "MoveDestinationUnknown" in output or "a801" in output.lower(), output[-2000:]


def test_c_get_series(site: Site, tmp_path: Path) -> None:
    output = run(
        "getscu", "-S", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={site.study}",
        "-k", f"SeriesInstanceUID={site.series[0]}", "127.0.0.1", str(site.server.dicom_port),
    )  # fmt: skip
    assert "Received C-GET Response (Success)" in output, output[-3000:]
    assert "Number of Completed Suboperations : 2" in output
    got = received(tmp_path)
    assert len(got) == 2
    assert set(got) <= set(site.instances)


def test_c_get_without_unique_key_is_refused(site: Site, tmp_path: Path) -> None:
    output = run(
        "getscu", "-S", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={site.study}",
        "127.0.0.1", str(site.server.dicom_port),
    )  # fmt: skip
    assert "Received C-GET Response (Success)" not in output
    assert list(tmp_path.iterdir()) == []


def test_association_limit(site: Site) -> None:
    ae = AE(ae_title="RETRIEVER")
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    held = [
        ae.associate("127.0.0.1", site.server.dicom_port, ae_title="MEDBRIDGE") for _ in range(3)
    ]
    try:
        assert all(assoc.is_established for assoc in held)
        over = run("echoscu", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "127.0.0.1",
                   str(site.server.dicom_port))  # fmt: skip
        assert "Association Rejected" in over
    finally:
        for assoc in held:
            assoc.release()
    deadline = time.monotonic() + 20
    again = ""
    while "Received Echo Response (Success)" not in again and time.monotonic() < deadline:
        again = run("echoscu", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "127.0.0.1",
                    str(site.server.dicom_port))  # fmt: skip
    assert "Received Echo Response (Success)" in again


def test_c_move_cancel_stops_the_sub_operations(site: Site, tmp_path: Path) -> None:
    study, series = generate_uid(), generate_uid()
    paths = []
    for n in range(40):
        path = tmp_path / f"{n}.dcm"
        path.write_bytes(renamed("CT_small.dcm", study=study, series=series, patient_id="MOVE3"))
        paths.append(path)
    assert successes(storescu(site.server.dicom_port, paths, "RETRIEVER")) == 40
    before = len(received(site.dest_dir))
    output = run(
        "movescu", "-S", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "-aem", "DEST",
        "--cancel", "1", "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}",
        "127.0.0.1", str(site.server.dicom_port),
    )  # fmt: skip
    assert "Received Final Move Response (Cancel" in output, output[-3000:]
    assert len(received(site.dest_dir)) - before < 40


def test_c_move_without_unique_key_is_a900(site: Site) -> None:
    output = movescu(
        site, "RETRIEVER", "DEST", "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={site.study}"
    )
    assert "DataSetDoesNotMatchSOPClass" in output  # A900, output[-2000:]


def test_our_ae_title_is_configurable(site: Site, tmp_path: Path) -> None:
    _, found = findscu(
        site.server.dicom_port, "-S",
        ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={site.study}", "PatientID"],
        tmp_path, "RETRIEVER",
    )  # fmt: skip
    assert [d.RetrieveAETitle for d in found] == ["ARCHIVE1"]
    assert found[0].PatientID == "MOVE1"


def test_ae_title_refusals_are_the_pipeline_hooks_and_audited(site: Site) -> None:
    """The peers table's services are the `dimse.ae-titles` authorize hook: a refused
    service is an access that passed the pipeline, refused MB-4001 and audited."""
    before = len(audit_log.read(site.audit))
    ae = AE(ae_title="FINDONLY")
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2", ExplicitVRLittleEndian)  # CT
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    assoc = ae.associate("127.0.0.1", site.server.dicom_port, ae_title="MEDBRIDGE")
    assert assoc.is_established
    try:
        stored = assoc.send_c_store(pydicom.dcmread(io.BytesIO(renamed("CT_small.dcm"))))
        echoed = assoc.send_c_echo()
    finally:
        assoc.release()
    moved = movescu(
        site, "FINDONLY", "DEST", "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={site.study}"
    )
    assert (int(stored.Status), int(echoed.Status)) == (0x0124, 0x0000)
    assert "MoveDestinationUnknown" in moved or "a801" in moved.lower(), moved[-2000:]
    audited = [
        (line["action"], line["error"])
        for line in audit_log.read(site.audit)[before:]
        if line["actor"] == "FINDONLY"
    ]
    assert audited == [("c-store", "MB-4001"), ("c-echo", None), ("c-move", "MB-4001")]


def test_a_retrieve_and_its_object_reads_are_one_audited_access(site: Site, tmp_path: Path) -> None:
    before = len(audit_log.read(site.audit))
    output = run(
        "getscu", "-S", "-aet", "RETRIEVER", "-aec", "MEDBRIDGE", "-od", str(tmp_path),
        "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={site.study}",
        "-k", f"SeriesInstanceUID={site.series[0]}", "127.0.0.1", str(site.server.dicom_port),
    )  # fmt: skip
    assert "Received C-GET Response (Success)" in output, output[-3000:]
    assert len(received(tmp_path)) == 2
    # the objects were read inside the C-GET's pass: no other access read them
    audited = [line for line in audit_log.read(site.audit)[before:] if line["door"] == "dimse"]
    assert [(line["action"], line["actor"], line["error"]) for line in audited] == [
        ("c-get", "RETRIEVER", None)
    ]
