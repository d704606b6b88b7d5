"""The pipeline runs its stages in order, and audit runs whatever happened."""

from __future__ import annotations

import pytest

from access.context import Door, RequestContext
from access.errors import AccessError
from access.pipeline import Stage
from fhir_server.errors import outcome
from fhir_server.exchange import FhirExchange, FhirPipeline, FhirRequest, FhirResponse


def _pipeline(calls: list[str], fail_at: Stage | None = None) -> FhirPipeline:
    def prepare(exchange: FhirExchange) -> None:
        calls.append("prepare")

    async def act(exchange: FhirExchange) -> FhirResponse:
        calls.append("act")
        return FhirResponse(200, b"{}")

    def render(exchange: FhirExchange, error: AccessError) -> FhirResponse:
        return FhirResponse.of(error.status, outcome(error))

    pipeline = FhirPipeline(prepare, act, render)
    for stage in Stage:
        if stage is Stage.ACT:
            continue

        async def hook(exchange: FhirExchange, stage: Stage = stage) -> None:
            calls.append(str(stage))
            if stage is fail_at:
                raise AccessError("MB-1013", "refused")

        pipeline.intervene(stage, hook)
    return pipeline


def _exchange() -> FhirExchange:
    return FhirExchange(FhirRequest("GET", "Patient/1"), RequestContext(Door.FHIR))


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
    def prepare(exchange: FhirExchange) -> None:
        return None

    async def act(exchange: FhirExchange) -> FhirResponse:
        raise RuntimeError("secret patient detail")

    pipeline = FhirPipeline(prepare, act, lambda e, err: FhirResponse.of(err.status, outcome(err)))
    response = await pipeline.handle(_exchange())
    assert response.status == 500
    assert response.body is not None
    assert b"secret" not in response.body


async def test_notification_failures_never_break_a_request() -> None:
    calls: list[str] = []
    pipeline = _pipeline(calls)

    async def broken(exchange: FhirExchange) -> None:
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


async def _noop(exchange: FhirExchange) -> None:
    return None
