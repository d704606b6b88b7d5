"""The embedded store's entry point: nx-27017, with its commands locking every database they touch.

nx-27017 (0.8.1) keeps one SQLite connection and one lock per database and takes the lock
of the command's `$db`. A client-level `bulkWrite` (how pymongo's `client.bulk_write`
sends every FHIR and DICOM index write) is addressed to `admin`, so it ran under the
`admin` lock while writing through another database's connection, at the same time as a
find on that database. A find whose filter calls back into Python from inside SQLite
(`$regex` is a Python function registered on the connection) then waits for the GIL
while holding the connection, and the write waits for the connection while holding the
GIL: the whole store stopped answering, for good (issue 17, H3-accepted). Here a
`bulkWrite` also takes the lock of each database it names, and the other `admin`
commands that act on a session's databases (commit, abort, end) take every database's
lock; locks are taken in name order, so two such commands cannot deadlock each other.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterable
from typing import Any

from nx_27017 import handler as nx_handler
from nx_27017.nx_27017 import main as nx_main

#: `admin` commands that reach into other databases' connections through a session
SESSION_COMMANDS = frozenset({"commitTransaction", "abortTransaction", "endSessions"})


def _body_and_namespaces(msg: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    body: dict[str, Any] = {}
    namespaces: list[Any] = []
    for section_type, doc in msg.get("sections") or ():
        if not isinstance(doc, dict):
            continue
        if section_type == "body":
            body = doc
            namespaces += doc.get("nsInfo") or []
        elif section_type == "payload":
            namespaces += doc.get("nsInfo") or []
    return body, namespaces


def databases_of(msg: Any, known: Iterable[str]) -> list[str]:
    """Every database a wire message's command may touch, in lock order."""
    names = {nx_handler._msg_db_name(msg) if isinstance(msg, dict) else "test"}
    if not isinstance(msg, dict):
        return sorted(names)
    body, namespaces = _body_and_namespaces(msg)
    if "bulkWrite" in body:
        for entry in namespaces:
            namespace = entry.get("ns", "") if isinstance(entry, dict) else ""
            names.add(str(namespace).partition(".")[0] or "test")
    elif names == {"admin"} and SESSION_COMMANDS & body.keys():
        names.update(known)
    return sorted(names)


def _lock_every_database(
    command: Callable[[Any, dict[str, Any]], Any],
) -> Callable[[Any, dict[str, Any]], Any]:
    @functools.wraps(command)
    def locked(self: Any, msg: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_mode", "single") != "files":
            return command(self, msg, *args, **kwargs)  # one lock for everything already
        with self._dict_lock:
            known = list(self._locks)
        with contextlib.ExitStack() as stack:
            for name in databases_of(msg, known):
                stack.enter_context(self._lock_for(name))
            return command(self, msg, *args, **kwargs)

    return locked


def install() -> None:
    """Replace nx-27017's one-database lock around `handle_command` (idempotent)."""
    handler_class = nx_handler.NeoSQLiteHandler
    current = handler_class.handle_command
    if getattr(current, "_medbridge_locks", False):
        return
    # `handle_command` is nx-27017's `_serialize` wrapper; `__wrapped__` is the command
    # itself, which then runs under our locks instead of the single `$db` one
    unlocked = getattr(current, "__wrapped__", None)
    if unlocked is None:
        raise RuntimeError("nx-27017 changed: handle_command is no longer lock-wrapped")
    replacement = _lock_every_database(unlocked)
    replacement._medbridge_locks = True  # type: ignore[attr-defined]
    handler_class.handle_command = replacement


def main() -> None:
    install()
    nx_main()


if __name__ == "__main__":
    main()
