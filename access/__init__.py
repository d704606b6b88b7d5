"""What every door shares and nothing protocol-specific: the access pipeline and its
stages, the typed description of an access, what it would show, the request context, the
error catalog and its exception, restrictions and the work budget of a request.

This package sits below `fhir_server`, `hl7_bridge` and `imaging`; it imports none of them.
"""
