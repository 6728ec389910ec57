"""What every stage uses: atomic file writes and folder locks (storage), the device, seeds, versions and commit (runtime), progress bars."""
