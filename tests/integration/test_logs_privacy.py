"""No patient data in the server's logs at the default level, whatever the request did."""

from __future__ import annotations

import httpx

from tests.integration.test_mllp import adt, msa, send
from tests.support.servers import RunningServer

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def test_names_and_identifiers_stay_out_of_the_log(
    fhir: httpx.Client, server: RunningServer, unique: str
) -> None:
    family = f"Zdanavičiūtė{unique[:8]}"
    identifier = f"LT{unique}"
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.3.6.1.4.1.99999.1", "value": identifier}],
        "name": [{"family": family}],
    }
    created = fhir.post("/Patient", json=patient, headers=FHIR_JSON)
    assert created.status_code == 201
    fhir.get(f"/Patient?identifier={identifier}")
    fhir.get(f"/Patient/{created.json()['id']}")
    fhir.post("/Patient", json={**patient, "birthDate": "not-a-date"}, headers=FHIR_JSON)
    fhir.post("/Patient", content=f'{{"name": "{family}"'.encode(), headers=FHIR_JSON)
    fhir.put(f"/Patient?identifier={identifier}", json=patient, headers=FHIR_JSON)
    log = server.log()
    assert "ready: FHIR base" in log  # the log is being written
    assert family not in log
    assert identifier not in log


async def test_python_hl7_escape_warnings_stay_out_of_the_log(
    server: RunningServer, unique: str
) -> None:
    """Issue 17 M2: python-hl7 logs the whole field at ERROR on an invalid escape."""
    family = f"Kazlauskas{unique[:8]}"
    message = adt("A08", f"esc{unique}", f"E{unique}", f"{family}\\Zx\\^Jonas")
    [ack] = await send(server, message)
    assert msa(ack)[1] == "AA"
    log = server.log()
    assert "ready: FHIR base" in log
    assert family not in log
    assert "Error decoding value" not in log
