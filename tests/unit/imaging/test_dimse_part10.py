"""imaging.dimse.part10: a C-STORE's Part 10 file is collected in one buffer, the same
bytes as joining the File Meta Information to the data set afterwards."""

from __future__ import annotations

import io
import os
from typing import Any

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, PatientRootQueryRetrieveInformationModelFind

from imaging.dimse.part10 import Part10Buffer, part10, receive_as_part10
from medbridge.embedded_mongo import free_port
from tests.support.dicom import base_dataset
from tests.support.dicom import part10 as file_of


def _listen(seeded: bool, received: list[tuple[bytes, bool]], found: list[str]) -> Any:
    def on_store(event: evt.Event) -> int:
        buffer = event.request.DataSet
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
        handlers.append((evt.EVT_CONN_OPEN, receive_as_part10))
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
