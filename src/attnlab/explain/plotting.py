"""matplotlib for every figure attnlab writes (explanations here, the report's own figures in
attnlab.report.plots): the Agg backend (no display needed) and one way to save a PNG.

Imported on first use only, so that `import attnlab` does not load matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PNG_META = {"Software": None}   # no software tag: an embedded figure carries no web address


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save `fig` as a PNG without metadata that names a web address, close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)
    return path


__all__ = ["PNG_META", "plt", "save_figure"]
