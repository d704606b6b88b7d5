"""audit/security.py: the sign-in and token-issue events of the authorization server."""

from __future__ import annotations

from typing import Any

from audit.security import sign_in_event, token_event

DCM = "http://dicom.nema.org/resources/ontology/DCM"


def requestor(event: dict[str, Any]) -> dict[str, Any]:
    [agent] = [a for a in event["agent"] if a["requestor"]]
    return agent


def test_a_sign_in_is_a_login_of_the_user_from_an_address() -> None:
    event = sign_in_event("alice", "Patient/p1", "app-1", "10.1.2.3", True, None, "host", 0.0)
    assert event["type"] == {"system": DCM, "code": "110114", "display": "User Authentication"}
    assert event["subtype"] == [{"system": DCM, "code": "110122", "display": "Login"}]
    assert event["action"] == "E"
    assert event["outcome"] == "0"
    assert "outcomeDesc" not in event
    user = requestor(event)
    assert user["who"] == {"identifier": {"system": "urn:medbridge:actor:user", "value": "alice"},
                           "reference": "Patient/p1"}  # fmt: skip
    assert user["network"] == {"address": "10.1.2.3", "type": "2"}
    assert user["type"]["coding"][0]["code"] == "humanuser"
    clients = [a["who"]["identifier"]["value"] for a in event["agent"] if not a["requestor"]
               and "identifier" in a["who"]]  # fmt: skip
    assert clients == ["app-1"]
    assert event["source"]["site"] == "auth"
    assert "entity" not in event


def test_a_failed_sign_in_names_no_unknown_user() -> None:
    event = sign_in_event(None, None, "app-1", "10.1.2.3", False, "wrong user name or password",
                          "host", 0.0)  # fmt: skip
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "wrong user name or password"
    assert requestor(event)["who"] == {"display": "unknown user"}


def test_a_token_issue_names_client_user_grant_scopes_and_jti_only() -> None:
    event = token_event("app-1", "authorization_code", "patient/*.rs openid", "jti-9", "alice",
                        "Patient/p1", "p1", "10.1.2.3", "host", 0.0)  # fmt: skip
    assert event["type"]["code"] == "110114"
    assert event["subtype"] == [{"system": "urn:ihe:event-type-code", "code": "ITI-71",
                                 "display": "Get Access Token"}]  # fmt: skip
    client = requestor(event)
    assert client["who"]["identifier"] == {"system": "urn:medbridge:client", "value": "app-1"}
    assert client["policy"] == ["jti-9"]
    assert client["network"]["address"] == "10.1.2.3"
    [user] = [a for a in event["agent"] if a["who"].get("reference") == "Patient/p1"]
    assert user["who"]["identifier"]["value"] == "alice"
    [patient, token] = event["entity"]
    assert patient["what"] == {"reference": "Patient/p1"}
    assert patient["role"]["code"] == "1"
    assert token["what"]["identifier"] == {"system": "urn:medbridge:token", "value": "jti-9"}
    assert token["detail"] == [{"type": "grant_type", "valueString": "authorization_code"},
                               {"type": "scope", "valueString": "patient/*.rs openid"}]  # fmt: skip


def test_a_backend_token_has_no_user_agent() -> None:
    event = token_event("backend-1", "client_credentials", "system/*.rs", "jti-1", "backend-1",
                        None, None, None, "host", 0.0)  # fmt: skip
    assert [a["requestor"] for a in event["agent"]] == [True, False]  # the client, this server
    assert "network" not in requestor(event)
    assert [e["role"]["code"] for e in event["entity"]] == ["20"]
