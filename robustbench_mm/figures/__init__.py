"""Every plot, drawn from plain numbers."""
