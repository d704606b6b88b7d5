"""A store conflict that reaches the pipeline unanswered is a 409 (MB-1011), never a 500:
the FHIR door's pipeline explains store errors with `store_errors.as_access_error`."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError, OperationFailure

from access.access import Access, Action
from access.context import Door, RequestContext
from fhir_server import store_errors
from fhir_server.errors import outcome
from fhir_server.exchange import FhirExchange, FhirPipeline, FhirRequest, FhirResponse


@pytest.mark.parametrize(
    "conflict",
    [
        OperationFailure("WriteConflict", 112, {"errorLabels": ["TransientTransactionError"]}),
        DuplicateKeyError("E11000 duplicate key", 11000),
    ],
    ids=["write-conflict", "duplicate-key"],
)
async def test_a_store_conflict_no_path_answered_is_a_409(conflict: Exception) -> None:
    def prepare(exchange: FhirExchange) -> None:
        exchange.access = Access(Door.FHIR, Action.CREATE, exchange.context.actor)

    async def act(exchange: FhirExchange) -> FhirResponse:
        raise conflict

    pipeline = FhirPipeline(
        prepare,
        act,
        lambda e, err: FhirResponse.of(err.status, outcome(err)),
        explain=store_errors.as_access_error,
    )
    exchange = FhirExchange(FhirRequest("POST", "Patient"), RequestContext(Door.FHIR))
    response = await pipeline.handle(exchange)
    assert response.status == 409
    assert exchange.error is not None
    assert exchange.error.code == "MB-1011"


async def test_other_failures_stay_a_500() -> None:
    assert store_errors.as_access_error(RuntimeError("boom")) is None
