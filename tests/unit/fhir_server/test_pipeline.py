"""The pipeline runs its stages in order, and audit runs whatever happened."""

from __future__ import annotations

import pytest
from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.context import Door, RequestContext
from fhir_server.errors import FhirError
from fhir_server.exchange import FhirRequest, FhirResponse
from fhir_server.pipeline import Exchange, Pipeline, Stage


def _pipeline(calls: list[str], fail_at: Stage | None = None) -> Pipeline:
    def prepare(exchange: Exchange) -> None:
        calls.append("prepare")

    async def act(exchange: Exchange) -> FhirResponse:
        calls.append("act")
        return FhirResponse(200, b"{}")

    def render(exchange: Exchange, error: FhirError) -> FhirResponse:
        return FhirResponse.of(error.status, error.outcome())

    pipeline = Pipeline(prepare, act, render)
    for stage in Stage:
        if stage is Stage.ACT:
            continue

        async def hook(exchange: Exchange, stage: Stage = stage) -> None:
            calls.append(str(stage))
            if stage is fail_at:
                raise FhirError("MB-1013", "refused")

        pipeline.intervene(stage, hook)
    return pipeline


def _exchange() -> Exchange:
    return Exchange(FhirRequest("GET", "Patient/1"), RequestContext(Door.FHIR))


async def test_stages_run_in_order() -> None:
    calls: list[str] = []
    response = await _pipeline(calls).handle(_exchange())
    assert response.status == 200
    assert calls == [
        "prepare", "authenticate", "authorize", "consent-decide", "act", "consent-show", "audit",
    ]  # fmt: skip


async def test_an_intervention_aborts_and_audit_still_runs() -> None:
    calls: list[str] = []
    exchange = _exchange()
    response = await _pipeline(calls, fail_at=Stage.AUTHORIZE).handle(exchange)
    assert response.status == 405
    assert "act" not in calls
    assert calls[-2:] == ["on-error", "audit"]
    assert exchange.error is not None


async def test_an_unexpected_exception_is_a_500_outcome_without_details() -> None:
    def prepare(exchange: Exchange) -> None:
        return None

    async def act(exchange: Exchange) -> FhirResponse:
        raise RuntimeError("secret patient detail")

    pipeline = Pipeline(prepare, act, lambda e, err: FhirResponse.of(err.status, err.outcome()))
    response = await pipeline.handle(_exchange())
    assert response.status == 500
    assert response.body is not None
    assert b"secret" not in response.body


async def test_notification_failures_never_break_a_request() -> None:
    calls: list[str] = []
    pipeline = _pipeline(calls)

    async def broken(exchange: Exchange) -> None:
        raise RuntimeError("metrics down")

    pipeline.notify(Stage.AUDIT, broken, "metrics")
    assert (await pipeline.handle(_exchange())).status == 200
    assert "metrics" in pipeline.hooks(Stage.AUDIT)


async def test_a_failing_audit_withholds_the_answer() -> None:
    calls: list[str] = []
    response = await _pipeline(calls, fail_at=Stage.AUDIT).handle(_exchange())
    assert response.status == 500


def test_act_cannot_be_hooked() -> None:
    with pytest.raises(ValueError, match="act"):
        _pipeline([]).intervene(Stage.ACT, _noop)


async def _noop(exchange: Exchange) -> None:
    return None


@pytest.mark.parametrize(
    "conflict",
    [
        OperationFailure("WriteConflict", 112, {"errorLabels": ["TransientTransactionError"]}),
        DuplicateKeyError("E11000 duplicate key", 11000),
    ],
    ids=["write-conflict", "duplicate-key"],
)
async def test_a_store_conflict_no_path_answered_is_a_409(conflict: Exception) -> None:
    def prepare(exchange: Exchange) -> None:
        return None

    async def act(exchange: Exchange) -> FhirResponse:
        raise conflict

    pipeline = Pipeline(prepare, act, lambda e, err: FhirResponse.of(err.status, err.outcome()))
    exchange = _exchange()
    response = await pipeline.handle(exchange)
    assert response.status == 409
    assert exchange.error is not None
    assert exchange.error.code == "MB-1011"
