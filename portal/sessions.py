"""Server-side sessions keyed by a random cookie id: tokens and form secrets only.

A session holds what the portal needs to act for the signed-in person (their access
and refresh tokens, the patient in context) and the secrets of its own forms (the CSRF
token, the pending sign-in's state and PKCE verifier). No patient data: every page is
read through the FHIR API with the token. Sessions live in this process's memory, so a
restart signs everyone out; several processes behind one address need sticky sessions.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

COOKIE = "medbridge_portal"


@dataclass(slots=True)
class PendingSignIn:
    state: str
    verifier: str
    started: float


@dataclass(slots=True)
class Session:
    id: str
    csrf: str
    expires_at: float
    pending: PendingSignIn | None = None
    access_token: str | None = None
    refresh_token: str | None = None
    token_expires_at: float = 0.0
    patient: str | None = None  # the launch context: a Patient id
    fhir_user: str | None = None  # Patient/.., RelatedPerson/..
    notice: str | None = None  # a message key for the next page

    @property
    def signed_in(self) -> bool:
        return self.access_token is not None and self.patient is not None

    def csrf_matches(self, sent: str | None) -> bool:
        return sent is not None and hmac.compare_digest(sent.encode(), self.csrf.encode())


class Sessions:
    """At most `capacity` sessions (the least recently used goes first), each ending
    `lifetime` seconds after its last use."""

    def __init__(
        self, lifetime: float, capacity: int = 10_000, clock: Callable[[], float] = time.time
    ) -> None:
        self.lifetime = lifetime
        self.capacity = capacity
        self.clock = clock
        self.held: OrderedDict[str, Session] = OrderedDict()

    def new(self) -> Session:
        session = Session(
            secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.clock() + self.lifetime
        )
        self.held[session.id] = session
        while len(self.held) > self.capacity:
            self.held.popitem(last=False)
        return session

    def get(self, session_id: str | None) -> Session | None:
        if not session_id:
            return None
        session = self.held.get(session_id)
        if session is None:
            return None
        now = self.clock()
        if session.expires_at < now:
            del self.held[session_id]
            return None
        session.expires_at = now + self.lifetime
        self.held.move_to_end(session_id)
        return session

    def renew(self, session: Session) -> Session:
        """The same contents under a fresh id and CSRF token (at sign-in: a session id
        known before it cannot be used after)."""
        self.held.pop(session.id, None)
        session.id = secrets.token_urlsafe(32)
        session.csrf = secrets.token_urlsafe(32)
        self.held[session.id] = session
        return session

    def end(self, session: Session) -> None:
        self.held.pop(session.id, None)
