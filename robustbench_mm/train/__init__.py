"""Training: the trainer, mixup and manifold mixup, FGSM measured at every evaluated epoch."""
