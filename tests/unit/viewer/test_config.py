"""viewer/config.py: the app-config.js OHIF reads, made by MedBridge."""

from __future__ import annotations

import json

from viewer.config import ViewerConfig

CONFIG = ViewerConfig(
    "https://pacs.example", "/viewer", "/dicomweb", "/fhir", "/auth", "medbridge-viewer"
)


def window_config() -> dict[str, object]:
    text = CONFIG.script().decode()
    prefix = "window.config = "
    body = text[text.index(prefix) + len(prefix) :].rstrip().removesuffix(";")
    loaded: dict[str, object] = json.loads(body)
    return loaded


def test_the_data_source_is_this_servers_dicomweb() -> None:
    config = window_config()
    assert config["routerBasename"] == "/viewer"
    (source,) = config["dataSources"]  # type: ignore[misc]
    settings = source["configuration"]
    for root in ("qidoRoot", "wadoRoot", "wadoUriRoot"):
        assert settings[root] == "https://pacs.example/dicomweb"
    assert settings["staticWado"] is False
    assert config["defaultDataSourceName"] == source["sourceName"]


def test_sign_in_is_this_servers_authorization_server_with_pkce() -> None:
    (oidc,) = window_config()["oidc"]  # type: ignore[misc]
    assert oidc["authority"] == "https://pacs.example/auth"
    assert oidc["client_id"] == "medbridge-viewer"
    assert oidc["response_type"] == "code"
    assert set(oidc["scope"].split()) >= {"openid", "user/ImagingStudy.rs"}
    assert oidc["extraQueryParams"] == {"aud": "https://pacs.example/fhir"}
    # no silent renew: it would load silent-refresh.html, which takes a script from a CDN
    assert oidc["automaticSilentRenew"] is False
    # "/" would collide with the viewer mode's route under /viewer (deep links)
    assert oidc["post_logout_redirect_uri"] != "/"
    assert CONFIG.redirect_uri == "https://pacs.example/viewer/callback"


def test_nothing_in_the_config_names_another_origin() -> None:
    text = CONFIG.script().decode()
    for url in [w for w in text.replace('"', " ").split() if "://" in w]:
        assert url.startswith("https://pacs.example/"), url
