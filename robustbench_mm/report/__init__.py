"""reports/: result files read back and checked (records), tables, orderings, figures, and publishing."""
