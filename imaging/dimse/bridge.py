"""From pynetdicom's association threads into the server's asyncio loop, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class LoopBridge:
    """Runs coroutines on `loop` for code on other threads; never touches Mongo off-loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """The coroutine's result; TimeoutError (and the coroutine cancelled) when late."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result(self.timeout if timeout is None else timeout)
        except TimeoutError:
            future.cancel()
            raise

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Start the coroutine on the loop without waiting: a retrieve's pass runs while
        the association's thread sends what it hands over."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)
