"""matplotlib for every figure attnlab writes (explanations here, the report's own figures in
attnlab.report.plots): the Agg backend (no display needed), one way to save a PNG, and the
texts a figure draws with their boxes, to check that none overprints another.

Imported on first use only, so that `import attnlab` does not load matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.text import Text  # noqa: E402

PNG_META = {"Software": None}   # no software tag: an embedded figure carries no web address


def save_figure(fig, path: Path, dpi: int = 110) -> Path:
    """Save `fig` as a PNG without metadata that names a web address, close it, return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, metadata=PNG_META, bbox_inches="tight")
    plt.close(fig)
    return path


def drawn_texts(fig) -> list[Text]:
    """The texts `fig` draws (titles, axis and tick labels, legends, annotations), after laying
    it out: visible, not empty, and for tick labels only those of ticks inside the axis's view.
    A figure already saved and closed is given a new Agg canvas."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    skipped = set()
    for ax in fig.axes:
        if not ax.get_visible():
            skipped.update(id(t) for t in ax.findobj(Text))
            continue
        for axis in (ax.xaxis, ax.yaxis):
            if not ax.axison:
                skipped.update(id(t) for t in axis.findobj(Text))
                continue
            low, high = sorted(axis.get_view_interval())
            slack = 1e-9 * max(1.0, abs(high - low))
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - slack <= tick.get_loc() <= high + slack:
                    skipped.update((id(tick.label1), id(tick.label2)))
    return [t for t in fig.findobj(Text)
            if t.get_visible() and t.get_text().strip() and id(t) not in skipped]


def overlapping_texts(fig) -> list[tuple[str, str]]:
    """Pairs of texts of `fig` whose drawn boxes overlap (empty when no text overprints another)."""
    texts = drawn_texts(fig)
    renderer = fig.canvas.get_renderer()
    boxes = [Text.get_window_extent(t, renderer) for t in texts]
    return [(texts[i].get_text(), texts[j].get_text())
            for i in range(len(texts)) for j in range(i + 1, len(texts)) if boxes[i].overlaps(boxes[j])]


__all__ = ["PNG_META", "plt", "save_figure", "drawn_texts", "overlapping_texts"]
