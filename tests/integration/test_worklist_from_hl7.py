"""A modality's worklist query finds the orders the RIS sent over HL7 (ORM^O01, OMI^O23)."""

from __future__ import annotations

from pathlib import Path

from hl7_bridge.client import MllpClient
from tests.support.dcmtk import findscu
from tests.support.servers import RunningServer

STEP = "ScheduledProcedureStepSequence[0]"


def omi(unique: str) -> bytes:
    """OMI^O23 (v2.5.1) as an IHE RAD-4 order placer sends it: IPC-5 modality, IPC-9 station."""
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MEDBRIDGE|MB|20261123080000||OMI^O23^OMI_O23|W{unique[:12]}|P|2.5.1",
        f"PID|1||W{unique[:10]}^^^HOSP^MR||Darbas^Rasa||19800305|F",
        f"ORC|NW|PL{unique[:8]}^RIS|||SC",
        "TQ1|1||||||20261123093000",
        f"OBR|1|PL{unique[:8]}^RIS||MRBRAIN^MR brain^L",
        f"IPC|AW{unique[:10]}^RIS|RP{unique[:6]}|1.2.826.0.1.3680043.2.1125.{int(unique[:8], 16)}"
        "|SPS1|MR^Magnetic resonance^DCM||||MRI01",
    ]
    return ("\r".join(segments) + "\r").encode()


def orm(unique: str) -> bytes:
    """ORM^O01 (v2.3.1) with the modality in OBR-24, as IHE RAD-4 sends it in v2.3.1."""
    obr = ["OBR", "1", f"PO{unique[:8]}^RIS", "", "74177^CT abdomen^C4"] + [""] * 13
    obr += [f"AO{unique[:10]}"] + [""] * 5 + ["CT"]  # OBR-18 accession, OBR-24 modality
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MEDBRIDGE|MB|20261123080000||ORM^O01|O{unique[:12]}|P|2.3.1",
        f"PID|1||O{unique[:10]}^^^HOSP^MR||Darbas^Tomas||19750101|M",
        f"ORC|NW|PO{unique[:8]}^RIS||||^^^20261123100000",
        "|".join(obr),
    ]
    return ("\r".join(segments) + "\r").encode()


async def send(server: RunningServer, message: bytes) -> str:
    client = await MllpClient.connect("127.0.0.1", server.mllp_port)
    try:
        return (await client.send(message, 60)).decode("utf-8", "replace")
    finally:
        await client.close()


async def test_hl7_orders_reach_the_modality_worklist(
    server: RunningServer, unique: str, tmp_path: Path
) -> None:
    assert "MSA|AA" in await send(server, omi(unique))
    assert "MSA|AA" in await send(server, orm(unique))
    wanted = ["PatientName", f"{STEP}.ScheduledProcedureStepStartDate"]

    _, mr = findscu(
        server.dicom_port, "-W",
        [*wanted, f"AccessionNumber=AW{unique[:10]}", f"{STEP}.Modality=MR",
         f"{STEP}.ScheduledStationAETitle=MRI01"],
        tmp_path, "MODALITY",
    )  # fmt: skip
    assert [str(item.PatientName) for item in mr] == ["Darbas^Rasa"]
    step = mr[0].ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledStationAETitle) == ("MR", "MRI01")
    assert step.ScheduledProcedureStepStartDate == "20261123"

    _, ct = findscu(
        server.dicom_port, "-W",
        [*wanted, f"AccessionNumber=AO{unique[:10]}", f"{STEP}.Modality=CT"],
        tmp_path, "MODALITY",
    )  # fmt: skip
    assert [str(item.PatientName) for item in ct] == ["Darbas^Tomas"]
    _, not_mr = findscu(
        server.dicom_port, "-W",
        [*wanted, f"AccessionNumber=AO{unique[:10]}", f"{STEP}.Modality=MR"],
        tmp_path, "MODALITY",
    )  # fmt: skip
    assert not_mr == []
