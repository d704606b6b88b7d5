"""DICOM archive: object storage, ingest, the study/series/instance index, DICOMweb, FHIR upkeep."""
