"""The audit trail: one R4 AuditEvent per access (IHE BALP), chained by hash, which
clients may read and never write (docs/audit.md)."""
