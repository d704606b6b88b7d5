"""imaging.dimse.part10: a C-STORE's Part 10 file is collected in one buffer, the same
bytes as joining the File Meta Information to the data set afterwards; a large one in a
temporary file, and one over the cap only as its prefix, size and digest."""

from __future__ import annotations

import hashlib
import io
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, PatientRootQueryRetrieveInformationModelFind

from imaging.dimse.part10 import Part10Buffer, Spool, part10, receive_as_part10
from imaging.ingest import Oversize
from medbridge.embedded_mongo import free_port
from tests.support.dicom import base_dataset
from tests.support.dicom import part10 as file_of


def _listen(
    seeded: bool,
    received: list[tuple[Any, bool]],
    found: list[str],
    spool: Spool | None = None,
    kept: list[int] | None = None,
) -> Any:
    def on_store(event: evt.Event) -> int:
        buffer = event.request.DataSet
        if kept is not None:
            with buffer.getbuffer() as held:
                kept.append(held.nbytes)  # what the buffer holds in memory before reading
        received.append((part10(event), isinstance(buffer, Part10Buffer) and buffer.seeded))
        return 0

    def on_find(event: evt.Event) -> Any:
        found.append(str(event.identifier.PatientID))  # the identifier still decodes
        yield 0, None

    ae = AE(ae_title="PART10")
    ae.maximum_pdu_size = 16_384  # many fragments per instance
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    ae.add_supported_context(PatientRootQueryRetrieveInformationModelFind)
    handlers: list[Any] = [(evt.EVT_C_STORE, on_store), (evt.EVT_C_FIND, on_find)]
    if seeded:
        handlers.append((evt.EVT_CONN_OPEN, receive_as_part10, [spool]))
    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=handlers)
    return server, port


def _send(port: int, syntax: str, instances: list[bytes]) -> None:
    client = AE(ae_title="SENDER")
    client.add_requested_context(CTImageStorage, syntax)
    client.add_requested_context(PatientRootQueryRetrieveInformationModelFind)
    assoc = client.associate("127.0.0.1", port, ae_title="PART10")
    assert assoc.is_established
    try:
        for data in instances:
            status = assoc.send_c_store(pydicom.dcmread(io.BytesIO(data)))
            assert int(status.Status) == 0
        query = pydicom.Dataset()
        query.QueryRetrieveLevel, query.PatientID = "PATIENT", "FIND-ME"
        responses = list(assoc.send_c_find(query, PatientRootQueryRetrieveInformationModelFind))
        assert int(responses[-1][0].Status) == 0
    finally:
        assoc.release()


def test_the_collected_file_equals_the_joined_one_in_both_syntaxes() -> None:
    for syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian):
        ds = base_dataset(SOPClassUID=CTImageStorage)
        ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = 512, 512, 16, 1
        ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = os.urandom(512 * 512 * 2)
        instances = [file_of(ds, syntax), file_of(base_dataset(SOPClassUID=CTImageStorage), syntax)]
        got: dict[bool, list[tuple[bytes, bool]]] = {}
        for seeded in (True, False):
            received: list[tuple[bytes, bool]] = []
            found: list[str] = []
            server, port = _listen(seeded, received, found)
            try:
                _send(port, syntax, instances)
            finally:
                server.shutdown()
            assert found == ["FIND-ME"]
            got[seeded] = received
        # two instances on one association: each message gets a buffer of its own
        assert [flag for _, flag in got[True]] == [True, True]
        assert [flag for _, flag in got[False]] == [False, False]
        assert [data for data, _ in got[True]] == [data for data, _ in got[False]]
        first = pydicom.dcmread(io.BytesIO(got[True][0][0]))
        assert first.file_meta.TransferSyntaxUID == syntax
        assert first.PixelData == ds.PixelData


def _ct(pixels: int) -> Any:
    ds = base_dataset(SOPClassUID=CTImageStorage)
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.SamplesPerPixel = pixels, pixels, 16, 1
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = os.urandom(pixels * pixels * 2)
    return ds


def _receive(instances: list[bytes], spool: Spool | None) -> tuple[list[Any], list[int]]:
    received: list[tuple[Any, bool]] = []
    kept: list[int] = []
    server, port = _listen(True, received, [], spool, kept)
    try:
        _send(port, ExplicitVRLittleEndian, instances)
    finally:
        server.shutdown()
    assert [flag for _, flag in received] == [True] * len(instances)
    return [value for value, _ in received], kept


def _temporary_files(directory: Path) -> set[str]:
    """The files of `directory` this process has open (TemporaryFile's have no name)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)):
            found.add(target)
    return found


def test_a_large_instance_is_collected_in_a_file_with_the_same_bytes(tmp_path: Path) -> None:
    instances = [file_of(_ct(512)), file_of(_ct(16))]  # 512 KiB of pixels, and a small one
    in_memory, _ = _receive(instances, None)
    spool = Spool(limit=64 << 20, prefix=4096, from_bytes=64 * 1024, directory=str(tmp_path))
    spooled, kept = _receive(instances, spool)
    assert spooled == in_memory
    # the large one was in the file, not in memory; the small one stayed in memory
    assert kept[0] == 0
    assert kept[1] == len(in_memory[1])
    assert _temporary_files(tmp_path) == set()  # read and closed
    assert os.listdir(tmp_path) == []  # and never named


def test_over_the_limit_only_the_prefix_is_kept_with_the_digest_of_everything(
    tmp_path: Path,
) -> None:
    instances = [file_of(_ct(512)), file_of(_ct(16))]
    whole, _ = _receive(instances, None)
    spool = Spool(limit=300 * 1024, prefix=4096, from_bytes=64 * 1024, directory=str(tmp_path))
    got, kept = _receive(instances, spool)
    over = got[0]
    assert isinstance(over, Oversize)
    assert over.size == len(whole[0])
    assert over.prefix == whole[0][:4096]
    assert over.sha256 == hashlib.sha256(whole[0]).hexdigest()
    assert kept[0] == 0
    # the next instance on the association is its own message, under the limit
    assert got[1] == whole[1]
    assert _temporary_files(tmp_path) == set()


def test_without_a_temporary_file_the_instance_is_collected_in_memory(tmp_path: Path) -> None:
    instances = [file_of(_ct(512))]
    in_memory, _ = _receive(instances, None)
    missing = tmp_path / "gone"  # no such directory: no temporary file can be made
    spool = Spool(limit=64 << 20, prefix=4096, from_bytes=64 * 1024, directory=str(missing))
    got, kept = _receive(instances, spool)
    assert got == in_memory
    assert kept[0] == len(in_memory[0])  # held in memory, as without a spool


def _filling_up(directory: str) -> None:
    """In a child process whose files may not grow past 256 KiB (RLIMIT_FSIZE: a write
    past it fails with EFBIG, as on a full disk): receive a 512 KiB instance spooled from
    64 KiB, and say whether it arrived whole."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, resource.RLIM_INFINITY))
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails instead of the process
    data = file_of(_ct(512))
    spool = Spool(limit=64 << 20, prefix=4096, from_bytes=64 * 1024, directory=directory)
    in_memory, _ = _receive([data], None)
    got, kept = _receive([data], spool)
    print("whole" if got == in_memory and kept[0] == len(got[0]) else "lost", flush=True)


def test_a_temporary_file_that_fills_up_goes_back_to_memory(tmp_path: Path) -> None:
    child = subprocess.run(
        [sys.executable, "-c",
         "import sys; from tests.unit.imaging.test_dimse_part10 import _filling_up; "
         "_filling_up(sys.argv[1])", str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert child.stdout.strip().splitlines()[-1:] == ["whole"], child.stdout + child.stderr
    assert "temporary file full" in child.stderr
