"""The report's own figures: accuracy with confidence intervals, gain against cost, training curves.

Not a paper module. matplotlib set up as for every attnlab figure (`attnlab.explain.plotting`:
the Agg backend, PNGs without the software tag, so the embedded HTML carries no address at all);
each function returns the path it wrote. Inputs are the rows `report.builder` computes; nothing
is typed in.

Layout rules every figure here keeps (tests render them and check the drawn boxes): no text
overprints another (the names of nearby points are moved apart, with a leader line back to
their point: `label_points`); legends sit outside the axes, below them, never over the data;
accuracies are percentages, as in the report's tables, and an accuracy axis ends at 100%.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import Bbox

from ..explain.plotting import plt, save_figure

ROLE_COLOURS = {"baseline": "C3", "capacity": "C1"}                 # every other role: C0
ROLE_NAMES = {"baseline": "baseline", "capacity": "capacity-matched baseline", "attention": "attention variant"}


def _colour(role: str) -> str:
    return ROLE_COLOURS.get(role, "C0")


def _role_legend(fig, roles: Sequence[str], extra: Sequence = ()) -> None:
    """One legend below the axes: a marker per role present, then `extra` handles."""
    seen = list(dict.fromkeys(roles))
    handles = [Line2D([], [], ls="none", marker="o", color=_colour(r), label=ROLE_NAMES.get(r, r)) for r in seen]
    handles += list(extra)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=7, frameon=False)


# --------------------------------------------------------------------------------------------- accuracy

def accuracy_figure(rows: Sequence[Mapping], path: Path) -> Path:
    """Test accuracy per variant: every seed as a dot, the mean with its 95% CI as a bar; the
    axis ends at 100% (an accuracy cannot pass it)."""
    longest = max((len(str(r["variant"])) for r in rows), default=4)
    # a name rotated 30 degrees takes about cos(30) of its length across: give each variant that
    per_variant = max(0.9, (0.075 * longest * math.cos(math.radians(30)) + 0.15))
    fig, ax = plt.subplots(figsize=(max(4.0, per_variant * len(rows) + 1.5), 3.6), layout="constrained")
    rng = np.random.default_rng(0)
    for i, row in enumerate(rows):
        accs = [100 * a for a in row["seed_accs"].values()]
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(accs)), accs, s=12, color="0.55", zorder=2, clip_on=False)
        mean = 100 * row["acc_mean"]
        lo, hi = row.get("acc_ci_low", math.nan), row.get("acc_ci_high", math.nan)
        colour = _colour(row["role"])
        if math.isfinite(lo) and math.isfinite(hi) and math.isfinite(mean):
            ax.errorbar(i, mean, yerr=[[max(0.0, mean - 100 * lo)], [max(0.0, 100 * hi - mean)]], fmt="o",
                        color=colour, capsize=5, lw=2, zorder=3, clip_on=False)
        elif math.isfinite(mean):
            ax.plot(i, mean, "o", color=colour, zorder=3, clip_on=False)
    extra = [Line2D([], [], ls="none", marker="o", markersize=4, color="0.55", label="seed")]
    baseline = next((r for r in rows if r["role"] == "baseline"), None)
    if baseline is not None and math.isfinite(baseline["acc_mean"]):
        ax.axhline(100 * baseline["acc_mean"], color=_colour("baseline"), lw=0.8, ls="--")
        extra.append(Line2D([], [], color=_colour("baseline"), lw=0.8, ls="--", label="baseline mean"))
    low, high = ax.get_ylim()
    ax.set_ylim(low, min(high, 100.0))
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy per variant (dots: seeds; bars: mean and 95% CI)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    _role_legend(fig, [r["role"] for r in rows], extra)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------- gain vs cost

def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated by another (lower cost and higher gain), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


LABEL_RADII = (5, 11, 19, 28, 38, 50, 64, 80)       # points from the marker's centre
LABEL_ANGLES = (45, 135, -45, -135, 90, -90, 0, 180, 22, 158, -22, -158, 68, 112, -68, -112)


def label_points(ax, points: Sequence[tuple[float, float]], names: Sequence[str], fontsize: float = 7,
                 marker_radius: float = 3.5, lines: Sequence[tuple[tuple[float, float], tuple[float, float]]] = ()) -> list:
    """Write each point's name next to it where its box overlaps no other name and no marker and
    stays inside the axes: on the nearest ring of candidate offsets (`LABEL_RADII` points out,
    `LABEL_ANGLES` around) that has such a spot, the spot crossing least of `lines` (segments
    in data coordinates, such as error bars). A name set away from its point gets a grey leader
    line back to it. Where no spot is free, the one overlapping least. The axes must be laid out
    already (positions in pixels are final). Returns the annotations."""
    fig = ax.figure
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r_px = marker_radius * fig.dpi / 72
    centres = [ax.transData.transform(p) for p in points]
    taken = [Bbox.from_extents(cx - r_px, cy - r_px, cx + r_px, cy + r_px) for cx, cy in centres]
    crossed = [Bbox(ax.transData.transform([a, b])).padded(1.0) for a, b in lines]

    def clash(box: Bbox) -> tuple[float, float]:
        """(area of `box` over what is taken or outside the axes, area over `lines`): (0, 0) is a
        free spot."""
        outside = box.width * box.height - _area(Bbox.intersection(box, frame))
        return (outside + sum(_area(Bbox.intersection(box, other)) for other in taken),
                sum(_area(Bbox.intersection(box, line)) for line in crossed))

    annotations = []
    for (x, y), name in zip(points, names):
        best = None
        for radius in LABEL_RADII:
            for angle in LABEL_ANGLES:
                dx, dy = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
                align = {"ha": "left" if dx > 1 else ("right" if dx < -1 else "center"),
                         "va": "bottom" if dy > 1 else ("top" if dy < -1 else "center")}
                probe = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize, **align)
                box = probe.get_window_extent(renderer)
                probe.remove()
                score = clash(box)
                if best is None or score < best[0]:
                    best = (score, radius, (dx, dy), align, box)
            if best[0][0] == 0:        # this ring has a free spot: no need to go further out
                break
        _, radius, offset, align, box = best
        leader = {} if radius == LABEL_RADII[0] else {
            "arrowprops": {"arrowstyle": "-", "color": "0.5", "lw": 0.6, "shrinkA": 0, "shrinkB": marker_radius}}
        annotations.append(ax.annotate(name, (x, y), xytext=offset, textcoords="offset points", fontsize=fontsize,
                                       **align, **leader))
        taken.append(box)
    return annotations


def _area(box) -> float:
    return 0.0 if box is None else max(0.0, box.width) * max(0.0, box.height)


def gain_cost_figure(rows: Sequence[Mapping], path: Path) -> Path:
    """Accuracy gain over the baseline (paired mean, 95% CI) against the cost ratio to the
    baseline, once with FLOPs and once with batch-1 latency, the Pareto front marked; each
    variant named beside its point without overprinting another (`label_points`)."""
    fig, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), sharey=True, layout="constrained")
    labels = []
    for ax, key, label in ((axes[0], "flops_ratio", "FLOPs / baseline FLOPs"),
                           (axes[1], "latency_b1_ratio", "batch-1 latency / baseline latency")):
        pts, names, bars = [], [], []
        for row in rows:
            x = row.get(key, math.nan)
            y = 0.0 if row["role"] == "baseline" else row.get("diff_mean", math.nan)
            if not (isinstance(x, (int, float)) and math.isfinite(x) and math.isfinite(y)):
                continue
            pts.append((x, 100 * y))
            names.append(row["variant"])
            if row["role"] != "baseline" and math.isfinite(row.get("diff_ci_low", math.nan)):
                ax.errorbar(x, 100 * y, yerr=[[max(0.0, 100 * (y - row["diff_ci_low"]))],
                                              [max(0.0, 100 * (row["diff_ci_high"] - y))]],
                            fmt="none", color="0.6", capsize=3)
                bars.append(((x, 100 * row["diff_ci_low"]), (x, 100 * row["diff_ci_high"])))
            ax.plot(x, 100 * y, "o", color=_colour(row["role"]), zorder=3)
        if pts:
            front = pareto_front(pts)
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="C2", lw=1)
        labels.append((ax, pts, names, bars))
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axvline(1, color="0.3", lw=0.6, ls=":")
        ax.margins(x=0.15, y=0.12)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy gain vs baseline (points)")
    fig.suptitle("What attention bought against what it cost (bars: 95% CI of the paired difference)", fontsize=9)
    _role_legend(fig, [r["role"] for r in rows], [Line2D([], [], color="C2", lw=1, label="Pareto front")])
    fig.canvas.draw()                  # lay the axes out once, then keep them where they are:
    fig.set_layout_engine("none")      # the names are placed in pixels
    for ax, pts, names, bars in labels:
        label_points(ax, pts, names, lines=bars)
    return save_figure(fig, path)


# --------------------------------------------------------------------------------------------- curves

def _is_accuracy(metric: str) -> bool:
    return metric.endswith("acc") or metric.endswith("accuracy")


def training_curves_figure(curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], path: Path) -> Path:
    """curves[variant][metric] = list over seeds of per-epoch values; mean over seeds drawn,
    one panel per metric, accuracies (fractions in the run files) in %."""
    metrics = []
    for per_variant in curves.values():
        for m in per_variant:
            if m not in metrics:
                metrics.append(m)
    metrics = metrics or ["(no metrics)"]
    ncols = 2 if len(metrics) == 4 else min(3, len(metrics))      # losses above accuracies
    nrows = math.ceil(len(metrics) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.1 * nrows), squeeze=False, layout="constrained")
    handles = {}
    for ax, metric in zip(axes.flat, metrics):
        scale = 100.0 if _is_accuracy(metric) else 1.0
        for k, (variant, per_variant) in enumerate(curves.items()):
            runs = [scale * np.asarray(v, dtype=float) for v in per_variant.get(metric, []) if len(v)]
            if not runs:
                continue
            length = min(len(r) for r in runs)
            stack = np.stack([r[:length] for r in runs])
            epochs = np.arange(1, length + 1)
            handles[variant] = ax.plot(epochs, stack.mean(0), label=variant, color=f"C{k % 10}", lw=1.3)[0]
            if len(runs) > 1:
                ax.fill_between(epochs, stack.min(0), stack.max(0), color=f"C{k % 10}", alpha=0.12)
        if scale == 100.0:
            low, high = ax.get_ylim()
            ax.set_ylim(low, min(high, 100.0))
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("%" if scale == 100.0 else "value", fontsize=8)
        ax.set_title(f"{metric} (%)" if scale == 100.0 else metric, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.set_visible(False)
    if handles:
        fig.legend(handles=list(handles.values()), loc="outside lower center", ncol=min(6, len(handles)),
                   fontsize=7, frameon=False)
    fig.suptitle("Training curves (line: mean over seeds; band: min to max)", fontsize=9)
    return save_figure(fig, path)


__all__ = ["save_figure", "accuracy_figure", "gain_cost_figure", "training_curves_figure", "pareto_front",
           "label_points"]
