"""The SMART hooks on an exchange: which accesses need a token, what a token makes of the
context and the access, and how a patient-context token is confined. Tokens are real
JWTs checked by the real JwtValidator."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from access.access import Access, Action
from access.context import ANONYMOUS, SYSTEM, Actor, Door, RequestContext
from access.errors import AccessError
from access.pipeline import Exchange
from access.restriction import Restriction
from smart.claims import Claims
from smart.hooks import SmartHooks, actor_of, bearer_token
from smart.jwt_validator import FileKeys, JwtRules, JwtValidator

ISSUER, AUDIENCE = "https://issuer.test", "https://medbridge.test/fhir"


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)


@pytest.fixture
def hooks(key: ECKey, tmp_path: Path) -> SmartHooks:
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    rules = JwtRules(ISSUER, lambda: {AUDIENCE})
    return SmartHooks(JwtValidator(rules, FileKeys(path)))


def token(key: ECKey, scope: str, patient: str | None = None, **extra: Any) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "client_id": "portal",
              "scope": scope, "exp": now + 60, "jti": "j", **extra}  # fmt: skip
    if patient:
        claims["patient"] = patient
    return jwt.encode({"alg": "ES256", "kid": "k1"}, claims, key)


def exchange(
    action: Action,
    *types: str,
    door: Door = Door.FHIR,
    credentials: str | None = None,
    actor: Actor = ANONYMOUS,
    **fields: Any,
) -> Exchange[None, None]:
    context = RequestContext(door, actor=actor, credentials=credentials)
    made: Exchange[None, None] = Exchange(None, context)
    made.access = Access(door, action, actor, frozenset(types), **fields)
    return made


async def passed(hooks: SmartHooks, made: Exchange[None, None]) -> Exchange[None, None]:
    await hooks.authenticate(made)
    await hooks.authorize(made)
    return made


def refusal(code: str) -> Any:
    return pytest.raises(AccessError, match=code)


@pytest.mark.parametrize(
    ("header", "token_or_code"),
    [
        ("Bearer abc.def-ghi_jkl", "abc.def-ghi_jkl"),
        ("bearer abc", "abc"),  # the scheme is case-insensitive (RFC 7235)
        ("Bearer abc==", "abc=="),
        (None, "MB-1250"),
        ("", "MB-1250"),
        ("Basic Zm9v", "MB-1250"),
        ("Bearer", "MB-1252"),
        ("Bearer a b", "MB-1252"),
        ("Bearer a=b", "MB-1252"),
        ('Bearer "quoted"', "MB-1252"),
        ("Bearer \u00e9", "MB-1252"),
        ("Bearer ==", "MB-1252"),  # token68 has at least one character before its "="s
        ("Bearer a\tb", "MB-1252"),
        ("Bearer \uff41bc", "MB-1252"),  # a fullwidth letter is no ALPHA
    ],
)
def test_bearer_token(header: str | None, token_or_code: str) -> None:
    if token_or_code.startswith("MB-"):
        with refusal(token_or_code):
            bearer_token(header)
    else:
        assert bearer_token(header) == token_or_code


def test_actor_is_the_user_or_the_backend_client() -> None:
    def claims(subject: str, fhir_user: str | None) -> Claims:
        return Claims(ISSUER, subject, "svc", frozenset(), 0, "j", fhir_user=fhir_user)

    assert actor_of(claims("svc", None)) == Actor("client", "svc")
    assert actor_of(claims("alice", "Patient/1")) == Actor("user", "alice", "Patient/1")
    assert actor_of(claims("bob", None)) == Actor("user", "bob")


async def test_a_token_fills_context_and_access(hooks: SmartHooks, key: ECKey) -> None:
    credentials = "Bearer " + token(key, "patient/*.rs", "p1", fhirUser="Patient/p1",
                                    purpose_of_use="TREAT")  # fmt: skip
    made = await passed(hooks, exchange(Action.READ, "Observation", credentials=credentials))
    assert made.context.actor == Actor("user", "alice", "Patient/p1")
    assert made.context.patient == "p1"
    assert made.context.scopes == frozenset({"patient/*.rs"})
    assert made.access is not None
    assert made.access.actor == made.context.actor  # the access names who asked
    assert made.access.purpose_of_use == "TREAT"
    assert made.restriction == Restriction(patients=frozenset({"p1"}))
    assert "Bearer" not in repr(made.context)  # the token is out of every repr


async def test_user_scopes_are_not_confined(hooks: SmartHooks, key: ECKey) -> None:
    credentials = "Bearer " + token(key, "user/*.rs patient/*.rs", "p1")
    made = await passed(hooks, exchange(Action.SEARCH_TYPE, "Observation", credentials=credentials))
    assert made.restriction.unrestricted


async def test_patient_scopes_without_a_patient_are_refused(hooks: SmartHooks, key: ECKey) -> None:
    credentials = "Bearer " + token(key, "patient/*.rs")
    with refusal("MB-1253"):
        await passed(hooks, exchange(Action.READ, "Observation", credentials=credentials))


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (Action.READ, "MB-1002"),
        (Action.VREAD, "MB-1002"),
        (Action.HISTORY_INSTANCE, "MB-1002"),
        (Action.OPERATION, "MB-1002"),
        (Action.UPDATE, "MB-1254"),
        (Action.DELETE, "MB-1254"),
        (Action.PATCH, "MB-1254"),
    ],
)
async def test_another_patient_named(
    hooks: SmartHooks, key: ECKey, action: Action, code: str
) -> None:
    credentials = "Bearer " + token(key, "patient/*.cruds", "p1")
    made = exchange(action, "Patient", credentials=credentials, resource_id="p2",
                    patients=frozenset({"p2"}))  # fmt: skip
    with refusal(code):
        await passed(hooks, made)


async def test_a_write_naming_another_patient_is_refused(hooks: SmartHooks, key: ECKey) -> None:
    credentials = "Bearer " + token(key, "patient/*.cruds", "p1")
    made = exchange(Action.CREATE, "Observation", credentials=credentials,
                    patients=frozenset({"p2"}))  # fmt: skip
    with refusal("MB-1254"):
        await passed(hooks, made)
    own = exchange(Action.CREATE, "Observation", credentials=credentials,
                   patients=frozenset({"p1"}))  # fmt: skip
    assert (await passed(hooks, own)).restriction.patients == frozenset({"p1"})


async def test_stow_by_a_patient_grant_is_refused(hooks: SmartHooks, key: ECKey) -> None:
    credentials = "Bearer " + token(key, "patient/ImagingStudy.cruds", "p1")
    with refusal("MB-1254"):
        await passed(hooks, exchange(Action.STOW, "ImagingStudy", door=Door.DICOMWEB,
                                     credentials=credentials))  # fmt: skip
    user = "Bearer " + token(key, "user/ImagingStudy.c", "p1")
    await passed(hooks, exchange(Action.STOW, "ImagingStudy", door=Door.DICOMWEB,
                                 credentials=user))  # fmt: skip


async def test_a_search_naming_another_patient_is_narrowed_to_nothing_of_theirs(
    hooks: SmartHooks, key: ECKey
) -> None:
    credentials = "Bearer " + token(key, "patient/*.rs", "p1")
    made = exchange(Action.SEARCH_TYPE, "Observation", credentials=credentials,
                    patients=frozenset({"p2"}))  # fmt: skip
    # the door's query then asks for p2 within p1's compartment: an empty search
    assert (await passed(hooks, made)).restriction.patients == frozenset({"p1"})


@pytest.mark.parametrize("door", [Door.HL7V2, Door.DIMSE, Door.INTERNAL])
async def test_doors_without_tokens_are_left_to_their_own_rules(
    hooks: SmartHooks, door: Door
) -> None:
    made = await passed(hooks, exchange(Action.CREATE, "Observation", door=door))
    assert made.context.actor == ANONYMOUS
    assert made.restriction.unrestricted


async def test_the_servers_own_accesses_on_an_http_door_need_no_token(hooks: SmartHooks) -> None:
    # the ImagingStudy linker writes FHIR as Door.DICOMWEB, actor SYSTEM
    made = await passed(hooks, exchange(Action.UPDATE, "ImagingStudy", door=Door.DICOMWEB,
                                        actor=SYSTEM))  # fmt: skip
    assert made.restriction.unrestricted


async def test_capabilities_need_no_token(hooks: SmartHooks) -> None:
    await passed(hooks, exchange(Action.CAPABILITIES))


@pytest.mark.parametrize("door", [Door.FHIR, Door.DICOMWEB])
async def test_http_doors_need_a_token(hooks: SmartHooks, door: Door) -> None:
    with refusal("MB-1250"):
        await passed(hooks, exchange(Action.QIDO, "ImagingStudy", door=door))
    with refusal("MB-1251"):
        await passed(hooks, exchange(Action.QIDO, "ImagingStudy", door=door,
                                     credentials="Bearer a.b.c"))  # fmt: skip


async def test_bundle_entries_reuse_the_bundles_authentication(
    hooks: SmartHooks, key: ECKey
) -> None:
    credentials = "Bearer " + token(key, "user/Observation.rs")
    bundle = await passed(hooks, exchange(Action.TRANSACTION, credentials=credentials))
    # an entry's context is a copy of the bundle's (fhir_server/interactions/batch.py)
    entry: Exchange[None, None] = Exchange(None, bundle.context)
    entry.access = Access(Door.FHIR, Action.READ, bundle.context.actor, frozenset({"Patient"}))
    await hooks.authenticate(entry)
    with refusal("MB-1253"):  # each entry is still checked against the scopes
        await hooks.authorize(entry)
