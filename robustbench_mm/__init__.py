"""mm-robust: reproduce and extend the robustness results of Manifold Mixup (Verma et al., 2019)."""

__version__ = "0.1.0"
