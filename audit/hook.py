"""The audit stage's hook: one AuditEvent per access, durable before the answer leaves.

An access that is part of another (a bundle's entry, the FHIR writes of an HL7 message,
the worklist's searches of an MWL query) writes no event of its own: what it touched is
handed to its parent, whose one event lists it. The parent is audited after its children
(they run inside its act), so by then everything is known.

Registered as an intervention: when the chain cannot be written the access fails with
MB-1090 (503, HL7 AE, DIMSE 0x0110) instead of being answered unaudited.
"""

from __future__ import annotations

import socket
import time
from collections import OrderedDict
from typing import Any

from access.pipeline import Exchange
from audit.chain import AuditChain
from audit.event import Learned, build, learned_of

# children whose parent never reaches its audit (a crash between) are forgotten past this
MAX_WAITING_PARENTS = 10_000


class AuditTrail:
    def __init__(self, chain: AuditChain, source: str | None = None) -> None:
        self.chain = chain
        self.source = source or socket.gethostname()
        # request id of a parent access -> what its children touched so far
        self._children: OrderedDict[str, Learned] = OrderedDict()

    async def record(self, exchange: Exchange[Any, Any]) -> None:
        """AUDIT stage: fold a child into its parent, or write the access's event."""
        access = exchange.access
        learned = learned_of(access, exchange.touched)
        own = self._children.pop(exchange.context.request_id, None)
        if own is not None:
            learned.merge(own)
        if access is not None and access.parent is not None:
            parent = self._children.setdefault(access.parent.request_id, Learned())
            parent.merge(learned)
            while len(self._children) > MAX_WAITING_PARENTS:
                self._children.popitem(last=False)
            return
        event = build(access, exchange.context, learned, exchange.error, self.source, time.time())
        await self.chain.append(event)
