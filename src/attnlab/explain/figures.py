"""What each attention module of a trained model did, as figures and numbers.

    paths = explain_checkpoint("runs/quick-.../runs/se/seed0", "out/se")   # PNGs + summary.json

Built on `attnlab.capture` (what every AttentionModule observed) and `override_gates`. The
figures follow the papers they come from:

(a) `seed_figure`: for one output position, the weight each operator gives to every input
    position, computed from real modules on a real image (lifted to 8 feature channels by a
    fixed random 3x3 convolution): a fully connected layer and a 3x3 convolution (|d y_p / d x|,
    summed over channels: the same for every input), a non-local block (Wang et al. 2018, eq. 1:
    the softmax affinity row f(x_p, x_j) / C(x), captured) and SE (Hu et al. 2018, eq. 2-4:
    y_p = s_c(x) x_p, so |d y_p / d x| is the gate at p and small everywhere else through the
    squeeze; drawn on a log scale so both show). Two input images per row pair: fixed weights
    stay, attention moves. The modules are freshly initialised, not the checkpoint's (whose
    channel counts and resolutions differ per stage): the figure is about the operators.
(b) `affinity_figure`: non-local / self-attention affinity rows of chosen query points
    (fractions of the map's height and width), overlaid on several inputs. Where every query
    point gets the same map (`query_difference` below `QUERY_TOLERANCE`: the block computes one
    global context, whatever the query), the title and summary.json say so.
(c) `excitation_figure`: the SE paper's "role of excitation" figure (Hu et al., Fig. 6-7): per
    module (depth), the mean excitation per channel for each class. Signals: those the modules
    declare of kind CHANNEL (SE/ECA/GC 'gate', CBAM 'channel_gate', GC 'transform' with additive
    fusion). Class specificity of a module:
    for each channel the share of the gate's variance over the images that lies between the
    class means (eta^2 = sum_k n_k (m_k - m)^2 / sum_i (g_i - m)^2), averaged over channels with
    non-zero variance. 0: every class gets the same excitation; 1: the class fixes it. A gate
    that is constant over the images has no variance to share: its specificity is undefined,
    written as null with a note.
(d) `spatial_figure`: the SPATIAL and POOLING signals (CBAM spatial gates, residual-attention
    masks (mean over channels) and GC context weights), upsampled (bilinear) to the input and
    overlaid; `stn_figure`: input, warped
    output and the sampling grid (every other grid point) of the spatial transformer.
(e) `reliance_figure`: test accuracy when each stage's attention output is replaced by its
    neutral value, which each module declares with its signals (gates 1, masks / additive
    transforms / non-local responses 0, the identity warp: the module removed), and by its mean
    over the data (the input-dependence removed).
    A stage is the first component of the module path ('layer2' for 'layer2.0.attention').

(f) with `evidence=True`, summary.json also holds the class evidence of `evidence.py`: CAMs
    beside each module's map and their agreement per class, deletion/insertion AUC of every map
    against random, the cascading randomisation test; `evidence_figure` draws, for each module
    with a map over the positions, a few test images (one per class where possible) with the
    module's map, the CAMs at the layer after it and their difference, the maps evidence.py
    computed (not computed again); `html=True` writes the explorer page (`explorer.py`) on top.

Every module gets its panel: a figure holds at most `PANELS_PER_FIGURE` modules, more go into
further files beside it ('c_excitation_per_class_2.png', ...). summary.json is strict JSON (no
NaN). The operator illustration (a) does not depend on the checkpoint: `illustration=False`
leaves it out, for a caller that explains several models and writes it once.

Deviation: accuracy in (e) is on at most `max_images` test images (all 360 for digits), so it is
an estimate with the binomial error of that sample, not the full test accuracy.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator
from torch import nn

from ..attention.base import AFFINITY, CHANNEL, POOLING, SPATIAL, WARP
from ..checks import check_bool, check_int
from ..io.study_files import EXPLAIN_SUMMARY
from .plotting import plt, save_figure
from .capture import capture, override_gates
from .evidence import CAM_METHODS, MODULE, EvidenceMaps, explain_evidence
from .metrics import TOP_FRACTION, rank_correlation, top_overlap
from .explorer import EXPLORER, write_explorer

QUERY_POINTS = [(0.3, 0.3), (0.5, 0.5), (0.7, 0.65)]
PANELS_PER_FIGURE = 12          # modules in one figure; more go into further files
QUERY_TOLERANCE = 0.05          # query points whose maps differ less (relative to the peak) attend alike
CONSTANT_GATE = "gate constant over the inputs: specificity undefined"
EVIDENCE_ROWS = 4               # images in a class-evidence figure
CAM_LABELS = {"grad_cam": "Grad-CAM", "ablation_cam": "Ablation-CAM"}


# --------------------------------------------------------------------------------------------- helpers

def _display(raw: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] -> an (H, W) or (H, W, 3) array for imshow."""
    img = raw.detach().float().cpu()
    if img.shape[0] == 1:
        return img[0].numpy()
    return img[:3].permute(1, 2, 0).clamp(0, 1).numpy()


def _imshow(ax, raw: torch.Tensor) -> None:
    arr = _display(raw)
    ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def _upsample(maps: torch.Tensor, size) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, H, W) bilinear."""
    return F.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)


def _stage_of(path: str) -> str:
    """'layer2.0.attention' -> 'layer2'; inside a wrapper ('model.layer2.0.attention', the
    spatial transformer's) the wrapped model's stage."""
    parts = path.split(".") if path else ["model"]
    return parts[1] if parts[0] == "model" and len(parts) > 2 else parts[0]


def _parts(items: list, size: int) -> list[list]:
    """`items` in consecutive groups of at most `size` (none for no items)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _part_path(out_path: Path, part: int) -> Path:
    """Where part `part` (from 1) of a figure goes: the first at `out_path`, the others beside
    it with the part number ('c_excitation_per_class_2.png')."""
    out_path = Path(out_path)
    return out_path if part == 1 else out_path.with_name(f"{out_path.stem}_{part}{out_path.suffix}")


def _part_title(title: str, part: int, parts: int) -> str:
    return title if parts == 1 else f"{title} (part {part} of {parts})"


def _forward_capture(model: nn.Module, x: torch.Tensor, query_points=None, batch: int = 256):
    with torch.no_grad(), capture(model, query_points=query_points) as rec:
        logits = torch.cat([model(x[i:i + batch]) for i in range(0, len(x), batch)])
    return rec, logits


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])
    return float((pred == y).float().mean())


# --------------------------------------------------------------------------------------------- (a)

def seed_figure(images: torch.Tensor, out_path: Path, position=(0.5, 0.35), channels: int = 8, seed: int = 0) -> Path:
    """(a) weights over the input positions for one output position: FC, conv, non-local, SE.

    `images`: (2, C, H, W) raw images in [0, 1] (two inputs, one row each); `position`: the
    output position as fractions (fy, fx) of the height and width.
    """
    from ..attention import create_attention

    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"seed_figure: images must be (N, C, H, W) with N >= 1, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    gen = torch.Generator().manual_seed(seed)
    x0 = images.float().mean(1, keepdim=True)
    if max(x0.shape[-2:]) > 16:  # keep the FC layer small: (C*16*16)^2 weights at most
        x0 = F.interpolate(x0, size=(16, 16), mode="bilinear", align_corners=False, antialias=True)
    n, _, h, w = x0.shape
    py, px = min(h - 1, int(position[0] * h)), min(w - 1, int(position[1] * w))
    lift = nn.Conv2d(1, channels, 3, padding=1)
    fc = nn.Linear(channels * h * w, channels * h * w)
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    for module in (lift, fc, conv):
        for p in module.parameters():
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(max(1, p[0].numel())))
    torch.manual_seed(seed)
    non_local = create_attention("non_local", channels).eval()
    se = create_attention("se", channels, reduction=2).eval()
    with torch.no_grad():
        feats = lift((x0 - 0.5) * 4)

    def sensitivity(op, f):
        f = f.clone().requires_grad_(True)
        out = op(f)
        out[:, :, py, px].sum().backward()
        return f.grad.abs().sum(1)  # (N, H, W)

    fc_map = torch.stack([sensitivity(lambda t: fc(t.flatten()).view(1, channels, h, w), feats[i:i + 1])[0]
                          for i in range(n)])
    conv_map = sensitivity(conv, feats)
    se_map = sensitivity(se, feats)
    with torch.no_grad(), capture(non_local, query_points=[((py + 0.5) / h, (px + 0.5) / w)]) as rec:
        non_local(feats)
    affinity = rec[rec.paths()[0]]["affinity"][:, 0:1]  # (N, 1, Hk, Wk)
    nl_map = _upsample(affinity, (h, w))[:, 0] / (h * w / (affinity.shape[-1] * affinity.shape[-2]))

    columns = [("input", None), ("fully connected\nfixed, everywhere", fc_map), ("3x3 convolution\nfixed, local", conv_map),
               ("non-local attention\ndepends on input, everywhere", nl_map),
               ("SE recalibration\nown value x gate(all), log", se_map)]
    fig, axes = plt.subplots(n, len(columns), figsize=(2.3 * len(columns), 2.4 * n), squeeze=False,
                             layout="constrained")
    for i in range(n):
        for j, (title, maps) in enumerate(columns):
            ax = axes[i][j]
            if maps is None:
                ax.imshow(x0[i, 0].numpy(), cmap="gray")
            else:
                m = maps[i].detach().numpy()
                if j == len(columns) - 1:
                    from matplotlib.colors import LogNorm

                    ax.imshow(m + 1e-8, cmap="magma", norm=LogNorm(vmin=max(m.max() * 1e-4, 1e-8), vmax=m.max() + 1e-8))
                else:
                    ax.imshow(m, cmap="magma")
            ax.plot(px, py, marker="s", markersize=6, markerfacecolor="none", markeredgecolor="cyan")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(title, fontsize=8)
    fig.suptitle("Weight each operator gives to the input positions for the output position marked "
                 "(two inputs, one per row)", fontsize=9)
    return save_figure(fig, out_path)


# --------------------------------------------------------------------------------------------- (b)

def query_difference(affinity: torch.Tensor) -> float:
    """How much an attention map changes with its query point: the largest difference, at any
    position, between the weights of two query points, relative to the largest weight of that
    input; the maximum over the inputs. `affinity`: (N, Q, Hk, Wk). 0 when every query point
    attends alike; NaN with fewer than two query points (nothing to compare)."""
    if not isinstance(affinity, torch.Tensor) or affinity.dim() != 4:
        raise ValueError(f"query_difference: expected affinity (N, Q, Hk, Wk), got "
                         f"{tuple(affinity.shape) if isinstance(affinity, torch.Tensor) else type(affinity).__name__}")
    rows = affinity.double().flatten(2)                              # (N, Q, positions)
    if rows.shape[1] < 2 or rows.shape[0] == 0:
        return math.nan
    spread = (rows.amax(1) - rows.amin(1)).amax(-1)                  # (N,) largest gap between query points
    peak = rows.abs().flatten(1).amax(-1).clamp_min(torch.finfo(torch.float64).tiny)
    return float((spread / peak).max())


def query_dependence(rec) -> list[dict]:
    """Per module with an affinity signal: {module, signal, query_points, max_query_difference,
    query_independent} (`query_difference` below `QUERY_TOLERANCE`: the same map for every
    query point); difference and verdict null, with a note, for a single query point."""
    records = []
    for path in rec.paths():
        for name in rec.names_of(path, AFFINITY):
            aff = rec[path][name]
            diff = query_difference(aff)
            record = {"module": path, "signal": name, "query_points": int(aff.shape[1])}
            if math.isfinite(diff):
                record.update(max_query_difference=diff, query_independent=diff < QUERY_TOLERANCE)
            else:
                record.update(max_query_difference=None, query_independent=None,
                              query_note="one query point: nothing to compare")
            records.append(record)
            break
    return records


def affinity_figure(rec, raw: torch.Tensor, out_path: Path, max_inputs: int = 4,
                    max_rows: int = 8) -> tuple[list[Path], list[dict]]:
    """(b) affinity rows of the query points over several inputs, one row per (module, input),
    every module (at most `max_rows` rows a figure, further figures beside `out_path`); the
    title notes the modules that give every query point the same map. Returns the paths and
    `query_dependence(rec)`."""
    records = query_dependence(rec)
    if not records:
        return [], records
    points = rec.query_points or [(0.5, 0.5)]
    n = min(max_inputs, raw.shape[0])
    size = raw.shape[-2:]
    groups = _parts(records, max(1, max_rows // n))
    written = []
    for part, group in enumerate(groups, 1):
        rows = [(r, i) for r in group for i in range(n)]
        fig, axes = plt.subplots(len(rows), 1 + len(points), figsize=(2.0 * (1 + len(points)), 2.0 * len(rows)),
                                 squeeze=False, layout="constrained")
        for r, (record, i) in enumerate(rows):
            aff = rec[record["module"]][record["signal"]][i:i + 1]  # (1, Q, Hk, Wk)
            _imshow(axes[r][0], raw[i])
            for q, (fy, fx) in enumerate(points):
                axes[r][0].plot(fx * size[1] - 0.5, fy * size[0] - 0.5, "o", color=f"C{q}", markersize=5)
                ax = axes[r][1 + q]
                _imshow(ax, raw[i])
                heat = _upsample(aff[:, q:q + 1], size)[0, 0].numpy()
                ax.imshow(heat, cmap="jet", alpha=0.55)
                ax.plot(fx * size[1] - 0.5, fy * size[0] - 0.5, "o", color="white", markeredgecolor=f"C{q}", markersize=6)
                if r == 0:
                    ax.set_title(f"query ({fy:.2f}, {fx:.2f})", fontsize=8)
            axes[r][0].set_ylabel(f"{record['module']}\ninput {i}", fontsize=7)
        title = [_part_title("Non-local affinity of each query point over the image (red = most weight)", part, len(groups))]
        title += [f"{r['module']}: the same map for every query point (largest difference "
                  f"{100 * r['max_query_difference']:.1f}% of the peak weight)" for r in group if r["query_independent"]]
        fig.suptitle("\n".join(title), fontsize=9)
        written.append(save_figure(fig, _part_path(out_path, part)))
    return written, records


# --------------------------------------------------------------------------------------------- (c)

def class_specificity(values: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean over channels of eta^2 = between-class sum of squares / total sum of squares.

    `values`: (N, C) per-image signals; `labels`: (N,) class indices. Channels without variance
    are skipped; NaN when none varies.
    """
    if values.dim() != 2 or labels.dim() != 1 or len(values) != len(labels):
        raise ValueError(f"class_specificity: expected values (N, C) and labels (N,), got "
                         f"{tuple(values.shape)} and {tuple(labels.shape)}")
    v = values.double()
    grand = v.mean(0)
    total = ((v - grand) ** 2).sum(0)
    between = torch.zeros_like(grand)
    for k in labels.unique():
        sel = v[labels == k]
        between += len(sel) * (sel.mean(0) - grand) ** 2
    ok = total > 1e-12 * max(1.0, float(total.max()))
    if not bool(ok.any()):
        return math.nan
    return float((between[ok] / total[ok]).mean())


def specificity_record(module: str, signal: str, values: torch.Tensor, labels: torch.Tensor) -> dict:
    """{module, signal, specificity, channels} of one signal (`class_specificity`); a constant
    gate's specificity is null with a `specificity_note` saying why (JSON has no NaN)."""
    spec = class_specificity(values, labels)
    record = {"module": module, "signal": signal, "specificity": spec if math.isfinite(spec) else None,
              "channels": int(values.shape[1])}
    if not math.isfinite(spec):
        record["specificity_note"] = CONSTANT_GATE
    return record


def excitation_figure(rec, labels: torch.Tensor, classes: Sequence[str], out_path: Path,
                      max_channels: int = 64) -> tuple[list[Path], list[dict]]:
    """(c) mean excitation per channel and class at each depth, with the class specificity: one
    panel per module, every module (`PANELS_PER_FIGURE` a figure, further figures beside
    `out_path`). Returns the paths and the `specificity_record` of each module."""
    found = []
    for path in rec.paths():
        for name in rec.names_of(path, CHANNEL):
            t = rec[path][name]
            if t.dim() == 4 and t.shape[-1] == 1 and t.shape[-2] == 1 and len(t) == len(labels):
                found.append((path, name, t.flatten(1)))
                break
    records = [specificity_record(p, s, v, labels) for p, s, v in found]
    classes_present = sorted(int(k) for k in labels.unique())
    cmap = plt.get_cmap("tab10" if len(classes_present) <= 10 else "tab20")
    groups = _parts(list(zip(found, records)), PANELS_PER_FIGURE)
    written = []
    for part, group in enumerate(groups, 1):
        fig, axes = plt.subplots(len(group), 1, figsize=(7.5, 1.9 * len(group) + 0.6), squeeze=False,
                                 layout="constrained")
        for ax, ((path, name, v), record) in zip(axes[:, 0], group):
            c = min(max_channels, v.shape[1])
            for j, k in enumerate(classes_present):
                label = classes[k] if k < len(classes) else str(k)
                ax.plot(range(c), v[labels == k, :c].mean(0).numpy(), lw=0.9, color=cmap(j % cmap.N), label=str(label))
            ax.set_ylabel(name, fontsize=7)
            spec = record["specificity"]
            ax.set_title(f"{path}: class specificity " + (f"{spec:.3f}" if spec is not None else "undefined (constant gate)"),
                         fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[-1][0].set_xlabel("channel index")
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="outside lower center", fontsize=6, ncol=min(10, len(names)), frameon=False)
        fig.suptitle(_part_title("Excitation per channel averaged per class, by depth (SE paper Fig. 6)", part,
                                 len(groups)), fontsize=9)
        written.append(save_figure(fig, _part_path(out_path, part)))
    return written, records


# --------------------------------------------------------------------------------------------- (d)

def spatial_figure(rec, raw: torch.Tensor, out_path: Path, max_inputs: int = 4) -> list[Path]:
    """(d) CBAM spatial gates, residual masks, GC context weights overlaid on the inputs: one row
    per module (named at its left), one column per input, every module (`PANELS_PER_FIGURE` a
    figure, further figures beside `out_path`)."""
    found = []
    for path in rec.paths():
        for name in rec.names_of(path, SPATIAL, POOLING):
            t = rec[path][name]
            if t.dim() == 4 and t.shape[-1] * t.shape[-2] > 1:
                found.append((path, rec.signal(path, name).kind, name, t.float().mean(1, keepdim=True)))
    n = min(max_inputs, raw.shape[0])
    groups = _parts(found, PANELS_PER_FIGURE)
    written = []
    for part, group in enumerate(groups, 1):
        fig, axes = plt.subplots(1 + len(group), n, figsize=(1.8 * n + 1.6, 1.8 * (1 + len(group))), squeeze=False,
                                 layout="constrained")
        for i in range(n):
            _imshow(axes[0][i], raw[i])
            axes[0][i].set_title(f"input {i}", fontsize=8)
        axes[0][0].set_ylabel("input", rotation=0, ha="right", va="center", fontsize=7)
        for j, (path, kind, name, maps) in enumerate(group, 1):
            # gates and masks are in [0, 1]: one fixed scale, so maps compare across inputs and
            # stages; pooling weights (GC's context) sum to 1 over the positions: scaled per image
            scale = {} if kind == POOLING else {"vmin": 0.0, "vmax": 1.0}
            for i in range(n):
                ax = axes[j][i]
                _imshow(ax, raw[i])
                ax.imshow(_upsample(maps[i:i + 1], raw.shape[-2:])[0, 0].numpy(), cmap="jet", alpha=0.5, **scale)
            axes[j][0].set_ylabel(f"{path}\n{name} ({maps.shape[-2]}x{maps.shape[-1]})\n"
                                  f"{'per-image scale' if not scale else 'scale 0-1'}",
                                  rotation=0, ha="right", va="center", fontsize=7)
        fig.suptitle(_part_title("Where the spatial attention looked (red = high), upsampled to the input", part,
                                 len(groups)), fontsize=9)
        written.append(save_figure(fig, _part_path(out_path, part)))
    return written


def stn_figure(model: nn.Module, rec, raw: torch.Tensor, out_path: Path, max_inputs: int = 4) -> Optional[Path]:
    """(d) spatial transformer: input with its sampling grid, warped output."""
    paths = [p for p in rec.paths() if rec.names_of(p, WARP)]
    if not paths:
        return None
    path = paths[0]
    stn = model.get_submodule(path) if path else model
    theta = rec[path][rec.names_of(path, WARP)[0]].double()
    n = min(max_inputs, raw.shape[0], len(theta))
    h, w = raw.shape[-2:]
    grid = stn.grid(theta[:n], (h, w)).float()  # (n, H, W, 2) in [-1, 1]
    warped = F.grid_sample(raw[:n].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    fig, axes = plt.subplots(n, 3, figsize=(6.3, 2.1 * n), squeeze=False, layout="constrained")
    step = max(1, min(h, w) // 8)
    for i in range(n):
        _imshow(axes[i][0], raw[i])
        _imshow(axes[i][1], raw[i])
        gx = ((grid[i, ..., 0] + 1) * w - 1) / 2
        gy = ((grid[i, ..., 1] + 1) * h - 1) / 2
        sub_x, sub_y = gx[::step, ::step].numpy(), gy[::step, ::step].numpy()
        axes[i][1].plot(sub_x, sub_y, "-", color="yellow", lw=0.6)
        axes[i][1].plot(sub_x.T, sub_y.T, "-", color="yellow", lw=0.6)
        axes[i][1].set_xlim(-0.5, w - 0.5)
        axes[i][1].set_ylim(h - 0.5, -0.5)
        _imshow(axes[i][2], warped[i].clamp(0, 1))
    for j, title in enumerate(("input", "sampling grid on the input", "warped output")):
        axes[0][j].set_title(title, fontsize=8)
    fig.suptitle(f"Spatial transformer ({path or 'model'}): where the output samples the input", fontsize=9)
    return save_figure(fig, out_path)


# --------------------------------------------------------------------------------------------- (e)

def reliance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, rec) -> dict:
    """(e) accuracy with each stage's attention outputs at their neutral value and at their mean
    (the outputs whose module declares a neutral value for them)."""
    outputs: dict[str, dict[str, torch.Tensor]] = {}
    for path in rec.paths():
        names = [n for n in rec.names(path) if getattr(rec.signal(path, n), "neutral", None) is not None]
        if names:
            outputs[path] = {n: rec[path][n] for n in names}
    base = _accuracy(model, x, y)
    stages: dict[str, list[str]] = {}
    for path in outputs:
        stages.setdefault(_stage_of(path), []).append(path)
    if len(stages) > 1:
        stages["all"] = list(outputs)
    result = {"accuracy": base, "images": int(len(y)), "stages": []}
    for stage, paths in stages.items():
        removed = {p: {n: rec.signal(p, n).neutral_for(v) for n, v in outputs[p].items()} for p in paths}
        averaged = {p: {n: v.float().mean(0, keepdim=True) for n, v in outputs[p].items()} for p in paths}
        with override_gates(model, removed):
            acc_removed = _accuracy(model, x, y)
        with override_gates(model, averaged):
            acc_mean = _accuracy(model, x, y)
        result["stages"].append({"stage": stage, "modules": paths, "removed": acc_removed, "mean": acc_mean})
    return result


def reliance_figure(result: dict, out_path: Path) -> Optional[Path]:
    stages = result.get("stages") or []
    if not stages:
        return None
    width = max(5.0, 1.2 * len(stages) + 1.5)
    fig, ax = plt.subplots(figsize=(width, 3.4), layout="constrained")
    idx = np.arange(len(stages))
    ax.bar(idx - 0.2, [100 * s["removed"] for s in stages], 0.4, label="output at neutral value (removed)", color="C3")
    ax.bar(idx + 0.2, [100 * s["mean"] for s in stages], 0.4, label="output at its data mean", color="C0")
    ax.axhline(100 * result["accuracy"], color="k", lw=1, ls="--", label=f"intact ({100 * result['accuracy']:.1f}%)")
    ax.set_xticks(idx, [s["stage"] for s in stages])
    ax.set_ylabel(f"accuracy on {result['images']} test images (%)")
    ax.set_ylim(0, 100)
    fig.legend(loc="outside lower center", fontsize=7, ncol=3 if width >= 5.5 else 1, frameon=False)
    ax.set_title("Reliance: how much the network leans on its attention, per stage", fontsize=9)
    return save_figure(fig, out_path)


# --------------------------------------------------------------------------------------------- (f)

def evidence_rows(labels: torch.Tensor, rows: int = EVIDENCE_ROWS) -> list[int]:
    """Indices of up to `rows` images, one per class where possible: the first image of each
    class in class order, then the remaining images in order."""
    check_int("evidence_rows", "rows", rows)
    labels = torch.as_tensor(labels).view(-1).tolist()
    first = sorted({k: i for i, k in reversed(list(enumerate(labels)))}.items())
    picked = [i for _, i in first][:rows]
    return picked + [i for i in range(len(labels)) if i not in picked][:rows - len(picked)]


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) scaled to [0, 1] per image (a constant map to 0)."""
    flat = maps.double().flatten(1)
    low, high = flat.amin(1, keepdim=True), flat.amax(1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(maps)


def _agreement_text(cam: torch.Tensor, module_map: torch.Tensor) -> str:
    """'ρ 0.32, IoU 0.10' of one image's CAM against its module map, as in `evidence.agreement`."""
    rho = float(rank_correlation(cam, module_map)[0])
    iou = float(top_overlap(cam, module_map, TOP_FRACTION)[0])
    return f"ρ {rho:.2f}, IoU {iou:.2f}" if math.isfinite(rho) else f"ρ undefined, IoU {iou:.2f}"


def evidence_figure(maps: EvidenceMaps, raw: torch.Tensor, labels: torch.Tensor, classes: Sequence[str],
                    out_dir: Path, rows: int = EVIDENCE_ROWS, difference: bool = True) -> list[Path]:
    """(f) one figure per module map of `maps`, f_evidence_<module>_<signal>.png in `out_dir`: a
    row per image (`evidence_rows`); columns input | the module's map | each CAM at the layer
    after the module | (with `difference`) the first CAM minus the module's map. Every map is at
    the input's size and scaled to [0, 1] per image before it is drawn or subtracted; the module
    map and the CAMs are overlaid on the input, the difference drawn beside it. Each CAM's title
    holds its agreement with the module's map on that image. `raw` and `labels`: the images and
    classes `maps` was computed for (their first N, N the batch of `maps`)."""
    check_bool("evidence_figure", "difference", difference)
    module_entries = maps.of(MODULE)
    if not module_entries:
        return []
    count = len(next(iter(maps.maps.values())))
    picked = evidence_rows(labels[:count], rows)
    written = []
    for entry in module_entries:
        module_map = maps.maps[entry.name][picked]
        cams = [(CAM_LABELS[e.kind], maps.maps[e.name][picked]) for e in maps.entries
                if e.kind in CAM_METHODS and e.layer == entry.layer]
        overlays = [(f"module map\n{entry.signal}", _unit(module_map))] + [(label, _unit(cam)) for label, cam in cams]
        gap = difference and bool(cams)
        ncols = 1 + len(overlays) + gap
        fig, axes = plt.subplots(len(picked), ncols, figsize=(1.9 * ncols + 0.6, 1.9 * len(picked) + 1.0),
                                 squeeze=False, layout="constrained")
        for r, i in enumerate(picked):
            k = int(labels[i])
            _imshow(axes[r][0], raw[i])
            axes[r][0].set_ylabel(f"image {i}\n{classes[k] if k < len(classes) else k}", fontsize=7)
            for c, (_, scaled) in enumerate(overlays, 1):
                _imshow(axes[r][c], raw[i])
                axes[r][c].imshow(scaled[r, 0].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="nearest")
            for c, (label, cam) in enumerate(cams, 2):
                head = f"{label}\n" if r == 0 else ""
                axes[r][c].set_title(head + _agreement_text(cam[r:r + 1], module_map[r:r + 1]), fontsize=7)
            if gap:
                axes[r][-1].imshow((overlays[1][1] - overlays[0][1])[r, 0].numpy(), cmap="RdBu_r", vmin=-1, vmax=1,
                                   interpolation="nearest")
                axes[r][-1].set_xticks([])
                axes[r][-1].set_yticks([])
        axes[0][0].set_title("input", fontsize=7)
        axes[0][1].set_title(overlays[0][0], fontsize=7)
        if gap:
            axes[0][-1].set_title(f"difference\n{cams[0][0]} - module", fontsize=7)
        fig.suptitle(f"{entry.module or 'model'}: its map beside the class evidence at {entry.layer or 'model'} "
                     f"(CAMs of the labelled class)", fontsize=9)
        fig.supxlabel("red = high, blue = low, each map scaled to [0, 1] per image; difference: red = CAM higher, "
                      "blue = module map higher\nρ: Spearman rank correlation of the CAM with the module map, "
                      f"IoU: overlap of their top {100 * TOP_FRACTION:.0f}% pixels", fontsize=7)
        slug = re.sub(r"[^A-Za-z0-9]+", "_", entry.name).strip("_")
        written.append(save_figure(fig, Path(out_dir) / f"f_evidence_{slug}.png"))
    return written


# --------------------------------------------------------------------------------------------- entry

def _write_summary(summary: dict, path: Path) -> Path:
    """Write `summary` as strict JSON (a NaN or infinity is an error, never written: JSON has
    none); tensors' and numpy's numbers as plain numbers."""
    try:
        text = json.dumps(summary, indent=2, default=float, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"explain: {path.name} would hold a value JSON cannot represent ({err}); "
                         f"expected finite numbers or null") from None
    Path(path).write_text(text)
    return Path(path)


def explain_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, raw: torch.Tensor, out_dir,
                  classes: Optional[Sequence[str]] = None, query_points=QUERY_POINTS,
                  illustration: bool = True, evidence: bool = False, html: bool = False) -> list[Path]:
    """Every figure for `model` on normalised inputs `x` (labels `y`, display images `raw` in
    [0, 1]); writes PNGs and summary.json into `out_dir` and returns the paths written.
    `illustration=False` leaves out (a), the operator illustration, which is the same for every
    model (write it once with `seed_figure`). `evidence=True` adds the class evidence of
    `attnlab.explain.evidence` (CAMs beside the module maps, their agreement, faithfulness and the
    randomisation test) to summary.json and draws `evidence_figure`; `html=True` (implies `evidence`) also writes the
    interactive explorer page (`attnlab.explain.explorer`, explorer.html)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"explain_model: expected an nn.Module, got {type(model).__name__}")
    if x.dim() != 4 or len(x) != len(y) or len(raw) != len(x):
        raise ValueError(f"explain_model: x (N, C, H, W), y (N,) and raw (N, C, H, W) must match, got "
                         f"{tuple(x.shape)}, {tuple(y.shape)}, {tuple(raw.shape)}")
    check_bool("explain_model", "illustration", illustration)
    check_bool("explain_model", "evidence", evidence)
    check_bool("explain_model", "html", html)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = list(classes) if classes is not None else [str(k) for k in range(int(y.max()) + 1)]
    model.eval()
    rec, _ = _forward_capture(model, x, query_points=query_points)
    written = [seed_figure(raw[:2], out_dir / "a_seed_picture.png")] if illustration else []
    affinity, query = affinity_figure(rec, raw, out_dir / "b_nonlocal_affinity.png")
    excitation, specificity = excitation_figure(rec, y, classes, out_dir / "c_excitation_per_class.png")
    written += affinity + excitation + spatial_figure(rec, raw, out_dir / "d_spatial_maps.png")
    stn = stn_figure(model, rec, raw, out_dir / "d_spatial_transformer.png")
    rel = reliance(model, x, y, rec) if rec.paths() else {"accuracy": _accuracy(model, x, y), "images": len(y), "stages": []}
    written += [path for path in (stn, reliance_figure(rel, out_dir / "e_reliance.png")) if path is not None]
    summary = {"modules": dict(rec.modules), "class_specificity": specificity, "affinity": query,
               "reliance": rel, "figures": [p.name for p in written]}
    if evidence or html:
        found, maps = explain_evidence(model, x, y)
        summary.update(found)
        drawn = evidence_figure(maps, raw, y, classes, out_dir)
        written += drawn
        summary["figures"] += [p.name for p in drawn]
        if html:
            written.append(write_explorer(model, x, y, raw, classes, maps, summary, out_dir / EXPLORER,
                                          title=f"attnlab explorer: {type(model).__name__}", x_all=x, y_all=y))
    _write_summary(summary, out_dir / EXPLAIN_SUMMARY)
    return written


def load_explain_data(config, data_info: dict, dataset: Optional[str] = None, data_dir=None, max_images: int = 512):
    """(x normalised as in training, y, raw images in [0, 1], class names) from the test split."""
    from ..data.augment import normalise
    from ..data.datasets import load_dataset

    name = dataset or config.dataset
    data = load_dataset(name, data_dir if data_dir is not None else config.data_dir, image_size=config.image_size)
    if not data.in_memory:
        items = [data.test_set[i] for i in range(min(max_images, len(data.test_set)))]
        test_x = torch.stack([torch.as_tensor(a) for a, _ in items])
        test_y = torch.as_tensor([int(b) for _, b in items])
    else:
        test_x, test_y = data.test_x[:max_images], data.test_y[:max_images]
    mean, std = data_info.get("mean", data.mean), data_info.get("std", data.std)
    x = normalise(test_x, mean, std)
    raw = test_x.float() / 255.0 if test_x.dtype == torch.uint8 else test_x.float()
    return x, test_y, raw, list(data.classes)


def explain_checkpoint(checkpoint, out_dir, dataset: Optional[str] = None, data_dir=None,
                       max_images: int = 512, illustration: bool = True, evidence: bool = False,
                       html: bool = False) -> list[Path]:
    """Figures (a)-(e) ((f) too with `evidence`) and summary.json of a trained run (run folder, checkpoints folder or
    checkpoint file) on up to `max_images` test images; returns the paths written.
    `illustration=False` leaves out (a), which does not depend on the checkpoint; `evidence` and
    `html` as in `explain_model`."""
    from ..train import load_trained

    if not isinstance(checkpoint, (str, Path)):
        raise TypeError(f"checkpoint must be a path, got {type(checkpoint).__name__} {checkpoint!r}")
    check_int("explain_checkpoint", "max_images", max_images, 2)
    check_bool("explain_checkpoint", "illustration", illustration)
    check_bool("explain_checkpoint", "evidence", evidence)
    check_bool("explain_checkpoint", "html", html)
    model, config = load_trained(checkpoint)
    x, y, raw, classes = load_explain_data(config, getattr(model, "data_info", {}) or {}, dataset, data_dir, max_images)
    return explain_model(model, x, y, raw, out_dir, classes, illustration=illustration, evidence=evidence, html=html)


__all__ = ["explain_checkpoint", "explain_model", "seed_figure", "affinity_figure", "excitation_figure",
           "spatial_figure", "stn_figure", "evidence_figure", "evidence_rows", "reliance", "reliance_figure",
           "class_specificity", "specificity_record", "query_difference", "query_dependence", "load_explain_data"]
