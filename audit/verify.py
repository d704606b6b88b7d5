"""`medbridge audit verify`: walk the AuditEvent chain and report what does not fit.

Altered: an event whose hash no longer matches its content, or whose chain fields were
changed. Removed: a sequence number missing (or the head naming events that are gone).
Inserted: an AuditEvent outside the chain (no chain extension, an id not of its
sequence), or a link whose previous hash is not its predecessor's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from pymongo.asynchronous.database import AsyncDatabase

from audit.chain import (
    AUDIT_TYPE,
    GENESIS,
    HEAD_COLLECTION,
    HEAD_ID,
    chain_link,
    event_id,
    link_hash,
)

Document = dict[str, Any]


@dataclass(slots=True)
class Report:
    checked: int = 0
    head: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> Document:
        return {"checked": self.checked, "head": self.head, "ok": self.ok,
                "problems": self.problems}  # fmt: skip


async def verify(database: AsyncDatabase[Document]) -> Report:
    """Every stored AuditEvent, in id order (= sequence order), checked against its
    predecessor and the head document."""
    report = Report()
    expected, previous = 1, GENESIS
    cursor = database[AUDIT_TYPE].find({}, {"raw": 1}).sort("_id", 1)
    async for document in cursor:
        report.checked += 1
        identifier = str(document["_id"])
        event = orjson.loads(document["raw"])
        link = chain_link(event)
        if link is None or identifier != event_id(link.sequence):
            report.problems.append(f"inserted: AuditEvent/{identifier} is not part of the chain")
            continue
        if link.sequence > expected:
            missing = f"{expected}" if link.sequence == expected + 1 else (
                f"{expected}-{link.sequence - 1}")  # fmt: skip
            report.problems.append(f"removed: sequence {missing} missing before {identifier}")
            previous = link.previous  # carry on from here: report each break once
        elif link.previous != previous:
            report.problems.append(
                f"inserted or altered: AuditEvent/{identifier} does not follow its predecessor"
            )
        if link_hash(link.sequence, link.previous, event) != link.hash:
            report.problems.append(f"altered: AuditEvent/{identifier} does not match its hash")
        expected, previous = link.sequence + 1, link.hash
    head = await database[HEAD_COLLECTION].find_one({"_id": HEAD_ID})
    report.head = int(head["sequence"]) if head is not None else 0
    if report.head != expected - 1:
        report.problems.append(
            f"removed: the chain's head is sequence {report.head}, the last event found "
            f"is {expected - 1}"
        )
    elif head is not None and head.get("hash") != previous:
        report.problems.append("altered: the last event does not match the chain's head")
    return report
