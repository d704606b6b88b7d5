"""SMART scopes v1 and v2 into one permission model (smart/scopes.py).

The scope strings are the examples of SMART App Launch 2.x, "Scopes and Launch Context"
(https://build.fhir.org/ig/HL7/smart-app-launch/scopes-and-launch-context.html)."""

from __future__ import annotations

import pytest

from access.access import Access, Action
from access.context import ANONYMOUS, Door
from smart.scopes import Permission, parse_scope, parse_scopes, scope_actions, within


def access(
    action: Action,
    *types: str,
    door: Door = Door.FHIR,
    query: tuple[tuple[str, str], ...] = (),
) -> Access:
    return Access(door, action, ANONYMOUS, frozenset(types), search=query)


@pytest.mark.parametrize(
    ("scope", "context", "resource_type", "letters"),
    [
        # v2 examples of the specification
        ("patient/Observation.rs", "patient", "Observation", "rs"),
        ("user/Appointment.cruds", "user", "Appointment", "cruds"),
        ("patient/*.cruds", "patient", "*", "cruds"),
        ("user/Encounter.rs", "user", "Encounter", "rs"),
        ("patient/ImagingStudy.rs", "patient", "ImagingStudy", "rs"),
        ("system/*.rs", "system", "*", "rs"),
        ("patient/Patient.r", "patient", "Patient", "r"),
        ("user/Observation.cu", "user", "Observation", "cu"),
        ("patient/Observation.c", "patient", "Observation", "c"),
        ("user/*.d", "user", "*", "d"),
        # v1: read = rs, write = cud, * = cruds
        ("patient/*.read", "patient", "*", "rs"),
        ("user/ImagingStudy.write", "user", "ImagingStudy", "cud"),
        ("user/*.*", "user", "*", "cruds"),
        ("patient/Observation.read", "patient", "Observation", "rs"),
        ("system/Patient.*", "system", "Patient", "cruds"),
    ],
)
def test_resource_scopes_parse(scope: str, context: str, resource_type: str, letters: str) -> None:
    assert parse_scope(scope) == Permission(context, resource_type, frozenset(letters))


def test_query_restricted_scope_keeps_its_query() -> None:
    scope = "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory"
    permission = parse_scope(scope)
    assert permission is not None
    assert permission.query == (
        ("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory"),
    )
    assert permission.interactions == frozenset("rs")


@pytest.mark.parametrize(
    "scope",
    [
        "patient/Observation.sr",  # v2 letters out of order
        "patient/Observation.rr",  # repeated
        "patient/Observation.x",
        "patient/Observation.",
        "practitioner/Observation.rs",  # no such context
        "patient/observation.rs",  # not a resource type name
        "patient/Observation",
        "Observation.rs",
        "*.*",  # v1 without a context is not a SMART scope
        "patient/Observation.read?category=laboratory",  # v1 has no query scopes
        "patient/Observation.rs?a=1?b=2",
        "",
    ],
)
def test_malformed_scopes_grant_nothing(scope: str) -> None:
    assert parse_scope(scope) is None
    assert not parse_scopes([scope]).permits(access(Action.READ, "Observation"))


def test_non_resource_scopes_are_recognized_not_granting() -> None:
    scopes = parse_scopes(
        [
            "openid",
            "fhirUser",
            "launch",
            "launch/patient",
            "offline_access",
            "online_access",
            "made/up",
        ]
    )
    assert scopes.permissions == ()
    assert scopes.non_resource == frozenset(
        {"openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access"}
    )
    assert scopes.unknown == frozenset({"made/up"})
    assert not scopes.permits(access(Action.READ, "Patient"))


@pytest.mark.parametrize(
    ("granted", "action", "resource_type", "permitted"),
    [
        ("patient/Observation.rs", Action.READ, "Observation", True),
        ("patient/Observation.rs", Action.VREAD, "Observation", True),
        ("patient/Observation.rs", Action.HISTORY_INSTANCE, "Observation", True),
        ("patient/Observation.rs", Action.SEARCH_TYPE, "Observation", True),
        ("patient/Observation.rs", Action.HISTORY_TYPE, "Observation", True),
        ("patient/Observation.rs", Action.CREATE, "Observation", False),
        ("patient/Observation.rs", Action.UPDATE, "Observation", False),
        ("patient/Observation.rs", Action.READ, "Condition", False),
        ("patient/Observation.r", Action.SEARCH_TYPE, "Observation", False),
        ("patient/Observation.s", Action.READ, "Observation", False),
        ("user/*.cruds", Action.DELETE, "Encounter", True),
        ("user/*.cruds", Action.PATCH, "Encounter", True),
        ("user/Observation.cu", Action.PATCH, "Observation", True),
        ("user/Observation.cu", Action.DELETE, "Observation", False),
        ("user/ImagingStudy.write", Action.CREATE, "ImagingStudy", True),
        ("user/ImagingStudy.write", Action.READ, "ImagingStudy", False),
        ("patient/*.read", Action.READ, "Patient", True),
        ("patient/*.read", Action.UPDATE, "Patient", False),
        # letters may come from several scopes of one context
        ("patient/Observation.r patient/*.s", Action.SEARCH_TYPE, "Observation", True),
        # DICOMweb is ImagingStudy: QIDO searches, WADO reads, STOW creates
        ("patient/ImagingStudy.rs", Action.QIDO, "ImagingStudy", True),
        ("patient/ImagingStudy.rs", Action.WADO, "ImagingStudy", True),
        ("patient/ImagingStudy.s", Action.WADO, "ImagingStudy", False),
        ("patient/ImagingStudy.r", Action.QIDO, "ImagingStudy", False),
        ("patient/ImagingStudy.rs", Action.STOW, "ImagingStudy", False),
        ("system/ImagingStudy.c", Action.STOW, "ImagingStudy", True),
        ("patient/Observation.rs", Action.QIDO, "ImagingStudy", False),
        # no scope needed: capabilities, a bundle's envelope (its entries are checked)
        ("", Action.CAPABILITIES, "", True),
        ("", Action.TRANSACTION, "", True),
        # never by token: a door's own actions
        ("system/*.cruds", Action.C_FIND, "ImagingStudy", False),
        ("system/*.cruds", Action.HL7_EVENT, "", False),
        ("system/*.cruds", Action.IMPORT, "", False),
    ],
)
def test_permits(granted: str, action: Action, resource_type: str, permitted: bool) -> None:
    types = (resource_type,) if resource_type else ()
    assert parse_scopes(granted.split()).permits(access(action, *types)) is permitted


def test_system_level_search_needs_a_wildcard_scope() -> None:
    assert not parse_scopes(["user/Observation.rs"]).permits(access(Action.SEARCH_SYSTEM))
    assert parse_scopes(["user/*.rs"]).permits(access(Action.SEARCH_SYSTEM))
    assert not parse_scopes(["user/Observation.rs"]).permits(access(Action.HISTORY_SYSTEM))


def test_everything_needs_read_and_search_on_every_type() -> None:
    everything = access(Action.OPERATION, "Patient")
    assert not parse_scopes(["patient/Patient.rs"]).permits(everything)
    assert not parse_scopes(["patient/*.r"]).permits(everything)
    assert parse_scopes(["patient/*.rs"]).permits(everything)


def test_grant_is_the_least_confined_context() -> None:
    read = access(Action.READ, "Observation")
    assert parse_scopes(["patient/*.rs"]).grant(read) == "patient"
    assert parse_scopes(["patient/*.rs", "user/Observation.rs"]).grant(read) == "user"
    assert parse_scopes(["patient/*.rs", "system/*.rs"]).grant(read) == "system"
    # letters are not mixed across contexts: a user read plus a patient search is no
    # unconfined $everything
    everything = access(Action.OPERATION, "Patient")
    assert parse_scopes(["user/*.r", "patient/*.s"]).grant(everything) is None


def test_query_restricted_scope_permits_only_searches_asking_for_it() -> None:
    scopes = parse_scopes(["patient/Observation.rs?category=laboratory"])
    asked = access(Action.SEARCH_TYPE, "Observation", query=(("category", "laboratory"),))
    assert scopes.permits(asked)
    other = access(Action.SEARCH_TYPE, "Observation", query=(("category", "vital-signs"),))
    assert not scopes.permits(other)
    assert not scopes.permits(access(Action.SEARCH_TYPE, "Observation"))
    # the restriction holds whether or not the search names its patient
    search = (("patient", "p1"), ("category", "laboratory"))
    named = Access(Door.FHIR, Action.SEARCH_TYPE, ANONYMOUS, frozenset({"Observation"}),
                   patients=frozenset({"p1"}), search=search)  # fmt: skip
    assert scopes.permits(named)
    # a read by id could return what the restriction excludes
    assert not scopes.permits(access(Action.READ, "Observation"))


def test_the_table_names_real_actions_only() -> None:
    table = scope_actions()
    assert all(set(need.letters) <= set("cruds") for need in table.values())
    for action in (Action.READ, Action.QIDO, Action.WADO, Action.STOW, Action.OPERATION):
        assert action in table
    for action in (Action.C_STORE, Action.C_FIND, Action.HL7_EVENT, Action.ADMIN):
        assert action not in table


@pytest.mark.parametrize(
    ("requested", "allowed", "granted"),
    [
        ("system/Patient.rs", ["system/*.rs"], True),
        ("system/Patient.r", ["system/*.read"], True),  # v2 letters within a v1 grant
        ("system/Patient.rs", ["system/Patient.r"], False),  # asks for search too
        ("system/Patient.rs", ["patient/*.rs"], False),  # another context
        ("system/*.rs", ["system/Patient.rs"], False),  # wider than registered
        ("patient/Observation.rs?category=laboratory", ["patient/Observation.rs"], True),
        ("patient/Observation.rs", ["patient/Observation.rs?category=laboratory"], False),
        ("patient/Observation.rs?category=vital-signs", ["patient/*.rs?category=lab"], False),
        ("openid", ["openid", "fhirUser"], True),
        ("offline_access", ["openid"], False),
        ("system/Patient.xyz", ["system/*.cruds"], False),  # malformed: never granted
    ],
)
def test_a_requested_scope_within_a_registration(
    requested: str, allowed: list[str], granted: bool
) -> None:
    assert within(requested, allowed) is granted
