"""The network a training config describes, freshly initialised: the one place that maps a run's
settings to its architecture, so `mm-robust train` and every loader of its checkpoints
(`runs.checkpoints.load_model`, hence attack, deform, calibrate and `robustbench_mm.evaluate`)
build the same model.

- ``method == "thermometer"``: `models.thermometer.thermometer_preactresnet` with the config's
  ``thermometer_levels`` (the encoding is part of the model, so the weights file plus meta.json
  are enough to rebuild it);
- every other method (baseline, input / manifold mixup, adversarial training): the plain
  PreActResNet with the dataset's normalization (`models.preact.build_model`).
"""

from __future__ import annotations

from torch import nn

from robustbench_mm.models.preact import build_model
from robustbench_mm.models.thermometer import thermometer_preactresnet

THERMOMETER_METHOD = "thermometer"


def model_from_config(config) -> nn.Module:
    """The architecture a `TrainConfig` (or anything with the same fields) describes, freshly initialised."""
    if config.method == THERMOMETER_METHOD:
        return thermometer_preactresnet(config.arch, config.num_classes, levels=config.thermometer_levels,
                                        width=config.width, final_bn=config.final_bn)
    return build_model(config.arch, config.dataset, config.num_classes, config.width, config.final_bn)


__all__ = ["THERMOMETER_METHOD", "model_from_config"]
