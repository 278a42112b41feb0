"""The report's own figures: accuracy with confidence intervals, gain against cost, training curves.

Not a paper module. matplotlib set up as for every attnlab figure (`attnlab.explain.plotting`:
the Agg backend, PNGs without the software tag, so the embedded HTML carries no address at all);
each function returns the path it wrote. Inputs are the rows `report.builder` computes; nothing
is typed in.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ..explain.plotting import plt, save_figure


def accuracy_figure(rows: Sequence[Mapping], path: Path) -> Path:
    """Test accuracy per variant: every seed as a dot, the mean with its 95% CI as a bar."""
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(rows) + 1.5), 3.4))
    rng = np.random.default_rng(0)
    for i, row in enumerate(rows):
        accs = [100 * a for a in row["seed_accs"].values()]
        ax.scatter(i + rng.uniform(-0.12, 0.12, len(accs)), accs, s=12, color="0.55", zorder=2)
        mean = 100 * row["acc_mean"]
        lo, hi = row.get("acc_ci_low", math.nan), row.get("acc_ci_high", math.nan)
        if math.isfinite(lo):
            ax.errorbar(i, mean, yerr=[[mean - 100 * lo], [100 * hi - mean]], fmt="o", color="C0" if row["role"] != "baseline" else "C3",
                        capsize=5, lw=2, zorder=3)
        else:
            ax.plot(i, mean, "o", color="C0", zorder=3)
    baseline = next((r for r in rows if r["role"] == "baseline"), None)
    if baseline is not None:
        ax.axhline(100 * baseline["acc_mean"], color="C3", lw=0.8, ls="--", label="baseline mean")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xticks(range(len(rows)), [r["variant"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Test accuracy per variant (dots: seeds; bars: mean and 95% CI)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated by another (lower cost and higher gain), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def gain_cost_figure(rows: Sequence[Mapping], path: Path) -> Path:
    """Accuracy gain over the baseline (paired mean, 95% CI) against the cost ratio to the
    baseline, once with FLOPs and once with batch-1 latency, the Pareto front marked."""
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6), sharey=True)
    for ax, key, label in ((axes[0], "flops_ratio", "FLOPs / baseline FLOPs"),
                           (axes[1], "latency_b1_ratio", "batch-1 latency / baseline latency")):
        pts, names = [], []
        for row in rows:
            x = row.get(key, math.nan)
            y = 0.0 if row["role"] == "baseline" else row.get("diff_mean", math.nan)
            if not (isinstance(x, (int, float)) and math.isfinite(x) and math.isfinite(y)):
                continue
            pts.append((x, 100 * y))
            names.append((row["variant"], row["role"]))
            if row["role"] != "baseline" and math.isfinite(row.get("diff_ci_low", math.nan)):
                ax.errorbar(x, 100 * y, yerr=[[100 * (y - row["diff_ci_low"])], [100 * (row["diff_ci_high"] - y)]],
                            fmt="none", color="0.6", capsize=3)
        for (x, y), (name, role) in zip(pts, names):
            ax.plot(x, y, "o", color="C3" if role == "baseline" else ("C1" if role == "capacity" else "C0"))
            ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if pts:
            front = pareto_front(pts)
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "-", color="C2", lw=1, label="Pareto front")
            ax.legend(fontsize=7, loc="best")
        ax.axhline(0, color="0.3", lw=0.6)
        ax.axvline(1, color="0.3", lw=0.6, ls=":")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy gain vs baseline (points)")
    fig.suptitle("What attention bought against what it cost (bars: 95% CI of the paired difference)", fontsize=9)
    return save_figure(fig, path)


def training_curves_figure(curves: Mapping[str, Mapping[str, Sequence[Sequence[float]]]], path: Path) -> Path:
    """curves[variant][metric] = list over seeds of per-epoch values; mean over seeds drawn,
    one panel per metric."""
    metrics = []
    for per_variant in curves.values():
        for m in per_variant:
            if m not in metrics:
                metrics.append(m)
    metrics = metrics or ["(no metrics)"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for k, (variant, per_variant) in enumerate(curves.items()):
            runs = [np.asarray(v, dtype=float) for v in per_variant.get(metric, []) if len(v)]
            if not runs:
                continue
            length = min(len(r) for r in runs)
            stack = np.stack([r[:length] for r in runs])
            epochs = np.arange(1, length + 1)
            mean = stack.mean(0)
            ax.plot(epochs, mean, label=variant, color=f"C{k % 10}", lw=1.3)
            if len(runs) > 1:
                ax.fill_between(epochs, stack.min(0), stack.max(0), color=f"C{k % 10}", alpha=0.12)
        ax.set_xlabel("epoch")
        ax.set_title(metric, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Training curves (line: mean over seeds; band: min to max)", fontsize=9, y=1.03)
    return save_figure(fig, path)


__all__ = ["save_figure", "accuracy_figure", "gain_cost_figure", "training_curves_figure", "pareto_front"]
