"""DIMSE status codes (PS3.4, PS3.7 C) and `attempt`: every handler answers with a status.

MedBridge errors carry their DIMSE status in the error catalog; anything else becomes
the service's "unable to process" failure, and a loop that did not answer in time
becomes "out of resources", so a peer always gets a response, never a dropped
association.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager
from dataclasses import dataclass

from access.errors import AccessError

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
PENDING_WARNING = 0xFF01  # C-FIND: optional keys not supported
CANCEL = 0xFE00
NOT_AUTHORIZED = 0x0124  # PS3.7 C: refused, not authorized
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_MATCHES = 0xA701  # C-MOVE/C-GET: unable to calculate matches
OUT_OF_RESOURCES_SUBOPERATIONS = 0xA702  # C-MOVE/C-GET: unable to perform sub-operations
MOVE_DESTINATION_UNKNOWN = 0xA801
IDENTIFIER_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
UNABLE_TO_PROCESS = 0xC001
SUBOPERATIONS_WARNING = 0xB000


@dataclass(slots=True)
class Answer:
    """The status a handler gives back; `attempt` overwrites it on failure."""

    status: int = SUCCESS
    code: str | None = None


def status_of(error: BaseException, fallback: int) -> tuple[int, str | None]:
    """The DIMSE status of an exception: catalog status, timeout -> A700, else fallback."""
    if isinstance(error, AccessError):
        return error.entry.dimse, error.code
    if isinstance(error, TimeoutError | FutureTimeout):
        return OUT_OF_RESOURCES, None
    return fallback, None


@contextmanager
def attempt(service: str, fallback: int = CANNOT_UNDERSTAND) -> Iterator[Answer]:
    """Run one handler body; any exception becomes a failure status, logged without PHI."""
    answer = Answer()
    try:
        yield answer
    except Exception as error:
        answer.status, answer.code = status_of(error, fallback)
        if isinstance(error, AccessError):
            log.info("%s refused: %s", service, error.code)
        else:
            # exception texts may quote header values: the traceback only at DEBUG
            log.error("%s failed: %s", service, type(error).__name__)
            log.debug("%s failure details", service, exc_info=True)
