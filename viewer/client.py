"""The viewer's public client of MedBridge's own authorization server, registered (or
brought up to date) at every start: its redirect URI follows the public base URL."""

from __future__ import annotations

from smart.clients import Clients
from viewer.config import SCOPES, ViewerConfig


async def register_client(clients: Clients, config: ViewerConfig) -> None:
    """Public (PKCE S256, no secret: a browser app keeps none), one exact redirect URI."""
    wanted_uris, wanted_scope = (config.redirect_uri,), " ".join(SCOPES)
    current = await clients.get(config.client_id)
    if (
        current is not None
        and current.kind == "public"
        and current.redirect_uris == wanted_uris
        and current.scope == wanted_scope
    ):
        return
    await clients.register_public(config.client_id, list(wanted_uris), wanted_scope)
