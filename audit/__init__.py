"""The audit trail: one R4 AuditEvent per access (IHE BALP), chained by hash (docs/audit.md)."""
