"""DIMSE: MedBridge as a Storage, Query/Retrieve and Modality Worklist SCP (pynetdicom)."""
