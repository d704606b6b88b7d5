"""SMART-on-FHIR: the authorization server, its tokens, and the hooks that enforce them."""
