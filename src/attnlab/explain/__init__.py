"""Explanations: `capture` what attention modules computed, `override_gates` for the reliance
study, and from figures.py `explain_checkpoint` / `explain_model` and `seed_figure` (the
operator illustration, the same for every model), imported on first use so that
`import attnlab` does not load matplotlib. Class evidence, faithfulness and the randomisation test
live in evidence.py, metrics.py and sanity.py, the interactive page in explorer.py."""
from .capture import capture, override_gates


def __getattr__(name):
    if name in ("explain_checkpoint", "explain_model", "seed_figure"):
        from . import figures

        return getattr(figures, name)
    raise AttributeError(f"module 'attnlab.explain' has no attribute {name!r}")


__all__ = ["capture", "override_gates", "explain_checkpoint", "explain_model", "seed_figure"]
