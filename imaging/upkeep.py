"""The ImagingStudy upkeep's retry rule, and what an operator sees and does about it.

A study whose FHIR side fails is tried again after an exponentially growing delay and,
after `max_attempts`, parked with its reason: never retried in a loop. `medbridge dicom
pending` lists the waiting and parked studies; `--retry` makes them due again and runs
them at once. The composition root offers `pending` and `retry` as admin operations
("dicom/pending", "dicom/retry") so the command works through a running server.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imaging.fhir_link import StudyLinker


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    first_delay: float = 2.0  # seconds before the second attempt; doubled after each
    max_delay: float = 300.0
    max_attempts: int = 8  # then parked: 2+4+...+256 s, about 8.5 minutes of tries

    def delay(self, attempts: int) -> float | None:
        """Seconds until the next try after `attempts` failures; None: park the study."""
        if attempts >= self.max_attempts:
            return None
        return float(min(self.first_delay * 2 ** (attempts - 1), self.max_delay))


async def pending(linker: StudyLinker, payload: dict[str, Any]) -> dict[str, Any]:
    """The studies waiting for the upkeep (admin operation "dicom/pending")."""
    rows = await linker.index.upkeep_rows(int(payload.get("limit", 1000)))
    return {"studies": [_row(row) for row in rows]}


async def retry(linker: StudyLinker, payload: dict[str, Any]) -> dict[str, Any]:
    """Run the parked studies (or those named in "studies") again now ("dicom/retry")."""
    named = payload.get("studies")
    if named is not None and not (
        isinstance(named, list) and all(isinstance(uid, str) for uid in named)
    ):
        raise ValueError("studies must be a list of Study Instance UIDs")
    studies = await linker.index.unpark(named or None)
    linked = [study for study in studies if await linker.sync(study) is not None]
    answer = await pending(linker, {})
    return {"retried": studies, "linked": linked, **answer}


def _row(row: dict[str, Any]) -> dict[str, Any]:
    parked = bool(row.get("parked"))
    next_try = row.get("next")
    return {
        "study": row["_id"],
        "attempts": int(row.get("tries", 0)),
        "reason": row.get("reason", ""),
        "parked": parked,
        "next_try": None if parked or next_try is None else _iso(next_try),
        "last_failure": _iso(row["failed_at"]) if "failed_at" in row else None,
    }


def _iso(milliseconds: int) -> str:
    moment = datetime.datetime.fromtimestamp(milliseconds / 1000, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds")


def report(answer: dict[str, Any]) -> str:
    """The answer of pending/retry as lines for the terminal."""
    lines = []
    if "retried" in answer:
        lines.append(f"retried {len(answer['retried'])}, linked {len(answer['linked'])}")
    studies = answer.get("studies", [])
    if not studies:
        lines.append("no study waits for the ImagingStudy upkeep")
    for row in studies:
        state = "parked" if row["parked"] else f"next try {row['next_try'] or 'now'}"
        lines.append(f"{row['study']}  attempts {row['attempts']}  {state}  {row['reason'] or '-'}")
    return "\n".join(lines)
