"""access.loop_turns and its users: long work on the loop gives other requests turns."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any, cast

import orjson

from access.loop_turns import JOIN_OFF_LOOP_BYTES, Turns, joined
from imaging.dicomweb import qido


async def _counting(work: Any) -> tuple[Any, int]:
    """Run `work` beside a task that counts the loop turns it gets meanwhile."""
    turns = 0
    running = True

    async def other_request() -> None:
        nonlocal turns
        while running:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_request())
    await asyncio.sleep(0)
    started = turns
    try:
        result = await work
    finally:
        running = False
        await other
    return result, turns - started


async def test_take_yields_only_once_the_time_is_spent() -> None:
    turns = Turns(every=3600)
    assert not turns.due()

    async def busy() -> None:
        for _ in range(1000):
            await turns.take()

    _, taken = await _counting(busy())
    assert taken == 0  # never due: no yield at all, the work is not slowed
    eager = Turns(every=0)
    assert eager.due()

    async def spins() -> None:
        for _ in range(5):
            await eager.take()

    _, taken = await _counting(spins())
    assert taken >= 5


async def test_a_thousand_qido_results_let_the_loop_run() -> None:
    rows = [
        {"_id": f"1.2.3.{n}", "PatientName": f"Doe^{n}", "StudyDate": "20260101",
         "mods": "CT\\MR", "ns": 2, "ni": 7}
        for n in range(1000)
    ]  # fmt: skip
    query = qido.Query("study", limit=1000)
    started = time.perf_counter()
    body, taken = await _counting(
        qido.render(cast(Any, None), query, rows, "http://x/dicomweb", None)
    )
    spent = time.perf_counter() - started
    answer = orjson.loads(body)
    assert len(answer) == 1000
    assert answer[999]["0020000D"]["Value"] == ["1.2.3.999"]
    assert answer[0]["00080061"]["Value"] == ["CT", "MR"]
    # one turn per 0.5 ms of building at least (the old loop built all 1,000 in one go)
    assert taken >= 2 or spent < 0.001


async def test_a_large_join_lets_the_loop_run_and_a_small_one_is_done_in_place() -> None:
    large = [os.urandom(1 << 20) for _ in range(JOIN_OFF_LOOP_BYTES // (1 << 20) + 1)]
    got, turns = await _counting(joined(large))
    assert got == b"".join(large)
    assert type(got) is bytes
    assert turns >= 1  # joined on a thread: the loop ran meanwhile
    small = [b"a" * 1000, b"b" * 2000]
    got, turns = await _counting(joined(small))
    assert got == b"a" * 1000 + b"b" * 2000
    assert turns == 0
    assert await joined([b"only"]) == b"only"
    assert await joined([]) == b""
