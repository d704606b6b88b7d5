"""consent-show hides items before the answer is built, and only when a hook is there."""

from __future__ import annotations

from dataclasses import dataclass

from access.access import Access, Action
from access.context import SYSTEM, Actor, Door, RequestContext
from access.errors import AccessError
from access.pipeline import Exchange, Pipeline, Stage, never
from access.shown import Item, Shown


@dataclass
class Listing:
    status: int
    names: list[str]
    total: int | None


ListingExchange = Exchange[str, Listing]
RECORDS = [
    Item("Observation", str(n), b"{}", frozenset({"p1" if n % 2 else "p2"})) for n in range(5)
]


def _pipeline(built: list[str]) -> Pipeline[str, Listing]:
    def prepare(exchange: ListingExchange) -> None:
        exchange.access = Access(Door.INTERNAL, Action.SEARCH_TYPE, SYSTEM)

    def build(shown: Shown[Listing]) -> Listing:
        built.append("build")
        visible = shown.visible
        return Listing(200, [i.resource_id for i in visible], len(visible))

    async def act(exchange: ListingExchange) -> Listing:
        if not exchange.showing:
            return Listing(200, [i.resource_id for i in RECORDS], len(RECORDS))
        exchange.items = Shown(RECORDS, build)
        return Listing(200, [], None)

    def render(exchange: ListingExchange, error: AccessError) -> Listing:
        return Listing(error.status, [], None)

    return Pipeline(prepare, act, render)


def _exchange() -> ListingExchange:
    return Exchange("list", RequestContext(Door.INTERNAL))


async def test_without_a_show_hook_the_act_answers_directly() -> None:
    built: list[str] = []
    exchange = _exchange()
    answer = await _pipeline(built).handle(exchange)
    assert (answer.names, answer.total) == (["0", "1", "2", "3", "4"], 5)
    assert exchange.items is None
    assert built == []


async def test_a_show_hook_removes_items_and_the_answer_counts_what_remains() -> None:
    built: list[str] = []
    pipeline = _pipeline(built)
    hidden: list[int] = []

    async def hide_p1(exchange: ListingExchange) -> None:
        assert exchange.items is not None
        hidden.append(exchange.items.hide(lambda item: "p1" in item.patients))

    pipeline.intervene(Stage.CONSENT_SHOW, hide_p1)
    exchange = _exchange()
    answer = await pipeline.handle(exchange)
    assert (answer.names, answer.total) == (["0", "2", "4"], 3)
    assert hidden == [2]
    assert built == ["build"]
    assert exchange.items is not None
    assert [i.resource_id for i in exchange.items.hidden] == ["1", "3"]
    assert exchange.items.changed


def test_hide_counts_only_newly_hidden_items() -> None:
    shown: Shown[int] = Shown(RECORDS, lambda s: len(s.visible))
    assert shown.hide(lambda item: item.resource_id == "0") == 1
    assert shown.hide(lambda item: item.resource_id in ("0", "1")) == 1
    assert shown.build() == 3
    assert not shown.visible_at(0)
    assert shown.visible_at(2)


async def test_reshaped_items_keep_the_builder_and_what_was_hidden() -> None:
    def build(shown: Shown[Listing]) -> Listing:
        visible = shown.visible
        return Listing(200, [i.resource_id for i in visible], len(visible))

    original = Shown(RECORDS, build)
    original.hide(lambda item: item.resource_id == "0")
    masked = [Item(i.resource_type, i.resource_id, b"{}", frozenset({"p1"})) for i in RECORDS]

    def finish(listing: Listing) -> Listing:
        return Listing(listing.status, [f"masked-{n}" for n in listing.names], listing.total)

    reshaped = original.reshaped(masked, finish)
    assert all(item.patients == {"p1"} for item in reshaped.all)
    reshaped.hide(lambda item: item.resource_id == "1")  # a later hook hides one more
    answer = await reshaped.built()
    assert answer.names == ["masked-2", "masked-3", "masked-4"]
    assert answer.total == 3


async def test_items_are_described_only_for_a_show_hook_that_wants_them() -> None:
    """A consent-show hook says per exchange whether it reads items (consent decides only
    for signed-in users): for anyone else the act answers directly."""
    built: list[str] = []
    pipeline = _pipeline(built)
    seen: list[bool] = []

    async def hide_p1(exchange: ListingExchange) -> None:
        seen.append(exchange.items is not None)
        if exchange.items is not None:
            exchange.items.hide(lambda item: "p1" in item.patients)

    async def observe(exchange: ListingExchange) -> None:
        return None

    def users_only(exchange: Exchange[object, object]) -> bool:
        return exchange.context.actor.kind == "user"

    pipeline.intervene(Stage.CONSENT_SHOW, hide_p1, wants_items=users_only)
    pipeline.notify(Stage.CONSENT_SHOW, observe, wants_items=never)
    exchange = _exchange()
    answer = await pipeline.handle(exchange)
    assert (answer.names, answer.total) == (["0", "1", "2", "3", "4"], 5)
    assert (exchange.showing, exchange.items, built, seen) == (False, None, [], [False])

    user: ListingExchange = Exchange(
        "list", RequestContext(Door.INTERNAL, actor=Actor("user", "u1"))
    )
    answer = await pipeline.handle(user)
    assert (answer.names, answer.total) == (["0", "2", "4"], 3)
    assert (user.showing, built, seen) == (True, ["build"], [False, True])
