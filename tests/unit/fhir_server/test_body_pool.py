"""fhir_server.body_pool: a large body parsed on the worker is what inline parsing gives."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from decimal import Decimal

import pytest

from access.budget import Budget
from access.errors import AccessError
from access.worker_pool import WorkerPool
from fhir_server import body_pool
from fhir_server.interactions.common import valid_resource
from tests.support.worker_probe import probe


@pytest.fixture
def worker() -> Iterator[None]:
    before = body_pool.pool().workers
    body_pool.configure(1)
    yield
    body_pool.configure(before)


def _observations(count: int) -> bytes:
    components = [
        {"code": {"text": f"c{n}"}, "valueQuantity": {"value": Decimal("1.50")}}
        for n in range(count)
    ]
    resource = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                "component": components}  # fmt: skip
    return json.dumps(resource, default=str).replace('"1.50"', "1.50").encode()


async def test_a_large_body_is_validated_on_the_worker_like_inline(worker: None) -> None:
    body = _observations(800)
    assert len(body) >= body_pool.POOLED_BYTES
    pooled = await body_pool.sized(len(body), valid_resource, body, "Observation", Budget())
    assert pooled == valid_resource(body, "Observation", Budget())
    # decimals as sent survive the trip
    assert str(pooled["component"][0]["valueQuantity"]["value"]) == "1.50"


async def test_a_large_body_over_the_budget_is_refused_from_the_worker(worker: None) -> None:
    body = json.dumps({"resourceType": "Patient", "name": [{"given": ["x"] * 20_000}]}).encode()
    assert len(body) >= body_pool.POOLED_BYTES
    with pytest.raises(AccessError) as refused:
        await body_pool.sized(len(body), valid_resource, body, "Patient", Budget())
    assert refused.value.code == "MB-1044"
    assert refused.value.expression == "Patient.name[0].given"


async def test_an_invalid_large_resource_names_its_issues_from_the_worker(worker: None) -> None:
    resource = {"resourceType": "Patient", "birthDate": "yesterday",
                "name": [{"family": "F" * 40_000}]}  # fmt: skip
    body = json.dumps(resource).encode()
    with pytest.raises(AccessError) as refused:
        await body_pool.sized(len(body), valid_resource, body, "Patient", Budget())
    assert refused.value.code == "MB-1006"
    assert any("birthDate" in issue.expression for issue in refused.value.issues)


async def test_the_worker_has_what_its_tasks_need_before_the_first_body() -> None:
    """The modules of the functions sent to the worker and the models of the server's
    own large writes (the DICOM upkeep's ImagingStudy) are imported as the worker starts,
    not by the first large body (the first upkeep of a large study paid ~0.7 s)."""
    pool = WorkerPool(1, "test", warm=body_pool._warm)
    manager = multiprocessing.get_context("spawn").Manager()
    wanted = [*body_pool.TASK_MODULES, "fhir.resources.R4B.imagingstudy"]
    try:
        found = [await pool.run(probe, manager.Barrier(1), module) for module in wanted]
    finally:
        pool.stop()
        manager.shutdown()
    assert [
        module for module, (_, imported, _) in zip(wanted, found, strict=True) if not imported
    ] == []
