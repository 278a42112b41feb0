"""The cascading model-randomisation test of a saliency map (Adebayo et al. 2018, "Sanity checks
for saliency maps", section 3.1).

    result = cascading_randomisation(model, x, y, maps_of)
    result["maps"][0]["correlations"]     # rank correlation with the trained map after each step
    result["maps"][0]["flagged"]          # True: the map does not explain the trained network

`maps_of(model, x, y)` returns {name: (N, 1, H, W)} for a model; the test calls it on the trained
model and then on a copy whose weights are re-initialised step by step from the top of the
network down (cascading: each step keeps the earlier steps' randomisation). A step is one child of
the model that holds parameters, in the reverse of the order the forward pass finishes them (the
classifier first); a child that is itself a backbone (a wrapper's model) is opened into its
children. Re-initialising calls each submodule's own `reset_parameters` (the initialisation
PyTorch gives a fresh layer; normalisation layers also forget their running statistics), drawn
from `seed`.

After each step, every map is compared with the trained model's map by Spearman's rank
correlation per image (mean over the images; a map constant over an image has no ranking and is
left out). A map whose correlation is still at least `threshold` once every step is done is
flagged: it looks the same whatever the weights, so it shows the input or the architecture rather
than what the trained network learned. The paper judges by eye and by rank correlation without
a fixed cut; 0.5 is this library's default and a switch.
"""
from __future__ import annotations

import copy
from typing import Callable, Mapping

import torch
from torch import nn

from ..checks import check_number
from .capture import forward_with_hooks
from .metrics import nanmean, rank_correlation

THRESHOLD = 0.5


def _finish_order(model: nn.Module, x: torch.Tensor, paths: list[str]) -> list[str]:
    finished: list[str] = []
    forward_with_hooks(model, x[:1], {p: (lambda *_a, p=p: finished.append(p)) for p in paths})
    return list(dict.fromkeys(finished))


def randomisation_steps(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The paths randomised one after the other, top first (see the module docstring)."""
    def children(module: nn.Module, prefix: str) -> list[str]:
        out = []
        for name, child in module.named_children():
            path = f"{prefix}{name}"
            if hasattr(child, "forward_features"):
                out += children(child, path + ".")
            elif any(True for _ in child.parameters()):
                out.append(path)
        return out

    paths = children(model, "")
    ran = _finish_order(model, x, paths)
    return list(reversed(ran)) + [p for p in paths if p not in ran]


def _reinitialise(module: nn.Module) -> None:
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()


def cascading_randomisation(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                            maps_of: Callable[[nn.Module, torch.Tensor, torch.Tensor], Mapping[str, torch.Tensor]],
                            threshold: float = THRESHOLD, seed: int = 0) -> dict:
    """Rank correlation of each map of `maps_of` with the trained model's map after each step of
    the cascade, and the maps flagged (see the module docstring). `model` is left as it was."""
    threshold = check_number("cascading_randomisation", "threshold", threshold, -1.0, 1.0)
    model.eval()
    trained = {name: m.detach().cpu() for name, m in maps_of(model, x, y).items()}
    steps = randomisation_steps(model, x)
    randomised = copy.deepcopy(model).eval()
    correlations: dict[str, list] = {name: [] for name in trained}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for path in steps:
            _reinitialise(randomised.get_submodule(path))
            now = maps_of(randomised, x, y)
            for name, reference in trained.items():
                correlations[name].append(nanmean(rank_correlation(now[name].detach().cpu(), reference)))
    records = []
    for name, values in correlations.items():
        final = values[-1] if values else None
        records.append({"map": name, "correlations": values, "final": final,
                        "flagged": final is not None and final >= threshold})
    return {"threshold": threshold, "images": int(len(x)), "steps": steps, "seed": seed, "maps": records}


__all__ = ["THRESHOLD", "randomisation_steps", "cascading_randomisation"]
