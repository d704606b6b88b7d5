"""The peers table's per-service rule as an authorize hook: which DIMSE services a calling
AE title may use.

It reads only the `Access` (door, action, actor): the calling AE title is the actor of
every DIMSE access (`Actor("dicom-ae", title)`). What must be decided at A-ASSOCIATE
time stays at the association (`service.build_ae`: an unknown calling AE title of a
closed server is rejected there; `guard.py`: the slots), because no request exists yet
to pass the pipeline. `medbridge/compose.py` registers it as `dimse.ae-titles`.
"""

from __future__ import annotations

from typing import Any

from access.access import Action
from access.context import Door
from access.errors import AccessError
from access.pipeline import Exchange
from imaging.dimse.config import DimseConfig

NAME = "dimse.ae-titles"
# the peers table's service names (`services: [...]`) for each DIMSE action
SERVICE_OF: dict[Action, str] = {
    Action.C_ECHO: "echo",
    Action.C_STORE: "store",
    Action.C_FIND: "find",
    Action.MWL: "worklist",
    Action.C_MOVE: "move",
    Action.C_GET: "get",
}


class AeTitleRules:
    """Refuse (MB-4001, DIMSE 0x0124; a C-MOVE A801) a service the calling AE title's
    row of the peers table does not list, or any service of an unknown AE title when
    the server is closed."""

    def __init__(self, config: DimseConfig) -> None:
        self.config = config

    async def __call__(self, exchange: Exchange[Any, Any]) -> None:
        access = exchange.access
        if access is None or access.door is not Door.DIMSE or access.actor.kind != "dicom-ae":
            return
        # the FHIR requests an MWL access makes (its children) are the MWL's own
        service = SERVICE_OF.get(access.action)
        if service is None:
            return
        if not self.config.allows(access.actor.identifier, service):
            raise AccessError("MB-4001", f"the calling AE title may not use {service}")
