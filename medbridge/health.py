"""Which listeners are up; `GET /health` answers 200 only when all of them are."""

from __future__ import annotations


class Readiness:
    def __init__(self) -> None:
        self._listeners: dict[str, bool] = {}

    def expect(self, name: str) -> None:
        self._listeners.setdefault(name, False)

    def ready(self, name: str) -> None:
        self._listeners[name] = True

    def down(self, name: str) -> None:
        self._listeners[name] = False

    @property
    def all_up(self) -> bool:
        return bool(self._listeners) and all(self._listeners.values())

    def report(self) -> dict[str, str]:
        return {name: "up" if up else "starting" for name, up in self._listeners.items()}
