"""imaging.coalesce: concurrent callers share one call, each gets its own results."""

from __future__ import annotations

import asyncio

import pytest

from imaging.coalesce import Coalescer


async def test_concurrent_submits_go_in_one_group_in_order() -> None:
    groups: list[list[int]] = []
    started, release = asyncio.Event(), asyncio.Event()

    async def run(items: list[int]) -> list[int]:
        groups.append(items)
        started.set()
        await release.wait()
        return [item * 10 for item in items]

    coalescer: Coalescer[int, int] = Coalescer(run)
    first = asyncio.create_task(coalescer.submit([1]))
    await started.wait()  # the first group is running: the next callers wait together
    later = [asyncio.create_task(coalescer.submit([n, n + 1])) for n in (2, 4)]
    await asyncio.sleep(0)
    release.set()
    assert await first == [10]
    assert [await task for task in later] == [[20, 30], [40, 50]]
    assert groups == [[1], [2, 3, 4, 5]]


async def test_a_failing_group_fails_its_callers_only() -> None:
    async def run(items: list[int]) -> list[int]:
        if 0 in items:
            raise ValueError("zero")
        return items

    coalescer: Coalescer[int, int] = Coalescer(run)
    with pytest.raises(ValueError, match="zero"):
        await coalescer.submit([0, 1])
    assert await coalescer.submit([2]) == [2]
    assert await coalescer.submit([]) == []


async def test_groups_are_bounded() -> None:
    sizes: list[int] = []

    async def run(items: list[int]) -> list[int]:
        sizes.append(len(items))
        await asyncio.sleep(0)
        return items

    coalescer: Coalescer[int, int] = Coalescer(run, limit=3)
    results = await asyncio.gather(*(coalescer.submit([n]) for n in range(7)))
    assert [r[0] for r in results] == list(range(7))
    assert max(sizes) <= 3
