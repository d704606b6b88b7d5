"""What one access may see, in a form every door compiles into its own query.

Authorization (a patient-context token) and consent (records a patient hid) narrow an
access to some patients or some studies. Each door turns a `Restriction` into part of
its store query, so paging and counts stay right; nothing filters in Python after the
query except what consent removes per record.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Restriction:
    """`None` means no limit on that axis; an empty set means nothing on it is visible.

    patients: FHIR Patient logical ids (`"123"`, not `"Patient/123"`).
    studies: StudyInstanceUIDs.
    """

    patients: frozenset[str] | None = None
    studies: frozenset[str] | None = None

    @property
    def unrestricted(self) -> bool:
        return self.patients is None and self.studies is None

    @property
    def nothing(self) -> bool:
        return self.patients == frozenset() or self.studies == frozenset()

    def narrowed(self, other: Restriction) -> Restriction:
        """Both restrictions at once (the intersection on each axis)."""
        return Restriction(_both(self.patients, other.patients), _both(self.studies, other.studies))


UNRESTRICTED = Restriction()


def _both(first: frozenset[str] | None, second: frozenset[str] | None) -> frozenset[str] | None:
    if first is None:
        return second
    if second is None:
        return first
    return first & second
