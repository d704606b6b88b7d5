"""HL7 v2 -> FHIR: a message view, field tables as YAML, and the engine applying them."""
