"""Auth settings as the server starts: off only on loopback, public-key algorithms only."""

from __future__ import annotations

import base64

import orjson
import pytest

from medbridge.auth import (
    AuthRefused,
    Issuers,
    NoIssuer,
    check_binding,
    external_validator,
    is_loopback,
    token_validator,
)
from medbridge.settings import Settings
from smart.claims import Claims, TokenInvalid
from smart.jwt_validator import JwtValidator


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.5.0.1", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.0.0.5", False),
     ("medbridge.example.org", False), ("", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_auth_off_warns_on_loopback_and_refuses_elsewhere() -> None:
    warning = check_binding(Settings(auth=False, host="127.0.0.1"))
    assert warning is not None
    assert "authentication is OFF" in warning
    with pytest.raises(AuthRefused, match="not a loopback"):
        check_binding(Settings(auth=False, host="0.0.0.0"))
    assert check_binding(Settings(auth=True, host="0.0.0.0")) is None


@pytest.mark.parametrize("algorithms", ["HS256", "RS256,none", "hs512", ""])
def test_symmetric_or_no_algorithms_refuse_to_start(algorithms: str) -> None:
    with pytest.raises(AuthRefused, match="public-key"):
        check_binding(Settings(auth_algorithms=algorithms))


OWN = "https://medbridge.example/auth"


def _unsigned(claims: dict[str, object]) -> str:
    def part(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(value)).rstrip(b"=").decode()

    return f"{part({'alg': 'RS384'})}.{part(claims)}.c2ln"


class _Recording:
    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[str] = []

    async def validate(self, token: str) -> Claims:
        self.seen.append(token)
        raise TokenInvalid(f"checked by {self.name}")


async def test_no_issuer_refuses_every_token() -> None:
    validator = NoIssuer()
    with pytest.raises(TokenInvalid, match="no token issuer"):
        await validator.validate("a.b.c")


async def test_each_token_goes_to_the_validator_of_its_issuer() -> None:
    own = _Recording("own")
    settings = Settings(auth_issuer="https://idp.example/realms/h")
    validator = token_validator(
        settings, lambda: "https://medbridge.example/fhir", (lambda: OWN, own)
    )
    assert isinstance(validator, Issuers)
    with pytest.raises(TokenInvalid, match="checked by own"):
        await validator.validate(_unsigned({"iss": OWN}))
    # the external issuer's validator checks it (and refuses: no such key anywhere)
    with pytest.raises(TokenInvalid) as refused:
        await validator.validate(_unsigned({"iss": "https://idp.example/realms/h"}))
    assert "checked by own" not in refused.value.reason
    for stranger in ({"iss": "https://evil.example"}, {"sub": "x"}, {"iss": 7}):
        with pytest.raises(TokenInvalid, match="not from an issuer"):
            await validator.validate(_unsigned(stranger))
    with pytest.raises(TokenInvalid, match="not from an issuer"):
        await validator.validate("not-a-jwt")
    assert len(own.seen) == 1


async def test_a_token_seen_before_goes_to_the_same_validator_and_is_checked_again() -> None:
    # the issuer of a token is remembered (short tokens) or read again (long ones): the
    # choice is the same either way, and the chosen validator sees every request
    own = _Recording("own")
    validator = Issuers((lambda: OWN, own))
    short = _unsigned({"iss": OWN})
    long = _unsigned({"iss": OWN, "padding": "x" * 5000})
    for token in (short, short, long, long):
        with pytest.raises(TokenInvalid, match="checked by own"):
            await validator.validate(token)
    assert own.seen == [short, short, long, long]
    for stranger in (_unsigned({"iss": "https://evil.example"}), "a.b.c"):
        for _ in range(2):
            with pytest.raises(TokenInvalid, match="not from an issuer"):
                await validator.validate(stranger)


def test_an_issuer_gives_a_jwt_validator() -> None:
    settings = Settings(auth_issuer="https://idp.example/realms/h", auth_leeway_seconds=5)
    validator = external_validator(settings, lambda: "https://medbridge.example/fhir")
    assert isinstance(validator, JwtValidator)
    assert validator.rules.leeway_seconds == 5
    assert set(validator.rules.audiences()) == {"https://medbridge.example/fhir"}


@pytest.mark.parametrize(
    ("issuer", "jwks", "refused"),
    [("http://idp.example/realms/h", None, True),
     ("https://idp.example/realms/h", "http://idp.example/certs", True),
     ("https://idp.example/realms/h", None, False),
     ("http://127.0.0.1:8080/realms/h", None, False),
     ("http://idp.example/realms/h", "https://idp.example/certs", False),
     ("http://idp.example/realms/h", "/etc/medbridge/jwks.json", False)],
)  # fmt: skip
def test_issuer_keys_over_plain_http_refuse_to_start(
    issuer: str, jwks: str | None, refused: bool
) -> None:
    settings = Settings(auth_issuer=issuer, auth_jwks=jwks)
    if refused:
        with pytest.raises(AuthRefused, match="plain HTTP"):
            check_binding(settings)
    else:
        assert check_binding(settings) is None
