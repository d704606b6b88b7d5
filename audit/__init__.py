"""The audit trail: the record of every access, which clients may read and never write."""
