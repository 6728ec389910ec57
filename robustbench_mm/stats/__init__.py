"""The statistics of the report: exact tests and bootstrap (significance), per-cell estimates with their intervals (estimates)."""
