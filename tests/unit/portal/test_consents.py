"""The Consents the portal writes are read by the consent engine as the choice meant."""

from __future__ import annotations

from datetime import date

from consent.consents import consent_facts
from portal import consents

TODAY = date(2026, 6, 1)


def test_hiding_a_record_denies_that_record_to_everyone_unnamed() -> None:
    (fact,) = consent_facts(
        {**consents.hide_reference("p1", "DiagnosticReport/r1"), "id": "c"}, TODAY
    )
    assert (fact.scope, fact.type, fact.actors) == ("patient-privacy", "deny", frozenset())
    assert fact.data == frozenset({"DiagnosticReport/r1"})


def test_hiding_an_organization_names_it_as_the_data() -> None:
    (fact,) = consent_facts({**consents.hide_reference("p1", "Organization/o1"), "id": "c"}, TODAY)
    assert fact.data == frozenset({"Organization/o1"})
    assert fact.type == "deny"


def test_hiding_a_type_and_a_period() -> None:
    (kind,) = consent_facts({**consents.hide_type("p1", "Encounter"), "id": "c"}, TODAY)
    assert kind.classes == frozenset({"Encounter"})
    (period,) = consent_facts(
        {**consents.hide_period("p1", "2020-01-01", "2020-12-31"), "id": "c"}, TODAY
    )
    assert period.data_period == (date(2020, 1, 1), date(2020, 12, 31))


def test_hiding_a_category_names_its_code() -> None:
    hiding = {**consents.hide_category("p1", "http://example.org/cs|notifiable"), "id": "c"}
    (fact,) = consent_facts(hiding, TODAY)
    assert "notifiable" in fact.codes
    assert "http://example.org/cs|notifiable" in fact.codes
    assert consents.describe(hiding) == ("privacy.hidden.category", {"what": "notifiable"})
    (bare,) = consent_facts({**consents.hide_category("p1", "laboratory"), "id": "c"}, TODAY)
    assert bare.codes == frozenset({"laboratory"})


def test_refusing_research_is_a_research_deny() -> None:
    refusal = {**consents.refuse_research("p1"), "id": "c"}
    (fact,) = consent_facts(refusal, TODAY)
    assert (fact.scope, fact.type) == ("research", "deny")
    assert consents.refuses_research(refusal)
    assert not consents.is_hiding(refusal)


def test_the_privacy_page_describes_each_hiding() -> None:
    assert consents.describe(consents.hide_type("p1", "Encounter")) == (
        "privacy.hidden.type", {"what": "Encounter"},
    )  # fmt: skip
    assert consents.describe(consents.hide_reference("p1", "Organization/o1"))[0] == (
        "privacy.hidden.organization"
    )
    key, values = consents.describe(consents.hide_period("p1", "2020-01-01", "2020-12-31"))
    assert (key, values) == ("privacy.hidden.period", {"start": "2020-01-01", "end": "2020-12-31"})
    assert consents.is_hiding(consents.hide_type("p1", "Encounter"))
    assert not consents.is_hiding({**consents.hide_type("p1", "Encounter"), "status": "inactive"})
