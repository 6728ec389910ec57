"""The evaluation stages, each reading checkpoints/ and writing attacks/<run>/: attacks, deformations, calibration."""
