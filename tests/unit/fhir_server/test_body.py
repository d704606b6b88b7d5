"""Reading FHIR JSON bodies within the budget (fhir_server/body.py): pure, no server."""

from __future__ import annotations

from decimal import Decimal

import pytest

from access.budget import Budget
from access.errors import AccessError
from fhir_server.body import EARLY_CHECK_BYTES, dumps, loads, loads_stored
from medbridge.settings import Settings

SMALL = Budget(max_string_bytes=16, max_json_depth=4, max_list_items=3, max_bundle_entries=2)


def refusal(body: bytes, budget: Budget = SMALL) -> AccessError:
    with pytest.raises(AccessError) as caught:
        loads(body, budget)
    return caught.value


@pytest.mark.parametrize(
    "text", ["1.50", "12345678901234567890.123", "0.10", "-0.0", "1E+2", "1e-7", "100"]
)
def test_numbers_are_written_back_as_sent(text: str) -> None:
    body = f'{{"value":{text}}}'.encode()
    parsed = loads(body, Budget())
    assert dumps(parsed).decode().lower() == body.decode().lower()  # 1e-7 is written 1E-7


def test_integers_beyond_64_bits_are_kept_as_their_digits() -> None:
    parsed = loads(b'{"n":123456789012345678901234567890,"m":-9223372036854775808}', Budget())
    assert parsed["n"] == Decimal("123456789012345678901234567890")
    assert parsed["m"] == -(2**63)
    assert isinstance(parsed["m"], int)
    assert dumps(parsed) == b'{"n":123456789012345678901234567890,"m":-9223372036854775808}'


def test_stored_decimals_survive_a_round_trip() -> None:
    raw = b'{"a":[1.50,{"b":0.10}],"c":7}'
    assert dumps(loads_stored(raw)) == raw


def test_duplicate_keys_are_named() -> None:
    error = refusal(b'{"a":{"b":1,"b":2}}')
    assert (error.code, error.status) == ("MB-1040", 400)
    assert "'b'" in error.diagnostics


@pytest.mark.parametrize("escape", ["\\u0000", "\\u0007", "\\u000B", "\\u000c", "\\u001F"])
def test_c0_controls_are_refused_with_their_path(escape: str) -> None:
    error = refusal(f'{{"resourceType":"Patient","name":[{{"given":["a{escape}"]}}]}}'.encode())
    assert (error.code, error.status) == ("MB-1041", 422)
    assert error.expression == "Patient.name[0].given[0]"


def test_tab_cr_lf_and_an_escaped_backslash_u_are_allowed() -> None:
    parsed = loads(b'{"t":"a\\tb\\r\\nc","u":"\\\\u0000"}', Budget())
    assert parsed == {"t": "a\tb\r\nc", "u": "\\u0000"}


def test_a_string_over_the_cap_is_refused_but_base64_data_is_not() -> None:
    error = refusal(b'{"resourceType":"Patient","name":[{"family":"' + b"x" * 17 + b'"}]}')
    assert (error.code, error.status, error.expression) == (
        "MB-1042",
        422,
        "Patient.name[0].family",
    )
    assert "max_string_bytes" in error.diagnostics
    # multi-byte characters count as their UTF-8 bytes: 6 x 3 bytes > 16
    assert refusal('{"t":"€€€€€€"}'.encode()).code == "MB-1042"
    data = b'{"resourceType":"Binary","data":"' + b"QUFB" * 10 + b'"}'
    assert loads(data, SMALL)["data"] == "QUFB" * 10
    not_base64 = b'{"resourceType":"Binary","data":"' + b"@" * 17 + b'"}'
    assert refusal(not_base64).code == "MB-1042"


def test_lists_nesting_and_bundle_entries_are_capped() -> None:
    error = refusal(b'{"resourceType":"Patient","name":[{"given":["a","b","c","d"]}]}')
    assert (error.code, error.status, error.expression) == (
        "MB-1044",
        413,
        "Patient.name[0].given",
    )
    assert refusal(b'{"a":{"b":{"c":{"d":{"e":1}}}}}').code == "MB-1045"
    assert refusal(b"[" * 5000 + b"]" * 5000).code == "MB-1045"
    bundle = b'{"resourceType":"Bundle","type":"batch","entry":[{},{},{}]}'
    error = refusal(bundle, Budget(max_bundle_entries=2))
    assert (error.code, error.status, error.expression) == ("MB-1043", 413, "Bundle.entry")
    assert "max_bundle_entries" in error.diagnostics


@pytest.mark.parametrize("body", [b"[NaN]", b"[Infinity]", b"{", b"\xff", b'{"a":1}x'])
def test_what_is_not_json_is_a_400(body: bytes) -> None:
    assert refusal(body).code == "MB-1005"


def test_the_list_cap_is_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDBRIDGE_LIMIT_LIST_ITEMS", "7")
    assert Settings().budget().max_list_items == 7


def _bundle(entries: int, padding: int = 0) -> bytes:
    entry = {"resource": {"resourceType": "Patient", "name": [{"family": "x" * padding}]}}
    return dumps({"resourceType": "Bundle", "type": "transaction", "entry": [entry] * entries})


def test_a_large_bundle_over_the_entry_cap_is_refused_before_the_strict_parse() -> None:
    budget = Budget(max_bundle_entries=10)
    body = _bundle(11, padding=EARLY_CHECK_BYTES // 10)
    assert len(body) >= EARLY_CHECK_BYTES
    error = refusal(body, budget)
    assert error.code == "MB-1043"
    assert "max_bundle_entries" in str(error)


def test_what_orjson_accepts_the_strict_parse_still_refuses() -> None:
    # orjson keeps the last of two equal keys; the strict parse refuses them, large or not
    padding = b" " * EARLY_CHECK_BYTES
    error = refusal(b'{"resourceType": "Patient", "id": "a", "id": "b"}' + padding)
    assert error.code == "MB-1040"
    within = loads(_bundle(3, padding=EARLY_CHECK_BYTES // 3), Budget(max_bundle_entries=10))
    assert len(within["entry"]) == 3
