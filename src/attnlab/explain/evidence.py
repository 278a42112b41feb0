"""Class evidence beside what each attention module computed: class-activation maps at the layer
after every attention module and at the last stage, the modules' own spatial maps, how far they
agree, and how faithful each map is to the model.

    summary, maps = explain_evidence(model, x, y)   # all below, as summary.json holds it
    maps = evidence_maps(model, x, y)            # EvidenceMaps: every map at the input's size
    agreement(maps, y)                           # per layer, method and class: rho and top-10% IoU
    faithfulness(model, x, y, maps)              # deletion / insertion AUC of each map and of random

The class-activation maps come from captum (its `LayerGradCam`, `LayerFeatureAblation` and
`LayerActivation`), the library the PyTorch project keeps for attribution:

* Grad-CAM (Selvaraju et al. 2017, eq. 1-2): the channel weights are the spatial mean of the
  gradient of the class score y_c with respect to the layer's output A; the map is
  ReLU(sum_k w_k A_k). captum's `LayerGradCam` with `relu_attributions=True`.
* Ablation-CAM (Desai and Ramaswamy 2020, eq. 3-4), gradient-free: the weight of channel k is the
  drop of the class score when that channel of A is set to zero, relative to the score,
  w_k = (y_c - y_c^k) / y_c; the map is ReLU(sum_k w_k A_k). The drops come from captum's
  `LayerFeatureAblation` with one mask group per channel, A from `LayerActivation`.
  Popular code divides by the score plus a small constant; the paper divides by the score,
  which is the default here; `scale_by_score=False` leaves the division out (a per-image
  constant: it changes no ranking unless the score is negative, where the paper's map is the
  evidence against the class).
  Ablation-CAM rather than Score-CAM: captum has the per-channel ablation, and ablation asks the
  question the faithfulness curves ask too (what the score loses without the feature), with one
  forward pass per channel instead of Score-CAM's one per channel on a masked input.

Layers. The layer after an attention module is the block that holds it when the module is a
slot of a block (an SE gate inside a residual block: the block's output), else the module itself
(a non-local block or a residual-attention stage between blocks, a spatial transformer in front
of the network). The last stage is the last module, in the order the forward pass finishes
them, that holds a convolution and outputs a map larger than 1x1 (left out when that output is the
one of an attention module's layer already listed: a non-local block closing the last stage).

Module maps (one (N, 1, h, w) map per attention module that computes one over the positions):
spatial gates and masks averaged over the channels (CBAM, residual attention), context weights
(GC), the affinity row of one query point (non-local and self-attention; the centre by default),
and for a spatial transformer the density of its sampling grid over the input (how many output
positions sample each input position). Channel gates (SE, ECA) have no map over the positions.

Every map is resized to the input by bilinear interpolation before it is compared or used to
rank pixels. The CAMs are computed for the class `y` of each image (the label), and the
faithfulness curves follow the probability of that class.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..attention.base import AFFINITY, AttentionModule, POOLING, SPATIAL, WARP
from ..checks import check_bool
from .capture import capture, forward_with_hooks
from .sanity import THRESHOLD, cascading_randomisation
from .metrics import (TOP_FRACTION, deletion_insertion, nanmean, random_baseline, rank_correlation,
                      top_overlap)

CAM_METHODS = ("grad_cam", "ablation_cam")
MODULE = "module"
CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


# --------------------------------------------------------------------------------------------- layers

def _top_attention_modules(model: nn.Module) -> list[str]:
    """Paths of the attention modules not nested inside another one, in module order."""
    paths = [p for p, m in model.named_modules() if isinstance(m, AttentionModule)]
    return [p for p in paths if not any(p.startswith(q + ".") for q in paths if q != p)]


def _forward_order(model: nn.Module, x: torch.Tensor) -> tuple[list[tuple[str, tuple]], dict[str, int]]:
    """(path, output shape) of every module in the order their forward finishes (first call), and
    which output tensor each returned ({path: identity}: a stage and its last module share one)."""
    seen: dict[str, tuple] = {}
    outputs: dict[str, torch.Tensor] = {}

    def keep(path):
        def hook(_module, _inputs, out):
            if path not in seen and isinstance(out, torch.Tensor):
                seen[path], outputs[path] = tuple(out.shape), out
        return hook

    forward_with_hooks(model, x[:1], {path: keep(path) for path, _ in model.named_modules() if path})
    return list(seen.items()), {p: id(t) for p, t in outputs.items()}


def evidence_layers(model: nn.Module, x: torch.Tensor) -> dict[str, list[str]]:
    """{layer path: the attention modules it follows} for the layer after each attention module
    and for the last stage (its list may be empty); in forward order. See the module docstring."""
    order, identity = _forward_order(model, x)
    shapes = dict(order)
    modules = dict(model.named_modules())

    def layer_after(path: str) -> str:
        parent = path.rpartition(".")[0]
        block = modules.get(parent)
        if parent and not isinstance(block, CONTAINERS) and len(shapes.get(parent, ())) == 4:
            return parent
        return path

    layers: dict[str, list[str]] = {}
    for path in _top_attention_modules(model):
        if path in shapes and len(shapes[path]) == 4:
            layers.setdefault(layer_after(path), []).append(path)
    has_conv = {p for p, m in modules.items() if any(isinstance(c, nn.Conv2d) for c in m.modules())}
    last = [p for p, s in order if p in has_conv and len(s) == 4 and s[-1] * s[-2] > 1]
    if last and identity.get(last[-1]) not in {identity.get(p) for p in layers}:
        layers.setdefault(last[-1], [])
    rank = {p: i for i, (p, _) in enumerate(order)}
    return dict(sorted(layers.items(), key=lambda item: rank.get(item[0], math.inf)))


# --------------------------------------------------------------------------------------------- maps

def to_input(maps: torch.Tensor, size) -> torch.Tensor:
    """(N, 1, h, w) -> (N, 1, H, W), bilinear (a map already at the size is returned as it is)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps.float()
    return F.interpolate(maps.float(), size=tuple(size), mode="bilinear", align_corners=False)


def grad_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Grad-CAM of `layer` for the classes `target`: (N, 1, h, w) at the layer's resolution."""
    from captum.attr import LayerGradCam

    return LayerGradCam(model, layer).attribute(x, target=target, relu_attributions=True).detach()


def ablation_cam(model: nn.Module, layer: nn.Module, x: torch.Tensor, target: torch.Tensor,
                 scale_by_score: bool = True) -> torch.Tensor:
    """Ablation-CAM of `layer` for the classes `target`: (N, 1, h, w) at the layer's resolution."""
    from captum.attr import LayerActivation, LayerFeatureAblation

    check_bool("ablation_cam", "scale_by_score", scale_by_score)
    with torch.no_grad():
        activation = LayerActivation(model, layer).attribute(x).detach()
        channels = activation.shape[1]
        mask = torch.arange(channels, device=x.device).view(1, channels, 1, 1)
        drops = LayerFeatureAblation(model, layer).attribute(
            x, target=target, layer_mask=mask, layer_baselines=0.0)
        weights = drops.detach()[:, :, :1, :1]                     # (N, C, 1, 1): the same at every position
        if scale_by_score:
            score = model(x).gather(1, target.view(-1, 1)).view(-1, 1, 1, 1)
            weights = weights / score.where(score.abs() > 1e-12, torch.full_like(score, 1e-12))
    return F.relu((weights * activation).sum(1, keepdim=True))


def _sampling_density(stn: nn.Module, theta: torch.Tensor, size) -> torch.Tensor:
    """(N, 1, H, W): how many output positions of the transformer sample each input position."""
    h, w = size
    grid = stn.grid(theta.double(), (h, w)).float()           # (N, H, W, 2) in [-1, 1]
    cols = (((grid[..., 0] + 1) * w - 1) / 2).round().long()
    rows = (((grid[..., 1] + 1) * h - 1) / 2).round().long()
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    index = (rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)).flatten(1)
    density = torch.zeros(len(theta), h * w).scatter_add_(1, index, inside.flatten(1).float())
    return density.view(-1, 1, h, w)


def module_maps(model: nn.Module, x: torch.Tensor, query_point=(0.5, 0.5)) -> dict[tuple[str, str], torch.Tensor]:
    """{(module path, signal): (N, 1, h, w)} of every attention module that computes a map over
    the positions (see the module docstring), at the module's resolution."""
    with torch.no_grad(), capture(model, query_points=[tuple(query_point)]) as rec:
        model(x)
    top = set(_top_attention_modules(model))
    out = {}
    for path in rec.paths():
        owner = path if path in top else next((p for p in top if path.startswith(p + ".")), path)
        for name in rec.names_of(path, SPATIAL, POOLING, AFFINITY, WARP):
            kind, value = rec.signal(path, name).kind, rec[path][name]
            if kind == WARP:
                stn = model.get_submodule(path) if path else model
                out[(owner, name)] = _sampling_density(stn, value, x.shape[-2:])
            elif kind == AFFINITY:
                out[(owner, name)] = value[:, :1].float()
            elif value.dim() == 4 and value.shape[-1] * value.shape[-2] > 1:
                out[(owner, name)] = value.float().mean(1, keepdim=True)
            if (owner, name) in out:
                break
    return out


@dataclass
class MapEntry:
    """One map: its name, kind ('module', 'grad_cam', 'ablation_cam'), the layer it belongs to
    (the layer after its module, or the layer of the CAM), the module and signal of a module map."""

    name: str
    kind: str
    layer: str
    module: Optional[str] = None
    signal: Optional[str] = None


@dataclass
class EvidenceMaps:
    """Every map of a batch: `maps[name]` (N, 1, H, W) at the input's size, `native[name]` at the
    resolution it was computed at, `entries` what each is, `layers` {layer: modules it follows}."""

    layers: dict[str, list[str]]
    entries: list[MapEntry] = field(default_factory=list)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    native: dict[str, torch.Tensor] = field(default_factory=dict)

    def add(self, entry: MapEntry, native: torch.Tensor, size) -> None:
        self.entries.append(entry)
        self.native[entry.name] = native.detach().cpu()
        self.maps[entry.name] = to_input(native.detach().cpu(), size)

    def of(self, kind: str, layer: Optional[str] = None) -> list[MapEntry]:
        return [e for e in self.entries if e.kind == kind and (layer is None or e.layer == layer)]


def cam_name(method: str, layer: str) -> str:
    return f"{method}@{layer or 'model'}"


def evidence_maps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, methods: Sequence[str] = CAM_METHODS,
                  query_point=(0.5, 0.5), layers: Optional[dict[str, list[str]]] = None,
                  scale_by_score: bool = True) -> EvidenceMaps:
    """The module maps of `model` on `x` and the CAMs of `methods` for the classes `y` at every
    evidence layer (`evidence_layers` unless `layers` is given)."""
    unknown = [m for m in methods if m not in CAM_METHODS]
    if unknown or isinstance(methods, str):
        raise ValueError(f"evidence_maps: methods must be a list from {', '.join(CAM_METHODS)}, got {methods!r}")
    model.eval()
    layers = evidence_layers(model, x) if layers is None else layers
    result = EvidenceMaps(layers)
    size = x.shape[-2:]
    owners = {m: layer for layer, mods in layers.items() for m in mods}
    for (path, signal), native in module_maps(model, x, query_point).items():
        result.add(MapEntry(f"{path or 'model'}:{signal}", MODULE, owners.get(path, path), path, signal), native, size)
    target = torch.as_tensor(y, dtype=torch.long).view(-1).to(x.device)
    for layer in layers:
        module = model.get_submodule(layer)
        for method in methods:
            native = (grad_cam(model, module, x, target) if method == "grad_cam"
                      else ablation_cam(model, module, x, target, scale_by_score))
            result.add(MapEntry(cam_name(method, layer), method, layer), native, size)
    return result


# --------------------------------------------------------------------------------------------- numbers

def agreement(maps: EvidenceMaps, y: torch.Tensor, fraction: float = TOP_FRACTION) -> list[dict]:
    """For each module map and each CAM at its layer: the mean Spearman rho and top-`fraction` IoU
    over the images, overall and per class ({class index: value}); null where undefined."""
    labels = torch.as_tensor(y).view(-1).cpu().numpy()
    records = []
    for module_entry in maps.of(MODULE):
        for cam in [e for e in maps.entries if e.kind in CAM_METHODS and e.layer == module_entry.layer]:
            rho = rank_correlation(maps.maps[cam.name], maps.maps[module_entry.name])
            iou = top_overlap(maps.maps[cam.name], maps.maps[module_entry.name], fraction)
            classes = sorted(int(k) for k in np.unique(labels))
            records.append({
                "module": module_entry.module, "signal": module_entry.signal, "layer": cam.layer,
                "method": cam.kind, "spearman": nanmean(rho), "top_iou": nanmean(iou), "top_fraction": fraction,
                "per_class": {str(k): {"spearman": nanmean(rho[labels == k]), "top_iou": nanmean(iou[labels == k]),
                                       "images": int((labels == k).sum())} for k in classes}})
    return records


def faithfulness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: EvidenceMaps, steps: int = 16,
                 draws: int = 4, seed: int = 0) -> dict:
    """Deletion and insertion AUC (mean over the images, and per image) of every map and of the
    random baseline; see `attnlab.explain.metrics`."""
    target = torch.as_tensor(y, dtype=torch.long).view(-1)
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for entry in maps.entries:
        curves = deletion_insertion(model, x, maps.maps[entry.name], target, steps, generator=gen)
        rows.append({"map": entry.name, "kind": entry.kind, "layer": entry.layer,
                     "deletion_auc": float(curves.deletion_auc.mean()),
                     "insertion_auc": float(curves.insertion_auc.mean()),
                     "deletion_per_image": curves.deletion_auc.tolist(),
                     "insertion_per_image": curves.insertion_auc.tolist()})
    base = random_baseline(model, x, target, draws, steps, generator=gen)
    return {"images": int(len(x)), "steps": steps, "target": "label",
            "random": {"deletion_auc": float(base.deletion_auc.mean()), "insertion_auc": float(base.insertion_auc.mean()),
                       "draws": draws, "deletion_per_image": base.deletion_auc.tolist(),
                       "insertion_per_image": base.insertion_auc.tolist()},
            "maps": rows}


def explain_evidence(model: nn.Module, x: torch.Tensor, y: torch.Tensor, images: int = 32, sanity_images: int = 4,
                     threshold: float = THRESHOLD, seed: int = 0) -> tuple[dict, EvidenceMaps]:
    """The maps of the first `images` inputs, their agreement and faithfulness, and the cascading
    randomisation test on the first `sanity_images` of them (every map recomputed at each step):
    ({"evidence_layers", "agreement", "faithfulness", "sanity"}, the maps)."""
    xs, ys = x[:images], torch.as_tensor(y[:images]).long()
    maps = evidence_maps(model, xs, ys)

    def maps_of(m, a, b):
        return evidence_maps(m, a, b, layers=maps.layers).maps

    summary = {"evidence_layers": maps.layers, "agreement": agreement(maps, ys),
               "faithfulness": faithfulness(model, xs, ys, maps, seed=seed),
               "sanity": cascading_randomisation(model, xs[:sanity_images], ys[:sanity_images], maps_of, threshold, seed)}
    return summary, maps


__all__ = ["CAM_METHODS", "MODULE", "evidence_layers", "to_input", "grad_cam", "ablation_cam", "module_maps",
           "MapEntry", "EvidenceMaps", "cam_name", "evidence_maps", "agreement", "faithfulness", "explain_evidence"]
