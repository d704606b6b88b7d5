"""The consent engine (issue 15): who may see which of a patient's records, and why."""
