"""Auth settings as the server starts: off only on loopback, public-key algorithms only."""

from __future__ import annotations

import pytest

from medbridge.auth import AuthRefused, NoIssuer, check_binding, is_loopback, token_validator
from medbridge.settings import Settings
from smart.claims import TokenInvalid
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


async def test_no_issuer_refuses_every_token() -> None:
    validator = token_validator(Settings(), lambda: "http://127.0.0.1:1/fhir")
    assert isinstance(validator, NoIssuer)
    with pytest.raises(TokenInvalid, match="no token issuer"):
        await validator.validate("a.b.c")


def test_an_issuer_gives_a_jwt_validator() -> None:
    settings = Settings(auth_issuer="https://idp.example/realms/h", auth_leeway_seconds=5)
    validator = token_validator(settings, lambda: "https://medbridge.example/fhir")
    assert isinstance(validator, JwtValidator)
    assert validator.rules.leeway_seconds == 5
    assert set(validator.rules.audiences()) == {"https://medbridge.example/fhir"}
