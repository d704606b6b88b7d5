"""What every door shares and nothing protocol-specific: the work budget of a request.

This package sits below `fhir_server`, `hl7_bridge` and `imaging`; it imports none of them.
"""
