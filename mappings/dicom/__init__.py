"""DICOM header -> FHIR (ImagingStudy, Patient): tables as data read by a small engine."""
