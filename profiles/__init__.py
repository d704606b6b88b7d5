"""FHIR models (pinned to R4B), this server's profiles, and the validator applying both."""
