"""FHIR search: parameter definitions (data), index extraction at write time, queries."""
