"""The FHIR door's description of an access, from the parsed route (never from hooks).

Which patients a request names: the Patient of an instance interaction, the compartment
of `Patient/{id}/{type}` and `Patient/{id}/$everything`, and `patient=` / `subject=` (or
`_id` on Patient) search parameters. A search that names none is described by its query.
"""

from __future__ import annotations

from functools import cache

import orjson

from access.access import Access, Action
from access.context import RequestContext
from fhir_server.exchange import FhirRequest, Route
from fhir_server.search.extract import reference_key
from fhir_server.search.fhirpath import Path, compile_path
from fhir_server.search.parameters import parameters_for, patient_compartment

PURPOSE_HEADER = "x-purpose-of-use"
# parameters whose values are references to the patient(s) a search is about
PATIENT_PARAMETERS = frozenset({"patient", "subject", "patient:Patient", "subject:Patient"})
# result parameters say how to show, not whom: not part of the patient query
RESULT_PARAMETERS = frozenset(
    {"_count", "_summary", "_elements", "_sort", "_total", "_include", "_revinclude",
     "_format", "_pretty", "_page", "_offset", "_contained", "_containedType"}
)  # fmt: skip
SEARCHES = frozenset({Action.SEARCH_TYPE, Action.SEARCH_SYSTEM})
# writes whose body is the resource: the patients it names are part of the access
BODY_WRITES = frozenset({Action.CREATE, Action.UPDATE})


def fhir_access(
    request: FhirRequest, route: Route, context: RequestContext, parent: Access | None
) -> Access:
    action = Action(route.interaction.value)
    if request.entry_method == "POST" and action is Action.UPDATE:
        action = Action.CREATE
    patients: set[str] = set()
    if route.resource_type == "Patient" and route.resource_id is not None:
        patients.add(route.resource_id)
    if route.compartment is not None:
        patients.add(route.compartment)
    query: tuple[tuple[str, str], ...] = ()
    search: tuple[tuple[str, str], ...] = ()
    if action in SEARCHES:
        patients |= _searched_patients(route.resource_type, request.query)
        search = tuple((k, v) for k, v in request.query if k not in RESULT_PARAMETERS)
        if not patients:
            query = search
    elif action in BODY_WRITES and route.resource_type and request.body:
        if request.named_patients is not None:
            patients |= request.named_patients
        else:
            patients |= written_patients(route.resource_type, request.body)
    types = frozenset({route.resource_type}) if route.resource_type else frozenset()
    return Access(
        door=context.door,
        action=action,
        actor=context.actor,
        resource_types=types,
        resource_id=route.resource_id,
        patients=frozenset(patients),
        patient_query=query,
        event=route.operation,
        purpose_of_use=context.purpose_of_use or request.header(PURPOSE_HEADER),
        client_address=context.peer,
        parent=parent,
        request_id=context.request_id,
        search=search,
    )


def _searched_patients(resource_type: str | None, query: list[tuple[str, str]]) -> set[str]:
    found: set[str] = set()
    for name, value in query:
        if name in PATIENT_PARAMETERS:
            bare = name.startswith("patient") or name.endswith(":Patient")
            found |= {p for v in value.split(",") if (p := _patient_id(v, bare))}
        elif name == "_id" and resource_type == "Patient":
            found |= {v for v in value.split(",") if v}
    return found


def written_patients(resource_type: str, body: bytes) -> set[str]:
    """The Patients whose compartment the written resource would be in (its subject,
    patient ...), by the compartment's parameters only: a full index extraction costs
    ~0.5 ms an Observation, these few paths a fraction. A body that is no resource names
    none: the interaction refuses it. A large body is parsed on the body worker before
    the pipeline runs (router `handle`): on the event loop a 6 MB Patient took 200 ms."""
    paths = _compartment_paths(resource_type)
    if not paths:
        return set()  # a Patient is its own compartment: the route named it
    try:
        resource = orjson.loads(body)
        found: set[str] = set()
        for path in paths:
            for node in path(resource):
                reference = node.value.get("reference") if isinstance(node.value, dict) else None
                if isinstance(reference, str) and reference.startswith("Patient/"):
                    _, patient = reference_key(reference)
                    if patient:
                        found.add(patient)
        return found
    except (orjson.JSONDecodeError, TypeError, ValueError, AttributeError, KeyError):
        # a malformed body: only a description here, the interaction validates the body
        # and answers its errors in the door's protocol
        return set()


def may_name_patients(resource_type: str) -> bool:
    """Whether a written `resource_type` can be in another Patient's compartment at all
    (a Binary, a Patient cannot): else there is nothing for `written_patients` to find."""
    return bool(_compartment_paths(resource_type))


@cache
def _compartment_paths(resource_type: str) -> tuple[Path, ...]:
    """The compiled expressions of the parameters that put a `resource_type` in a
    Patient's compartment (CompartmentDefinition-patient, as search has it)."""
    parameters = parameters_for(resource_type)
    return tuple(
        compile_path(branch)
        for code in patient_compartment().get(resource_type, ())
        if code in parameters
        for branch in parameters[code].branches
    )


def _patient_id(reference: str, bare_allowed: bool) -> str | None:
    """`Patient/x`, `http://base/Patient/x` or (for patient=) `x` -> `x`."""
    parts = reference.rstrip("/").split("/")
    if len(parts) >= 2 and parts[-2] == "Patient" and parts[-1]:
        return parts[-1]
    if bare_allowed and len(parts) == 1 and parts[0]:
        return parts[0]
    return None
