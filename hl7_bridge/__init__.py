"""HL7 v2 over MLLP: listener and sender, charset handling, ACKs, idempotency, dead letters."""
