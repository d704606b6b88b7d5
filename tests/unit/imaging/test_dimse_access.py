"""The DIMSE door describes an access from the identifier: hooks never read a Dataset."""

from __future__ import annotations

from pydicom.dataset import Dataset

from access.access import Action
from access.context import Actor, Door, RequestContext
from imaging.dimse.door import dimse_access


def test_identifier_uids_and_patient_keys_describe_the_access() -> None:
    identifier = Dataset()
    identifier.QueryRetrieveLevel = "SERIES"
    identifier.StudyInstanceUID = ["1.2.3", "1.2.4"]  # UID list matching
    identifier.SeriesInstanceUID = ""
    identifier.PatientID = "MRN-7"
    context = RequestContext(Door.DIMSE, actor=Actor("dicom-ae", "VIEWER"), peer="10.1.1.1")
    access = dimse_access(Action.C_MOVE, context, identifier, None)
    assert access.action is Action.C_MOVE
    assert access.actor.identifier == "VIEWER"
    assert access.studies == {"1.2.3", "1.2.4"}
    assert access.series == frozenset()
    assert access.patient_query == (("PatientID", "MRN-7"),)
    assert access.client_address == "10.1.1.1"


def test_a_store_names_its_affected_instance() -> None:
    context = RequestContext(Door.DIMSE, actor=Actor("dicom-ae", "CT01"))
    access = dimse_access(Action.C_STORE, context, None, "1.2.840.9")
    assert access.instances == {"1.2.840.9"}
    assert access.studies == frozenset()
