"""`Hl7Error`, the one exception of the HL7 door, and `attempt`, which turns any failure
into the ACK it deserves, so every message is answered and the listener never dies.

The mapping from failures to AE/AR and ERR-3 (HL7 table 0357) is documented in docs/hl7.md.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources

import yaml

from access.errors import AccessError
from access.failures import log_failure
from mappings.hl7v2.errors import MappingError

log = logging.getLogger(__name__)
# FHIR issue types of an access refused as a whole (an authorize or consent hook): AR
REJECTING = frozenset({"forbidden", "security"})

# HL7 table 0357, message error condition codes (data: table_0357.yaml)
TABLE_0357: dict[str, str] = {
    str(code): str(text)
    for code, text in yaml.safe_load(
        (resources.files("hl7_bridge") / "table_0357.yaml").read_text("utf-8")
    ).items()
}


class Hl7Error(Exception):
    """A failure with its answer: MSA-1 (AE or AR), ERR-3 code, ERR-2 location, ERR-8 text."""

    def __init__(self, ack_code: str, code: str, text: str, location: str = "") -> None:
        assert ack_code in ("AE", "AR")
        assert code in TABLE_0357
        self.ack_code = ack_code
        self.code = code
        self.text = text
        self.location = location
        super().__init__(f"{ack_code} {code} {location}: {text}")

    def __reduce__(self) -> tuple[type[Hl7Error], tuple[str, str, str, str]]:
        # rebuilt from its fields: it comes back from the body worker (processor.read_message)
        return Hl7Error, (self.ack_code, self.code, self.text, self.location)

    @classmethod
    def from_mapping(cls, error: MappingError) -> Hl7Error:
        return cls("AR" if error.reject else "AE", error.code, error.text, error.location)

    @classmethod
    def from_fhir(cls, error: AccessError, location: str = "") -> Hl7Error:
        # The store failing is no fault of the message: AR asks the sender to retry later.
        # A refused access (forbidden) rejects the message as a whole, not its content.
        ack = "AR" if error.code == "MB-1000" or error.entry.issue in REJECTING else "AE"
        code = error.entry.hl7 if error.entry.hl7 in TABLE_0357 else "207"
        return cls(ack, code, f"{error.code}: {error.diagnostics}"[:400], location)


@dataclass(frozen=True, slots=True)
class Hl7Warning:
    """A problem the message was applied despite: ERR with severity W (ERR-4) on an AA."""

    code: str  # ERR-3, HL7 table 0357
    text: str  # ERR-8
    location: str  # ERR-2

    @classmethod
    def from_mapping(cls, error: MappingError) -> Hl7Warning:
        return cls(error.code, f"{error.text}; the field was not applied", error.location)


class Interrupted(Exception):
    """Stop processing without an answer of its own: the caller knows what to do next
    (the message turned out to be a resend, or could not be archived)."""


@dataclass(slots=True)
class Outcome:
    """What happened to one message; `error` is None when it was applied."""

    error: Hl7Error | None = None


@contextmanager
def attempt(outcome: Outcome, what: str) -> Iterator[None]:
    """Run a step; any exception becomes `outcome.error` (AE/AR), logged, never raised."""
    try:
        yield
    except Interrupted:
        raise
    except Hl7Error as error:
        outcome.error = error
        log.info("%s answered %s %s", what, error.ack_code, error.code)
    except MappingError as error:
        outcome.error = Hl7Error.from_mapping(error)
        log.info("%s answered %s %s", what, outcome.error.ack_code, error.code)
    except AccessError as error:
        outcome.error = Hl7Error.from_fhir(error)
        log.info("%s answered %s (%s)", what, outcome.error.ack_code, error.code)
    except Exception:
        log_failure(log, "%s failed unexpectedly", what)
        outcome.error = Hl7Error("AR", "207", "internal error; the message was kept for replay")
