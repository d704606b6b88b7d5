"""The non-storage SOP classes we serve (PS3.4 Annex A, C, K), as UIDs.

pynetdicom generates its `sop_class` names at import time, which type checkers cannot
see; these are the same UIDs from PS3.6 Annex A.
"""

from __future__ import annotations

from pydicom.uid import UID

Verification = UID("1.2.840.10008.1.1")
PatientRootFind = UID("1.2.840.10008.5.1.4.1.2.1.1")
PatientRootMove = UID("1.2.840.10008.5.1.4.1.2.1.2")
PatientRootGet = UID("1.2.840.10008.5.1.4.1.2.1.3")
StudyRootFind = UID("1.2.840.10008.5.1.4.1.2.2.1")
StudyRootMove = UID("1.2.840.10008.5.1.4.1.2.2.2")
StudyRootGet = UID("1.2.840.10008.5.1.4.1.2.2.3")
ModalityWorklistFind = UID("1.2.840.10008.5.1.4.31")

PATIENT_ROOT = frozenset({PatientRootFind, PatientRootMove, PatientRootGet})
QUERY_RETRIEVE = (
    PatientRootFind, PatientRootMove, PatientRootGet,
    StudyRootFind, StudyRootMove, StudyRootGet,
    ModalityWorklistFind,
)  # fmt: skip
