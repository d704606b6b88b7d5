"""Which language a page is in, and its messages (portal/messages/<language>.json).

The browser's Accept-Language chooses; the language switch sets a cookie that
overrides it. Messages are data, one table per language with the same keys
(tests/unit/portal/test_i18n.py checks they match)."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources

LANGUAGES = ("en", "lt")
DEFAULT = "en"
COOKIE = "medbridge_portal_lang"


@cache
def messages(language: str) -> dict[str, str]:
    text = resources.files("portal").joinpath(f"messages/{language}.json").read_text("utf-8")
    table: dict[str, str] = json.loads(text)
    return table


def from_accept_language(header: str) -> str | None:
    """The supported language the header prefers most (RFC 9110 q-values), or None."""
    best: tuple[float, str] | None = None
    for part in header.split(",")[:32]:
        fields = part.strip().split(";")
        tag = fields[0].strip().lower().split("-")[0]
        quality = 1.0
        for parameter in fields[1:]:
            name, _, value = parameter.strip().partition("=")
            if name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if tag not in LANGUAGES or quality <= 0:
            continue
        # the earlier of two equal q-values wins
        if best is None or quality > best[0]:
            best = (quality, tag)
    return best[1] if best else None


def choose(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return str(cookie)
    return from_accept_language(accept_language or "") or DEFAULT


class Translator:
    """`t(key, **values)` for one language; an unknown key shows itself, never fails."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.table = messages(language)

    def __call__(self, key: str, **values: object) -> str:
        text = self.table.get(key, key)
        try:
            return text.format(**values)
        except (KeyError, IndexError, ValueError):
            return text
