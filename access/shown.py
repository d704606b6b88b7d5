"""What an access would show, as items, before any byte of the answer is built.

The act of a door that shows records (FHIR read, search, history, $everything) describes
them as `Item`s; consent-show hooks may `hide` some; the door then builds its answer
from what remains. When no consent-show hook is registered the act builds its answer
directly and no `Shown` exists: the fast path does nothing extra.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

ResponseT = TypeVar("ResponseT")


@dataclass(frozen=True, slots=True)
class Item:
    """One record the answer would contain, with its raw stored bytes."""

    resource_type: str
    resource_id: str
    raw: bytes | None  # None for a deletion in a history
    patients: frozenset[str]  # the Patient ids whose compartment holds it
    mode: str = "match"  # match | include (search), version (history)

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


class Shown(Generic[ResponseT]):
    """The items of one answer and how to build that answer from those still visible."""

    def __init__(
        self,
        items: Sequence[Item],
        # async for a door whose answer needs more reads (DICOMweb: objects, parents)
        build: Callable[[Shown[ResponseT]], ResponseT | Awaitable[ResponseT]],
    ) -> None:
        self.all: tuple[Item, ...] = tuple(items)
        self._hidden: set[int] = set()
        self._build = build

    def hide(self, predicate: Callable[[Item], bool]) -> int:
        """Hide every item `predicate` holds for; the number newly hidden."""
        before = len(self._hidden)
        self._hidden.update(i for i, item in enumerate(self.all) if predicate(item))
        return len(self._hidden) - before

    def visible_at(self, position: int) -> bool:
        return position not in self._hidden

    @property
    def visible(self) -> list[Item]:
        return [item for i, item in enumerate(self.all) if i not in self._hidden]

    @property
    def hidden(self) -> list[Item]:
        return [item for i, item in enumerate(self.all) if i in self._hidden]

    @property
    def changed(self) -> bool:
        return bool(self._hidden)

    def reshaped(
        self, items: Sequence[Item], finish: Callable[[ResponseT], ResponseT]
    ) -> Shown[ResponseT]:
        """The same answer over `items` (one for one, e.g. masked copies), passed through
        `finish` once built: a hook that changes what an item shows keeps the door's
        builder. Items already hidden stay hidden."""
        if len(items) != len(self.all):
            raise ValueError("reshaped items must match the items one for one")
        build = self._build

        async def finished(shown: Shown[ResponseT]) -> ResponseT:
            answer = build(shown)
            if isinstance(answer, Awaitable):
                awaited: ResponseT = await answer
                return finish(awaited)
            return finish(answer)

        reshaped: Shown[ResponseT] = Shown(items, finished)
        reshaped._hidden = set(self._hidden)
        return reshaped

    def build(self) -> ResponseT | Awaitable[ResponseT]:
        return self._build(self)

    async def built(self) -> ResponseT:
        """The answer from what remains, awaited when the door builds it asynchronously."""
        answer = self._build(self)
        if isinstance(answer, Awaitable):
            awaited: ResponseT = await answer
            return awaited
        return answer
