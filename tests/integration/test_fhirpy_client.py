"""An unmodified third-party FHIR client (fhirpy) drives the server."""

from __future__ import annotations

import pytest
from fhirpy import AsyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.integration.test_fhir_crud import SYSTEM
from tests.support.servers import RunningServer


async def test_fhirpy_create_read_update_delete(server: RunningServer, unique: str) -> None:
    client = AsyncFHIRClient(server.fhir_base, extra_headers={"Accept": "application/fhir+json"})
    patient = client.resource(
        "Patient",
        identifier=[{"system": SYSTEM, "value": unique}],
        name=[{"family": "Петров", "given": ["Иван"]}],
        birthDate="1975-05-05",
    )
    await patient.save()
    assert patient["id"]
    assert patient["meta"]["versionId"] == "1"

    found = await client.resources("Patient").search(identifier=f"{SYSTEM}|{unique}").fetch_all()
    assert [p["id"] for p in found] == [patient["id"]]

    fetched = await client.reference("Patient", patient["id"]).to_resource()
    assert fetched["name"][0]["family"] == "Петров"

    fetched["gender"] = "male"
    await fetched.save()
    assert fetched["meta"]["versionId"] == "2"

    await fetched.delete()
    with pytest.raises((ResourceNotFound, OperationOutcome)):
        await client.reference("Patient", patient["id"]).to_resource()
