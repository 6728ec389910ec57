"""mm-robust: reproduce and extend the robustness results of Manifold Mixup (Verma et al., 2019)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # `robustbench_mm.evaluate` without importing torch for `import robustbench_mm` alone (the CLI's --version).
    if name in ("evaluate", "Evaluation"):
        from robustbench_mm import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
