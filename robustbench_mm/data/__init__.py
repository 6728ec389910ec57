"""Test and training images: datasets, normalization and device-side augmentation (images), the deformation sets of Tables 3 and 7 (deformations)."""
