"""Each parameter type's compiler: criterion -> clause of single-key row queries."""

from __future__ import annotations

from fhir_server.search.compile import compile_criterion, split_values
from fhir_server.search.keys import SEP, TOP, instant_key, key
from fhir_server.search.nodes import ChainQuery, HasQuery, RowQuery


def only(clause_name: str, value: str, resource_type: str = "Patient") -> dict[str, object]:
    clause = compile_criterion(resource_type, clause_name, value)
    assert len(clause.alternatives) == 1
    alternative = clause.alternatives[0]
    assert isinstance(alternative, RowQuery)
    return alternative.as_filter()


def test_token_forms() -> None:
    assert only("identifier", "sys|1") == {"k": key("identifier", "sys", "1")}
    assert only("identifier", "1") == {"c": key("identifier", "1")}
    assert only("identifier", "|1") == {"k": key("identifier", "", "1")}
    assert only("identifier", "sys|") == {
        "k": {"$gte": key("identifier", "sys", ""), "$lt": key("identifier", "sys", "") + TOP}
    }
    assert compile_criterion("Patient", "gender:not", "male").negate


def test_string_is_folded_prefix_and_exact_is_not() -> None:
    prefix = key("family", "simk")
    assert only("family", "ŠIMK") == {"k": {"$gte": prefix, "$lt": prefix + TOP}}
    assert only("family:exact", "Šimkus") == {"c": key("family", "Šimkus")}


def test_date_precision_and_prefixes() -> None:
    march = (1709251200000, 1711929600000)  # 2024-03-01 .. 2024-04-01 UTC
    low, high = (key("birthdate", instant_key(ms)) for ms in march)
    assert only("birthdate", "2024-03") == {"k": {"$gte": low, "$lt": high}, "h": {"$lte": high}}
    assert only("birthdate", "sa2024-03") == {"k": {"$gte": high, "$lt": key("birthdate", TOP)}}
    assert len(compile_criterion("Patient", "birthdate", "ge2024-03").alternatives) == 2
    assert compile_criterion("Patient", "birthdate", "ne2024-03").negate


def test_number_precision_from_the_value() -> None:
    clause = compile_criterion("Observation", "value-quantity", "5.4|http://unitsofmeasure.org|mg")
    row = clause.alternatives[0]
    assert isinstance(row, RowQuery)
    found = row.as_filter()
    assert found["s"] == "http://unitsofmeasure.org"
    assert found["u"] == "mg"
    bounds = found["k"]
    assert isinstance(bounds, dict)
    assert bounds["$gte"].endswith("5350000")
    assert bounds["$lt"].endswith("5450000")
    unit_only = compile_criterion("Observation", "value-quantity", "5||mg")
    assert len(unit_only.alternatives) == 2  # the unit may be a code or the display unit


def test_references() -> None:
    assert only("subject", "Patient/1", "ImagingStudy") == {"k": key("subject", "Patient/1")}
    assert only("subject", "1", "ImagingStudy") == {"c": key("subject", "1")}
    assert only("subject:Patient", "1", "ImagingStudy") == {"k": key("subject", "Patient/1")}
    assert only("subject:identifier", "s|v", "ImagingStudy") == {
        "k": key("subject:identifier", "s", "v")
    }
    url = "http://elsewhere.example/fhir/Patient/7"
    assert only("subject", url, "ImagingStudy") == {"k": key("subject", url)}
    here = compile_criterion(
        "ImagingStudy", "subject", "http://me/fhir/Patient/7", base_url="http://me/fhir"
    )
    assert here.alternatives[0] == RowQuery((("k", key("subject", "Patient/7")),), 0)


def test_chains_and_has() -> None:
    chain = compile_criterion("ImagingStudy", "subject:Patient.identifier", "s|1")
    assert chain.alternatives == (ChainQuery("subject", ("Patient",), "identifier", "s|1"),)
    has = compile_criterion("Patient", "_has:Observation:patient:code", "1234")
    assert has.alternatives == (HasQuery("Observation", "patient", "code", "1234"),)


def test_missing_and_commas() -> None:
    missing = compile_criterion("Patient", "birthdate:missing", "true")
    assert missing.negate
    assert split_values(r"a,b\,c") == ["a", "b,c"]
    assert len(compile_criterion("Patient", "family", "a,b").alternatives) == 2
    assert SEP not in "".join(split_values("x"))
