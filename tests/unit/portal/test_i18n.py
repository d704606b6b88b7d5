from __future__ import annotations

import re

import pytest

from portal import i18n


def test_every_language_has_the_same_messages_with_the_same_placeholders() -> None:
    english = i18n.messages("en")
    for language in i18n.LANGUAGES:
        table = i18n.messages(language)
        assert table.keys() == english.keys(), language
        for key, text in table.items():
            assert set(re.findall(r"{(\w+)}", text)) == set(re.findall(r"{(\w+)}", english[key])), (
                key
            )


@pytest.mark.parametrize(
    ("header", "chosen"),
    [
        ("lt-LT,lt;q=0.9,en;q=0.8", "lt"),
        ("en-GB,en;q=0.9,lt;q=0.8", "en"),
        ("de-DE,lt;q=0.5", "lt"),
        ("lt;q=0.2, en;q=0.7", "en"),
        ("lt;q=0, en;q=0", None),
        ("fr, de", None),
        ("", None),
        ("lt;q=abc, en", "en"),
    ],
)
def test_accept_language_chooses_the_preferred_supported_language(
    header: str, chosen: str | None
) -> None:
    assert i18n.from_accept_language(header) == chosen


def test_the_cookie_overrides_the_browser() -> None:
    assert i18n.choose("en", "lt-LT") == "en"
    assert i18n.choose("lt", "en") == "lt"
    assert i18n.choose("xx", "lt") == "lt"  # an unknown cookie value is ignored
    assert i18n.choose(None, None) == "en"


def test_a_translator_fills_values_and_never_fails() -> None:
    t = i18n.Translator("en")
    assert t("acting_for", name="Ugne") == "You are acting for Ugne."
    assert t("acting_for") == "You are acting for {name}."
    assert t("no.such.key") == "no.such.key"
