"""One module per table family of the report."""
