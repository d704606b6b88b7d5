"""One module per FHIR interaction; each takes the exchange and returns a response."""
