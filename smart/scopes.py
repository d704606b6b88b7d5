"""SMART scopes (App Launch 2.x, v2 and v1 syntax) as one permission model.

A resource scope is `context/type.permissions[?query]`: context patient | user | system,
a FHIR resource type or `*`, and the interactions it grants. v2 names them with the
letters c r u d s (in that order, each at most once); v1 with `read` (= rs), `write`
(= cud) or `*` (= cruds). Both parse to the same `Permission`, so a v1 token and a v2
token with the same meaning are enforced alike. Which letter each access needs is the
data table `smart/scope_actions.json`, not code.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from urllib.parse import parse_qsl

from access.access import Access, Action

CONTEXTS = ("system", "user", "patient")  # from least to most confined
V2_LETTERS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
# scopes that grant no resource access: identity, launch context, refresh tokens
NON_RESOURCE = frozenset(
    {"openid", "fhirUser", "profile", "launch", "launch/patient", "launch/encounter",
     "offline_access", "online_access"}
)  # fmt: skip
WILDCARD = "*"
_RESOURCE_SCOPE = re.compile(
    r"^(?P<context>patient|user|system)/(?P<type>\*|[A-Z][A-Za-z]{0,63})"
    r"\.(?P<permissions>[a-z*]{1,5})(?:\?(?P<query>[^\s?]+))?$"
)


@dataclass(frozen=True, slots=True)
class Permission:
    """What one resource scope grants; `query` (v2 only) limits it to matching searches."""

    context: str
    resource_type: str  # a FHIR type or "*"
    interactions: frozenset[str]  # letters of "cruds"
    query: tuple[tuple[str, str], ...] = ()

    def covers(self, resource_type: str, letter: str) -> bool:
        return letter in self.interactions and self.resource_type in (WILDCARD, resource_type)


def parse_scope(scope: str) -> Permission | None:
    """`patient/Observation.rs?category=laboratory` -> its Permission; None when `scope`
    is no resource scope (non-resource scopes, unknown or malformed ones)."""
    match = _RESOURCE_SCOPE.match(scope)
    if match is None:
        return None
    letters = _letters(match["permissions"])
    if letters is None:
        return None
    query = tuple(parse_qsl(match["query"] or "", keep_blank_values=True))
    if query and match["permissions"] in V1_PERMISSIONS:
        return None  # v1 has no query-restricted scopes
    return Permission(match["context"], match["type"], letters, query)


def within(requested: str, allowed: Iterable[str]) -> bool:
    """Whether a client registered for the `allowed` scopes may be granted `requested`:
    the same name, or a resource scope that asks no more than one allowed scope gives
    (`system/Patient.rs` within `system/*.cruds`; a query-restricted allowed scope only
    covers requests with at least its query)."""
    names = set(allowed)
    if requested in names:
        return True
    asked = parse_scope(requested)
    if asked is None:
        return False
    for name in names:
        given = parse_scope(name)
        if (
            given is not None
            and given.context == asked.context
            and given.resource_type in (WILDCARD, asked.resource_type)
            and asked.interactions <= given.interactions
            and set(given.query) <= set(asked.query)
        ):
            return True
    return False


def _letters(permissions: str) -> frozenset[str] | None:
    v1 = V1_PERMISSIONS.get(permissions)
    if v1 is not None:
        return frozenset(v1)
    # v2: a subsequence of "cruds", so order is fixed and no letter repeats
    position = 0
    for letter in permissions:
        found = V2_LETTERS.find(letter, position)
        if found < 0:
            return None
        position = found + 1
    return frozenset(permissions)


@dataclass(frozen=True, slots=True)
class Scopes:
    """The granted scopes of a token, parsed once."""

    permissions: tuple[Permission, ...]
    non_resource: frozenset[str]
    unknown: frozenset[str]  # grant nothing; kept so a refusal can say why

    def grant(self, access: Access) -> str | None:
        """The least confined context (system, user, patient) whose scopes permit
        `access`, or None. A patient grant means the access is confined to the token's
        patient; a user or system grant is not."""
        need = scope_actions().get(access.action)
        if need is None:
            return None
        letters = need.letters
        if not letters:
            return CONTEXTS[0]  # nothing to check (capabilities, a bundle's envelope)
        types = access.resource_types or frozenset({WILDCARD})
        if need.every_type:
            types = frozenset({WILDCARD})
        for context in CONTEXTS:
            usable = [p for p in self.permissions if p.context == context and _usable(p, access)]
            if all(any(p.covers(t, x) for p in usable) for t in types for x in letters):
                return context
        return None

    def permits(self, access: Access) -> bool:
        return self.grant(access) is not None


def parse_scopes(granted: Iterable[str]) -> Scopes:
    permissions: list[Permission] = []
    non_resource: set[str] = set()
    unknown: set[str] = set()
    for scope in granted:
        if not scope:
            continue
        permission = parse_scope(scope)
        if permission is not None:
            permissions.append(permission)
        elif scope in NON_RESOURCE:
            non_resource.add(scope)
        else:
            unknown.add(scope)
    return Scopes(tuple(permissions), frozenset(non_resource), frozenset(unknown))


def _usable(permission: Permission, access: Access) -> bool:
    """A query-restricted scope permits only a search that itself asks for every
    parameter of the restriction (as given): anything else could show what it excludes."""
    if not permission.query:
        return True
    if access.action not in (Action.SEARCH_TYPE, Action.SEARCH_SYSTEM):
        return False
    asked = set(access.search)
    return all(pair in asked for pair in permission.query)


@dataclass(frozen=True, slots=True)
class Need:
    """What an action needs: these letters on each resource type it names (or on `*`)."""

    letters: frozenset[str]
    every_type: bool = False


@cache
def scope_actions() -> dict[Action, Need]:
    """`smart/scope_actions.json`: Action -> what it needs; an action missing there (a
    door's own: DIMSE, HL7, local commands) is permitted by no scope."""
    text = (resources.files("smart") / "scope_actions.json").read_text(encoding="utf-8")
    table = json.loads(text)
    return {
        Action(name): Need(frozenset(row["letters"]), bool(row.get("every_type", False)))
        for name, row in table.items()
        if not name.startswith("_")
    }
