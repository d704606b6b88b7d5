"""The patient portal at /portal: a SMART app of MedBridge's own authorization server."""
