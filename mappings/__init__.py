"""Pure translations between HL7v2, DICOM and FHIR: tables as data, small engines, no I/O."""
