"""What lies in checkpoints/ and attacks/: run folders and weights (checkpoints), result files (results), seeds (seeds)."""
