from access.restriction import UNRESTRICTED, Restriction


def test_narrowing_intersects_each_axis_and_none_means_no_limit() -> None:
    patients = Restriction(patients=frozenset({"a", "b"}))
    studies = Restriction(studies=frozenset({"1.2"}))
    both = patients.narrowed(studies)
    assert both == Restriction(frozenset({"a", "b"}), frozenset({"1.2"}))
    assert both.narrowed(Restriction(patients=frozenset({"b", "c"}))).patients == {"b"}
    assert UNRESTRICTED.unrestricted
    assert not both.unrestricted
    assert not both.nothing
    assert Restriction(patients=frozenset()).nothing
