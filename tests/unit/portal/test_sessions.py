from __future__ import annotations

from portal.sessions import Sessions


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_ends_its_lifetime_after_its_last_use() -> None:
    clock = Clock()
    sessions = Sessions(60, clock=clock)
    session = sessions.new()
    clock.now += 50
    assert sessions.get(session.id) is session  # use: the lifetime starts again
    clock.now += 50
    assert sessions.get(session.id) is session
    clock.now += 61
    assert sessions.get(session.id) is None
    assert sessions.get(session.id) is None
    assert sessions.get(None) is None
    assert sessions.get("") is None


def test_signing_in_gives_a_new_id_and_csrf_token() -> None:
    sessions = Sessions(60)
    session = sessions.new()
    old_id, old_csrf = session.id, session.csrf
    renewed = sessions.renew(session)
    assert renewed.id != old_id
    assert renewed.csrf != old_csrf
    assert sessions.get(old_id) is None
    assert sessions.get(renewed.id) is renewed
    assert renewed.csrf_matches(renewed.csrf)
    assert not renewed.csrf_matches(old_csrf)
    assert not renewed.csrf_matches(None)
    sessions.end(renewed)
    assert sessions.get(renewed.id) is None


def test_the_least_recently_used_session_goes_first_at_capacity() -> None:
    sessions = Sessions(60, capacity=2)
    first, second = sessions.new(), sessions.new()
    assert sessions.get(first.id) is first  # first is now the most recent
    third = sessions.new()
    assert sessions.get(second.id) is None
    assert sessions.get(first.id) is first
    assert sessions.get(third.id) is third
