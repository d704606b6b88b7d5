"""The authorization server's events: sign-ins (success and failure) and token issues.

They are not accesses of the pipeline (no record is read), so the authorization server
calls `SecurityAudit` itself (smart/authorize.py, smart/server.py), and the events go
through the same `AuditChain` as every access. IHE BALP has no sign-in profile of its
own: DICOM PS3.15 A.5.3.8 *User Authentication* (DCM 110114) with the subtype *Login*
(DCM 110122), as FHIR's `audit-event-example-login`; a token issue follows IHE IUA's
ITI-71 *Get Access Token* pattern (BALP `IHE.IUA.71`): type 110114, subtype ITI-71, the
client, the user and this server as agents, the token as the entity, named by its `jti`
(never the token itself). The codes are data (`codes.json` `security_events`).
"""

from __future__ import annotations

import time
from typing import Any

from audit.chain import AuditChain
from audit.event import IP_ADDRESS, codes, instant

Document = dict[str, Any]
SITE = "auth"  # AuditEvent.source.site: the authorization server's routes (/auth)
# entity.what.identifier of a token: its jti
TOKEN_SYSTEM = "urn:medbridge:token"  # noqa: S105 (a URI, not a secret)
CLIENT_SYSTEM = "urn:medbridge:client"
USER_SYSTEM = "urn:medbridge:actor:user"
MAX_TEXT = 200  # a user name or address longer than this is cut, not stored whole


class SecurityAudit:
    """Writes the authorization server's events; each call returns once the event is
    durable and raises (MB-1090) when it cannot be, so the caller can fail closed."""

    def __init__(self, chain: AuditChain, source: str) -> None:
        self.chain = chain
        self.source = source

    async def sign_in(
        self,
        *,
        user: str | None,
        fhir_user: str | None,
        client_id: str | None,
        address: str | None,
        succeeded: bool,
        reason: str | None = None,
    ) -> None:
        event = sign_in_event(user, fhir_user, client_id, address, succeeded, reason,
                              self.source, time.time())  # fmt: skip
        await self.chain.append(event)

    async def token_issued(
        self,
        *,
        client_id: str,
        grant_type: str,
        scope: str,
        token_id: str,
        subject: str,
        fhir_user: str | None,
        patient: str | None,
        address: str | None,
    ) -> None:
        event = token_event(client_id, grant_type, scope, token_id, subject, fhir_user,
                            patient, address, self.source, time.time())  # fmt: skip
        await self.chain.append(event)


def sign_in_event(
    user: str | None,
    fhir_user: str | None,
    client_id: str | None,
    address: str | None,
    succeeded: bool,
    reason: str | None,
    source: str,
    recorded: float,
) -> Document:
    """A Login event. `user` is the account when one of that name exists; a name that
    matches no account is not recorded (it may be a password typed in the wrong field)."""
    table = codes()["security_events"]
    who: Document = {"display": "unknown user"}
    if user is not None:
        who = {"identifier": {"system": USER_SYSTEM, "value": user[:MAX_TEXT]}}
        if fhir_user:
            who["reference"] = fhir_user
    person: Document = {"type": {"coding": [codes()["agent_types"]["user"]]}, "who": who,
                        "requestor": True}  # fmt: skip
    if address:
        person["network"] = {"address": address[:MAX_TEXT], "type": IP_ADDRESS}
    event = _common(table["user-authentication"], table["login"], recorded, source)
    event["outcome"] = "0" if succeeded else "4"
    if not succeeded:
        event["outcomeDesc"] = reason or "sign-in refused"
    event["agent"] = [person, *_client(client_id), _server()]
    return event


def token_event(
    client_id: str,
    grant_type: str,
    scope: str,
    token_id: str,
    subject: str,
    fhir_user: str | None,
    patient: str | None,
    address: str | None,
    source: str,
    recorded: float,
) -> Document:
    """A Get Access Token event: the client asked (requestor, with its address and the
    token's jti as policy), for a user unless it is a backend service's own token."""
    table = codes()
    client: Document = {
        "type": {"coding": [table["application_agent_type"]]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}},
        "requestor": True,
        "policy": [token_id],
    }
    if address:
        client["network"] = {"address": address[:MAX_TEXT], "type": IP_ADDRESS}
    agents = [client]
    if subject != client_id:
        who: Document = {"identifier": {"system": USER_SYSTEM, "value": subject[:MAX_TEXT]}}
        if fhir_user:
            who["reference"] = fhir_user
        agents.append({"type": {"coding": [table["agent_types"]["user"]]}, "who": who,
                       "requestor": False})  # fmt: skip
    agents.append(_server())
    events = table["security_events"]
    event = _common(events["user-authentication"], events["get-access-token"], recorded, source)
    event["outcome"] = "0"
    event["agent"] = agents
    types, roles = table["entity_types"], table["entity_roles"]
    entities: list[Document] = []
    if patient:
        # the token opens this patient's records: it shows in the patient's access log
        entities.append({"what": {"reference": f"Patient/{patient}"}, "type": types["person"],
                         "role": roles["patient"]})  # fmt: skip
    entities.append({
        "what": {"identifier": {"system": TOKEN_SYSTEM, "value": token_id}},
        "type": types["system-object"],
        "role": roles["job"],
        "detail": [
            {"type": "grant_type", "valueString": grant_type},
            {"type": "scope", "valueString": scope},
        ],
    })  # fmt: skip
    event["entity"] = entities
    return event


def _common(kind: Document, subtype: Document, recorded: float, source: str) -> Document:
    return {
        "resourceType": "AuditEvent",
        "type": kind,
        "subtype": [subtype],
        "action": "E",
        "recorded": instant(recorded),
        "source": {
            "site": SITE,
            "observer": {"display": source},
            "type": [codes()["source_type"]],
        },
    }


def _client(client_id: str | None) -> list[Document]:
    if not client_id:
        return []
    return [{
        "type": {"coding": [codes()["application_agent_type"]]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id[:MAX_TEXT]}},
        "requestor": False,
    }]  # fmt: skip


def _server() -> Document:
    return {
        "type": {"coding": [codes()["server_agent_type"]]},
        "who": {"display": "MedBridge authorization server"},
        "requestor": False,
    }
