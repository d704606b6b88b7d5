"""The consent hooks of the shared pipeline (registered by medbridge/compose.py).

`decide` (Stage.CONSENT_DECIDE) lets a lay user write a patient's Consents only as
that patient (adult) or a minor's representative (consent/writers.py). `show`
(Stage.CONSENT_SHOW) hides the items the engine denies to this actor and purpose,
and notes every override (rule 3) for the audit stage in
`context.notes["consent.overrides"]`. `written` (Stage.POST_COMMIT) drops the Consent
cache after any Consent write. Only accesses by a signed-in user over the HTTP doors are
decided: a backend service, the server's own linkers, HL7 peers, DICOM AEs and the local
operator act for the institution and are not filtered (docs/consent.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import orjson

from access.access import Action
from access.context import Door
from access.errors import AccessError, catalog
from access.pipeline import Exchange
from access.shown import Item
from consent.cache import SOURCES, ActorRecord, ConsentCache
from consent.consents import consent_facts, unhideable_hidden
from consent.deidentify import deidentified
from consent.engine import decide
from consent.facts import (
    LAY_TYPES,
    ActorFacts,
    ConsentFacts,
    Decision,
    PatientFacts,
    Policy,
    RecordFacts,
    Relationship,
)
from consent.records import patient_facts, record_facts
from consent.relations import relationships
from consent.research import identifying
from consent.uniform import uniform
from consent.writers import may_write
from fhir_server.errors import ISSUE_CODE_SYSTEM
from fhir_server.exchange import FhirRequest, FhirResponse
from fhir_server.repository import Repository

log = logging.getLogger(__name__)

OVERRIDES_NOTE = "consent.overrides"
DOORS = frozenset({Door.FHIR, Door.DICOMWEB})
WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.PATCH, Action.DELETE})
CHECKED = frozenset({Action.CREATE, Action.UPDATE})  # a body to check (a patch has none)
UNHIDEABLE = "MB-1500"
RESEARCH_QUERY = "MB-1031"
SEARCHES = frozenset({Action.SEARCH_TYPE, Action.SEARCH_SYSTEM})
ARRIVED_NOTE = "consent.arrived"  # time.monotonic() at consent-decide, for the cache


NO_ACTOR = ActorRecord(frozenset(), frozenset(), None)
DECISIONS_KEPT = 8192  # decisions kept by their facts (a few MB)


@dataclass(slots=True)
class _Patient:
    facts: PatientFacts
    actor: ActorFacts
    consents: list[ConsentFacts] = field(default_factory=list)


class ConsentHooks:
    def __init__(self, repository: Repository, policy: Policy) -> None:
        self.repository = repository
        self.policy = policy
        self.cache = ConsentCache(repository)

    def wants_items(self, exchange: Exchange[Any, Any]) -> bool:
        """Only a signed-in user's answers on the HTTP doors are decided: for anyone else
        the door need not describe its answer as items."""
        return exchange.context.door in DOORS and exchange.context.actor.kind == "user"

    async def show(self, exchange: Exchange[Any, Any]) -> None:
        items, context, access = exchange.items, exchange.context, exchange.access
        if items is None or access is None or not self.wants_items(exchange):
            return
        patients = {p for item in items.all for p in item.patients}
        if not patients:
            return
        await self.cache.refresh(context.notes.get(ARRIVED_NOTE))
        fhir_user = context.actor.display
        purpose = access.purpose_of_use or context.purpose_of_use
        today = datetime.now(UTC).date()
        actor = await self.cache.actor(fhir_user) if fhir_user is not None else NO_ACTOR
        known = {p: await self._patient(p, fhir_user, actor, today) for p in sorted(patients)}
        # the decision of every record of a patient, None where it depends on the record;
        # tried for a patient of several items only (it costs up to two decisions)
        shown = Counter(p for item in items.all for p in item.patients)
        every_record = {
            p: uniform(facts.actor, purpose, facts.facts, facts.consents, self.policy)
            if shown[p] > 1
            else None
            for p, facts in known.items()
        }
        # research sees FHIR records only de-identified (rule 7); a DICOM object carries
        # its patient's name and ids in the header and often burned into the pixels,
        # which no transform of ours can promise to remove: research sees no images
        deidentifies = context.door is Door.FHIR
        denied: set[int] = set()
        masked: set[str] = set()
        overrides: list[dict[str, str]] = []
        for position, item in enumerate(items.all):
            record: RecordFacts | None = None  # parsed only for a patient it can matter to
            for patient_id in item.patients:
                facts = known[patient_id]
                decision = every_record[patient_id]
                if decision is None:
                    record = record or _record(item)
                    decision = _decided(
                        facts.actor, purpose, facts.facts, record, tuple(facts.consents),
                        self.policy,
                    )  # fmt: skip
                if not decision.permit or (decision.deidentify and not deidentifies):
                    denied.add(position)
                elif decision.deidentify:
                    masked.add(item.reference)
                elif decision.override is not None:
                    overrides.append(_override(decision, patient_id, item, purpose))
        if denied:
            # by identity: the items of one answer are distinct objects
            chosen = {id(items.all[position]) for position in denied}
            hidden = items.hide(lambda candidate: id(candidate) in chosen)
            log.debug("consent hid %d of %d items", hidden, len(items.all))
        if overrides:
            context.notes.setdefault(OVERRIDES_NOTE, []).extend(overrides)
        if masked:
            exchange.items = items.reshaped(
                [_deidentified_item(item, masked) for item in items.all],
                lambda answer: deidentified_answer(answer, masked),
            )

    async def _patient(
        self, patient_id: str, fhir_user: str | None, actor: ActorRecord, today: date
    ) -> _Patient:
        patient = await self.cache.patient(patient_id)
        related: frozenset[Relationship] = frozenset()
        if fhir_user is not None:
            related = relationships(fhir_user, actor, patient_id, patient)
        consents = [fact for consent in patient.consents for fact in consent_facts(consent, today)]
        return _Patient(
            patient_facts(patient_id, patient.resource, today),
            ActorFacts(fhir_user, actor.organizations, related),
            consents,
        )

    async def decide(self, exchange: Exchange[Any, Any]) -> None:
        """Consent-decide: a lay user (Patient, RelatedPerson) writes a patient's Consents
        only as that patient from the adult age, or as a minor's representative."""
        access, context, request = exchange.access, exchange.context, exchange.request
        # before the act: the cache may answer this request with a counter read sent
        # from now on (consent/cache.py)
        arrived = context.notes.setdefault(ARRIVED_NOTE, time.monotonic())
        if access is not None and access.action not in WRITES and self.wants_items(exchange):
            self.cache.prefetch(arrived)
            self._research_query(exchange)
        if access is None or context.door is not Door.FHIR or context.actor.kind != "user":
            return
        fhir_user = context.actor.display
        if "Consent" not in access.resource_types or access.action not in WRITES:
            return
        if fhir_user is None or fhir_user.partition("/")[0] not in LAY_TYPES:
            return
        references = await self._consent_patients(access.resource_id, request)
        if not references or not all(r.startswith("Patient/") for r in references):
            raise AccessError("MB-1030", "a Consent written by a patient names its Patient")
        today = datetime.now(UTC).date()
        await self.cache.refresh(context.notes[ARRIVED_NOTE])
        actor = await self.cache.actor(fhir_user)
        for reference in sorted(references):
            patient_id = reference.removeprefix("Patient/")
            patient = await self.cache.patient(patient_id)
            related = relationships(fhir_user, actor, patient_id, patient)
            decision = may_write(
                ActorFacts(fhir_user, frozenset(), related),
                patient_facts(patient_id, patient.resource, today),
                self.policy,
            )
            if not decision.permit:
                raise AccessError("MB-1030", decision.reason)

    def _research_query(self, exchange: Exchange[Any, Any]) -> None:
        """Rule 7: research may not find a patient by what de-identification hides."""
        access, context, request = exchange.access, exchange.context, exchange.request
        purpose = access.purpose_of_use if access is not None else None
        purpose = purpose or context.purpose_of_use
        if access is None or access.action not in SEARCHES or context.door is not Door.FHIR:
            return
        if purpose not in self.policy.research_purposes or not isinstance(request, FhirRequest):
            return
        types = access.resource_types
        named = identifying(next(iter(types)) if len(types) == 1 else None, _query(request))
        if named:
            raise AccessError(
                RESEARCH_QUERY,
                f"research reads patients de-identified and may not search by {named[0]}",
                expression=named[0],
            )

    async def _consent_patients(self, consent_id: str | None, request: object) -> set[str]:
        """The Patients of the Consent as stored (update, patch, delete) and as sent."""
        found: set[str] = set()
        if consent_id is not None:
            stored = await self.repository.read("Consent", consent_id)
            if stored is not None and stored.raw is not None:
                found |= _patient_of(orjson.loads(stored.raw))
        if isinstance(request, FhirRequest) and request.body is not None:
            # a malformed body is answered by the door itself
            with contextlib.suppress(orjson.JSONDecodeError):
                found |= _patient_of(orjson.loads(request.body))
        return found

    async def check_written(self, exchange: Exchange[Any, Any]) -> None:
        """Rule 4 for the writer: a Consent hiding a category the law does not let a
        patient hide is stored, and the answer says it will not hide those records: a
        warning issue when the client asked for an OperationOutcome (`Prefer:
        return=OperationOutcome`); a resource answer has no place for it."""
        access, request, response = exchange.access, exchange.request, exchange.response
        if access is None or exchange.error is not None or access.action not in CHECKED:
            return
        if "Consent" not in access.resource_types or not isinstance(request, FhirRequest):
            return
        if request.body is None or not isinstance(response, FhirResponse):
            return
        named = unhideable_hidden(orjson.loads(request.body), self.policy.unhideable_categories)
        if not named:
            return
        log.info("a Consent hides %d categories a patient may not hide", len(named))
        answer = orjson.loads(response.body) if response.body else None
        if isinstance(answer, dict) and answer.get("resourceType") == "OperationOutcome":
            answer.setdefault("issue", []).append(_unhideable_warning(named))
            response.body = orjson.dumps(answer)

    async def written(self, exchange: Exchange[Any, Any]) -> None:
        access = exchange.access
        if access is None or exchange.error is not None or access.action not in WRITES:
            return
        if access.resource_types & SOURCES:
            await self.cache.written()


def _patient_of(consent: object) -> set[str]:
    if not isinstance(consent, dict) or consent.get("resourceType") != "Consent":
        return set()
    patient = consent.get("patient")
    reference = patient.get("reference") if isinstance(patient, dict) else None
    return {reference} if isinstance(reference, str) else set()


def _unhideable_warning(named: list[str]) -> dict[str, Any]:
    entry = catalog()[UNHIDEABLE]
    return {
        "severity": "warning",
        "code": entry.issue,
        "details": {"coding": [{"system": ISSUE_CODE_SYSTEM, "code": UNHIDEABLE}]},
        "diagnostics": f"{entry.text}: {', '.join(named)}",
        "expression": ["Consent.provision"],
    }


@lru_cache(maxsize=DECISIONS_KEPT)
def _decided(
    actor: ActorFacts,
    purpose: str | None,
    patient: PatientFacts,
    record: RecordFacts,
    consents: tuple[ConsentFacts, ...],
    policy: Policy,
) -> Decision:
    """The engine's decision, kept for the same facts: it is a pure function of them
    (every input a frozen value), and a user's next page or next read of a record asks
    it again (~50 us a decision on the 2-core test machine)."""
    return decide(actor, purpose, patient, record, list(consents), policy)


def _record(item: Item) -> RecordFacts:
    if item.raw is None:
        return RecordFacts(item.resource_type, item.resource_id)
    return record_facts(item.resource_type, item.resource_id, orjson.loads(item.raw))


def _override(
    decision: Decision, patient_id: str, item: Item, purpose: str | None
) -> dict[str, str]:
    """One override for the audit stage: which rule lifted which denial, for whom."""
    return {
        "rule": decision.rule,
        "override": decision.override or "",
        "purpose": purpose or "",
        "patient": f"Patient/{patient_id}",
        "record": item.reference,
        "reason": decision.reason,
    }


def _deidentified_item(item: Item, masked: set[str]) -> Item:
    """The item with the bytes research may see, for the hooks after this one."""
    if item.reference not in masked or item.raw is None:
        return item
    raw = orjson.dumps(deidentified(orjson.loads(item.raw)))
    return Item(item.resource_type, item.resource_id, raw, item.patients, item.mode)


def deidentified_answer(answer: Any, masked: set[str]) -> Any:
    """The door's answer with every resource of `masked` (Type/id) de-identified: a
    resource answer, or the entries of a Bundle (search, history, $everything)."""
    if not isinstance(answer, FhirResponse) or not answer.body:
        return answer
    document = orjson.loads(answer.body)
    if not isinstance(document, dict):
        return answer
    if _reference_of(document) in masked:
        answer.body = orjson.dumps(deidentified(document))
    elif document.get("resourceType") == "Bundle":
        for entry in document.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and _reference_of(resource) in masked:
                entry["resource"] = deidentified(resource)
        answer.body = orjson.dumps(document)
    return answer


def _reference_of(resource: dict[str, Any]) -> str:
    return f"{resource.get('resourceType')}/{resource.get('id')}"


def _query(request: FhirRequest) -> list[tuple[str, str]]:
    """The search's parameters: the URL's, and a POST _search's form body (whose content
    type the door itself checks)."""
    query = list(request.query)
    if request.method.upper() == "POST" and request.body:
        query += parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return query
