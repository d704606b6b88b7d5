"""The pipeline runs its stages in order, hooks by their order, and audit whatever happened.

The pipeline is protocol-neutral, so these tests use a door of their own (a plain request
and response) rather than the FHIR one.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from access.access import Access, Action
from access.context import SYSTEM, Door, RequestContext
from access.errors import AccessError
from access.pipeline import Exchange, Hook, Pipeline, Stage


@dataclass
class Answer:
    status: int
    text: str = ""


TestExchange = Exchange[str, Answer]


def _render(exchange: TestExchange, error: AccessError) -> Answer:
    return Answer(error.status, error.diagnostics)


def _pipeline(calls: list[str], fail_at: Stage | None = None) -> Pipeline[str, Answer]:
    def prepare(exchange: TestExchange) -> None:
        calls.append("prepare")
        exchange.access = _describe(exchange)

    async def act(exchange: TestExchange) -> Answer:
        calls.append("act")
        if fail_at is Stage.ACT:
            raise AccessError("MB-1002", "gone")
        return Answer(200)

    pipeline = Pipeline(prepare, act, _render)
    for stage in Stage:
        if stage is Stage.ACT:
            continue

        async def hook(exchange: TestExchange, stage: Stage = stage) -> None:
            calls.append(str(stage))
            if stage is fail_at:
                raise AccessError("MB-1030", "refused")

        if stage is Stage.POST_COMMIT:
            pipeline.notify(stage, hook, str(stage))
        else:
            pipeline.intervene(stage, hook, str(stage))
    return pipeline


def _describe(exchange: TestExchange) -> Access:
    return Access(Door.INTERNAL, Action.ADMIN, SYSTEM, request_id=exchange.context.request_id)


def _exchange() -> TestExchange:
    return Exchange("GET thing", RequestContext(Door.INTERNAL))


async def test_stages_run_in_order() -> None:
    calls: list[str] = []
    response = await _pipeline(calls).handle(_exchange())
    assert response.status == 200
    assert calls == [
        "prepare", "authenticate", "authorize", "consent-decide", "act", "post-commit",
        "consent-show", "audit",
    ]  # fmt: skip


async def test_an_intervention_aborts_and_audit_still_runs() -> None:
    calls: list[str] = []
    exchange = _exchange()
    response = await _pipeline(calls, fail_at=Stage.AUTHORIZE).handle(exchange)
    assert response.status == 403
    assert "act" not in calls
    assert "post-commit" not in calls
    assert calls[-2:] == ["on-error", "audit"]
    assert exchange.error is not None


async def test_post_commit_does_not_run_when_the_act_failed() -> None:
    calls: list[str] = []
    response = await _pipeline(calls, fail_at=Stage.ACT).handle(_exchange())
    assert response.status == 404
    assert calls[-3:] == ["act", "on-error", "audit"]


async def test_a_failing_post_commit_hook_never_undoes_the_answer() -> None:
    calls: list[str] = []
    response = await _pipeline(calls, fail_at=Stage.POST_COMMIT).handle(_exchange())
    assert response.status == 200
    assert calls[-3:] == ["post-commit", "consent-show", "audit"]


def test_post_commit_takes_notifications_only() -> None:
    with pytest.raises(ValueError, match="post-commit"):
        _pipeline([]).intervene(Stage.POST_COMMIT, _noop)


async def test_hooks_run_by_order_then_registration() -> None:
    calls: list[str] = []
    pipeline = _pipeline([])

    def recording(name: str) -> Hook:
        async def hook(exchange: TestExchange) -> None:
            calls.append(name)

        return hook

    pipeline.notify(Stage.POST_COMMIT, recording("late"), "late", order=50)
    pipeline.notify(Stage.POST_COMMIT, recording("early"), "early", order=-10)
    pipeline.notify(Stage.POST_COMMIT, recording("tie-1"), "tie-1", order=20)
    pipeline.notify(Stage.POST_COMMIT, recording("tie-2"), "tie-2", order=20)
    assert pipeline.hooks(Stage.POST_COMMIT) == ["early", "post-commit", "tie-1", "tie-2", "late"]
    await pipeline.handle(_exchange())
    assert calls == ["early", "tie-1", "tie-2", "late"]


async def test_a_door_that_does_not_describe_the_access_is_refused() -> None:
    calls: list[str] = []

    def prepare(exchange: TestExchange) -> None:
        calls.append("prepare")

    async def act(exchange: TestExchange) -> Answer:
        calls.append("act")
        return Answer(200)

    pipeline = Pipeline(prepare, act, _render)
    response = await pipeline.handle(_exchange())
    assert response.status == 500
    assert calls == ["prepare"]


async def test_an_unexpected_exception_is_a_500_without_details() -> None:
    def prepare(exchange: TestExchange) -> None:
        exchange.access = _describe(exchange)

    async def act(exchange: TestExchange) -> Answer:
        raise RuntimeError("secret patient detail")

    pipeline = Pipeline(prepare, act, _render)
    response = await pipeline.handle(_exchange())
    assert response.status == 500
    assert "secret" not in response.text


async def test_notification_failures_never_break_a_request() -> None:
    calls: list[str] = []
    pipeline = _pipeline(calls)

    async def broken(exchange: TestExchange) -> None:
        raise RuntimeError("metrics down")

    pipeline.notify(Stage.AUDIT, broken, "metrics")
    assert (await pipeline.handle(_exchange())).status == 200
    assert "metrics" in pipeline.hooks(Stage.AUDIT)


async def test_a_failing_audit_withholds_the_answer() -> None:
    """An audit hook's refusal (the audit store is unavailable: MB-1090) is the answer; an
    unexpected failure is MB-1000 (500). Never the act's data."""
    calls: list[str] = []
    response = await _pipeline(calls, fail_at=Stage.AUDIT).handle(_exchange())
    assert response.status == 403  # the hook's AccessError (MB-1030), not the act's 200

    pipeline = _pipeline([])

    async def broken(exchange: TestExchange) -> None:
        raise RuntimeError("audit store gone")

    pipeline.intervene(Stage.AUDIT, broken, "broken-audit")
    assert (await pipeline.handle(_exchange())).status == 500


def test_act_cannot_be_hooked() -> None:
    with pytest.raises(ValueError, match="act"):
        _pipeline([]).intervene(Stage.ACT, _noop)
    with pytest.raises(ValueError, match="act"):
        _pipeline([]).notify(Stage.ACT, _noop)


async def _noop(exchange: TestExchange) -> None:
    return None


def _seen_by_act(register: list[tuple[bool, bool]]) -> Pipeline[str, Answer]:
    """A pipeline whose act answers `showing,hiding` as it saw them; one consent-show
    hook per (wants_items, hides) pair."""

    def prepare(exchange: TestExchange) -> None:
        exchange.access = _describe(exchange)

    async def act(exchange: TestExchange) -> Answer:
        return Answer(200, f"{exchange.showing},{exchange.hiding}")

    pipeline = Pipeline(prepare, act, _render)
    for wants, hides in register:
        pipeline.notify(
            Stage.CONSENT_SHOW, _noop, wants_items=lambda _, wants=wants: wants, hides=hides
        )
    return pipeline


@pytest.mark.parametrize(
    ("register", "seen"),
    [
        ([], "False,False"),
        ([(True, False)], "True,False"),  # audit.shown-patients alone: no second read
        ([(True, False), (True, True)], "True,True"),
        ([(True, False), (False, True)], "True,False"),  # consent.show not wanting items
        ([(False, True)], "False,False"),
    ],
)
async def test_the_act_counts_every_match_only_for_a_hook_that_hides(
    register: list[tuple[bool, bool]], seen: str
) -> None:
    response = await _seen_by_act(register).handle(_exchange())
    assert response.text == seen
