"""Multi-scale features of every backbone, following timm's conventions: the stage description a
family declares, `FeatureInfo`, `forward_intermediates`, `prune_intermediate_layers`, gradient
checkpointing and the `features_only` network.

A family declares its stages once, in its constructor, through `Backbone._set_stages`: a list of
`Stage(modules, num_chs, reduction)` in forward order, where `modules` are the qualified names of
the submodules that the stage runs one after another (the output of the last one is the stage's
feature map), and the names of the layers that follow the last stage (`final`: a closing
norm-activation or 1x1 conv). `forward_features` is then the same loop for every family:

    x -> stage 0 -> stage 1 -> ... -> stage n-1 -> final layers

Stage 0 is the stem wherever the stem has its own resolution (timm's convention): for a ResNet
on ImageNet the feature maps have reductions 2, 4, 8, 16 and 32, and feature index i of a ResNet
is also attention stage i of the placement spec.

Every model then offers

* ``model.feature_info``: a `FeatureInfo` over all stages (``channels()``, ``reduction()``,
  ``module_name()``, ``get_dicts()``; indexing and ``len`` give one dict per stage);
* ``model.forward_intermediates(x, indices=None, norm=False, stop_early=False,
  output_fmt="NCHW", intermediates_only=False)`` -> ``(final_features, [maps])``;
* ``model.prune_intermediate_layers(indices, prune_norm=False, prune_head=True)``;
* ``model.set_grad_checkpointing(True)``: each block (a child of a stage's nn.Sequential, or a
  stage module that is no Sequential) runs under ``torch.utils.checkpoint`` (``use_reentrant=False``);
  layers without children (a pool, a lone convolution) join the block that follows them. The
  recomputation in the backward pass does not update BatchNorm running statistics again, so a
  training step changes them exactly as without checkpointing.

``create_model(name, features_only=True, out_indices=...)`` wraps a model in `FeatureNet`, whose
forward returns the list of selected feature maps (shallow to deep).

Reductions are the strides of the stages. Families with unpadded ("valid") convolutions
(Inception v3 and Xception at ImageNet size, the NASNet-A mobile stem, the MNIST CNN) give maps
somewhat smaller than input / reduction; every other family gives input / reduction, rounded.

Under torch.fx symbolic tracing (a `torch.fx.Proxy` input) the input check and checkpointing are
skipped, so that the traced graph holds the network's operations only.
"""
from __future__ import annotations

import contextlib
import functools
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Optional, Union

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..attention.base import is_traced

OUTPUT_FORMATS = ("NCHW",)


@dataclass(frozen=True)
class Stage:
    """One stage of a backbone: the submodules it runs in order (qualified names; the last one's
    output is the stage's feature map), its output channels and its reduction (stride)."""

    modules: tuple[str, ...]
    num_chs: int
    reduction: int


class FeatureInfo:
    """What each stage's feature map is: channels, reduction and the module that outputs it.

    timm's convention: indexing and ``len`` cover every stage (a dict with ``num_chs``,
    ``reduction``, ``module`` and ``index``), while ``channels()``, ``reduction()``,
    ``module_name()`` and ``get_dicts()`` cover the selected stages (`out_indices`, shallow to
    deep); their ``idx`` argument picks among the selected ones.
    """

    def __init__(self, stages: Sequence[dict], out_indices: Optional[Sequence[int]] = None):
        self.info = [dict(s) for s in stages]
        self.out_indices = tuple(range(len(self.info)) if out_indices is None else out_indices)

    def from_other(self, out_indices: Sequence[int]) -> "FeatureInfo":
        """The same stages with another selection."""
        return FeatureInfo(self.info, out_indices)

    def get(self, key: str, idx: Optional[Union[int, Sequence[int]]] = None):
        """The value of `key` for each selected stage (a list), or for selected stage `idx`."""
        if idx is None:
            return [self.info[i][key] for i in self.out_indices]
        if isinstance(idx, Sequence):
            return [self.info[self.out_indices[i]][key] for i in idx]
        return self.info[self.out_indices[idx]][key]

    def get_dicts(self, keys: Optional[Sequence[str]] = None, idx: Optional[Union[int, Sequence[int]]] = None):
        """The dicts of the selected stages (only `keys` when given), or of selected stage `idx`."""
        def pick(i: int) -> dict:
            return dict(self.info[i]) if keys is None else {k: self.info[i][k] for k in keys}

        if idx is None:
            return [pick(i) for i in self.out_indices]
        if isinstance(idx, Sequence):
            return [pick(self.out_indices[i]) for i in idx]
        return pick(self.out_indices[idx])

    def channels(self, idx=None):
        return self.get("num_chs", idx)

    def reduction(self, idx=None):
        return self.get("reduction", idx)

    def module_name(self, idx=None):
        return self.get("module", idx)

    def __getitem__(self, item):
        return self.info[item]

    def __len__(self) -> int:
        return len(self.info)

    def __iter__(self):
        return iter(self.info)

    def __repr__(self) -> str:
        return f"FeatureInfo(out_indices={self.out_indices}, stages={self.info})"


def resolve_indices(family: str, indices, num_stages: int, what: str = "indices") -> list[int]:
    """Stage indices, ascending: None = all; an int n = the last n; a sequence of indices, negative
    ones counted from the end. ValueError naming the bad value and the valid range otherwise."""
    accepted = (f"expected an int 1..{num_stages} (the last n stages) or stage indices in "
                f"[-{num_stages}, {num_stages - 1}], each once")
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, numbers.Integral) and not isinstance(indices, bool):
        if not 1 <= indices <= num_stages:
            raise ValueError(f"{family}: {what}={indices!r} invalid: {accepted}")
        return list(range(num_stages - int(indices), num_stages))
    if isinstance(indices, (str, bytes)) or not isinstance(indices, Sequence) or not indices:
        raise ValueError(f"{family}: {what}={indices!r} invalid: {accepted}")
    resolved = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, numbers.Integral) or not -num_stages <= i < num_stages:
            raise ValueError(f"{family}: {what}={tuple(indices)!r} holds {i!r}: {accepted}")
        resolved.append(int(i) % num_stages)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"{family}: {what}={tuple(indices)!r} names a stage twice: {accepted}")
    return sorted(resolved)


@contextlib.contextmanager
def frozen_norm_statistics(modules: Sequence[nn.Module]):
    """The running statistics of the BatchNorm layers below `modules` are what they were on entry
    when the context exits: the recomputation of a checkpointed segment leaves them alone."""
    buffers = [b for unit in modules for m in unit.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               for b in m.buffers()]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, value in zip(buffers, saved):
                b.copy_(value)


def _recompute_contexts(modules: Sequence[nn.Module]):
    return contextlib.nullcontext(), frozen_norm_statistics(modules)


def _is_block(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


class StagedModel:
    """The stage machinery of `Backbone` (mixed into it; see the module docstring).

    Hooks for families whose stages pass more than one tensor along (NASNet's cells read the two
    previous cell outputs): `_stage_state(x)` turns the input into the running state,
    `_call_unit(module, state)` runs one module on it and `_state_output(state)` reads the
    feature map out of it. By default the state is the feature map itself.
    """

    grad_checkpointing = False
    _stages: tuple[Stage, ...] = ()
    _final: tuple[str, ...] = ()

    def _set_stages(self, stages: Sequence[Stage], final: Sequence[str] = ()) -> None:
        """Declare the stages (forward order) and the layers after the last one; sets `feature_info`."""
        self._stages, self._final = tuple(stages), tuple(final)
        self.feature_info = FeatureInfo([dict(num_chs=s.num_chs, reduction=s.reduction, module=s.modules[-1],
                                              index=i) for i, s in enumerate(self._stages)])

    # ---------------------------------------------------------------- running the stages
    def _stage_state(self, x):
        return x

    def _call_unit(self, module: nn.Module, state):
        return module(state)

    def _state_output(self, state) -> torch.Tensor:
        return state

    def _units(self, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
        """The checkpointing units of a stage: the children of an nn.Sequential of blocks, every
        other module as it is."""
        units = []
        for name in names:
            module = self.get_submodule(name)
            if isinstance(module, nn.Sequential) and any(_is_block(c) for c in module.children()):
                units.extend((f"{name}.{key}", child) for key, child in module.named_children())
            else:
                units.append((name, module))
        return units

    def _run_units(self, modules: Sequence[nn.Module], *state):
        state = state[0] if len(state) == 1 else state
        for module in modules:
            state = self._call_unit(module, state)
        return state

    def _run_checkpointed(self, names: Sequence[str], state, taps: dict):
        segment: list[nn.Module] = []
        for name, module in self._units(names):
            segment.append(module)
            if not _is_block(module) and name not in taps:
                continue  # a pool or a lone layer runs inside the next block's segment
            state = self._checkpoint(segment, state)
            segment = []
            if name in taps:
                taps[name] = self._state_output(state)
        return self._checkpoint(segment, state) if segment else state

    def _checkpoint(self, modules: list[nn.Module], state):
        args = state if isinstance(state, tuple) else (state,)
        context = {} if torch.compiler.is_compiling() else {
            "context_fn": functools.partial(_recompute_contexts, modules)}
        return checkpoint(self._run_units, modules, *args, use_reentrant=False, **context)

    def _run_stage(self, index: int, state, taps: dict, checkpointed: bool):
        names = self._stages[index].modules
        if checkpointed:
            return self._run_checkpointed(names, state, taps)
        for name in names:
            state = self._call_unit(self.get_submodule(name), state)
            if name in taps:
                taps[name] = self._state_output(state)
        return state

    def _forward_stages(self, x: torch.Tensor, take: Sequence[int] = (), stop: Optional[int] = None,
                        taps: Optional[dict] = None):
        """Run stages 0..stop-1 (all when stop is None). Returns the last stage's output and the
        feature maps of the stages in `take`; `taps` ({module name: None}) is filled with the
        outputs of those modules on the way (GoogLeNet's and Inception v3's auxiliary heads)."""
        checkpointed = bool(self.grad_checkpointing) and torch.is_grad_enabled() and not is_traced(x)
        taps = {} if taps is None else taps
        state = self._stage_state(x)
        maps = []
        for index in range(len(self._stages) if stop is None else stop):
            state = self._run_stage(index, state, taps, checkpointed)
            if index in take:
                maps.append(self._state_output(state))
        return self._state_output(state), maps

    def _forward_final(self, x: torch.Tensor) -> torch.Tensor:
        for name in self._final:
            x = self.get_submodule(name)(x)
        return x

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self._forward_final(self._forward_stages(x)[0])

    # ---------------------------------------------------------------- timm's interface
    def forward_intermediates(self, x: torch.Tensor, indices=None, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """The feature maps of the stages in `indices` (None = all; an int n = the last n; a list
        of stage indices, negative ones from the end), shallow to deep. Returns
        ``(final_features, maps)``, where final_features equals ``forward_features(x)``, or only
        ``maps`` with ``intermediates_only=True``. `norm`: the last stage's map passes through the
        final layers (the closing norm) when it is selected. `stop_early`: run only up to the
        deepest selected stage; final_features is then that stage's map (the final layers follow
        the last stage only)."""
        if output_fmt not in OUTPUT_FORMATS:
            raise ValueError(f"{self.family}: output_fmt {output_fmt!r} is not supported; accepted: "
                             f"{', '.join(OUTPUT_FORMATS)}")
        self.check_input(x)
        take = resolve_indices(self.family, indices, len(self._stages))
        last = len(self._stages) - 1
        stop = take[-1] + 1 if stop_early or intermediates_only else None
        x, maps = self._forward_stages(x, take, stop)
        if norm and take[-1] == last:
            maps[-1] = self._forward_final(maps[-1])
        if intermediates_only:
            return maps
        return (self._forward_final(x) if stop is None or stop == last + 1 else x), maps

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False, prune_head: bool = True) -> list[int]:
        """Drop what follows the deepest stage in `indices` (its modules become nn.Identity), the
        final layers with `prune_norm`, and the classifier with `prune_head` (a pooling head
        without parameters remains). Returns the resolved indices."""
        take = resolve_indices(self.family, indices, len(self._stages))
        for stage in self._stages[take[-1] + 1:]:
            for name in stage.modules:
                self.set_submodule(name, nn.Identity())
        if prune_norm or take[-1] < len(self._stages) - 1:
            for name in self._final:
                self.set_submodule(name, nn.Identity())
        if prune_head:
            self._prune_head()
        return take

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Run each block under torch.utils.checkpoint (non-reentrant) while gradients are recorded."""
        if not isinstance(enable, bool):
            raise TypeError(f"{self.family}: set_grad_checkpointing expects True or False, got {enable!r}")
        self.grad_checkpointing = enable


class FeatureNet(nn.Module):
    """A backbone as a feature extractor (``create_model(..., features_only=True)``): forward(x)
    returns the feature maps of the stages in `out_indices` (shallow to deep); `feature_info`
    describes them. The model's classifier, final layers and the stages after the deepest selected
    one are dropped (`prune_intermediate_layers`); the model is kept as `self.model`."""

    def __init__(self, model: nn.Module, out_indices=None):
        super().__init__()
        info = getattr(model, "feature_info", None)
        if not isinstance(info, FeatureInfo) or not len(info):
            raise ValueError(f"features_only: {type(model).__name__} declares no feature stages "
                             f"(no feature_info); it cannot serve as a feature backbone")
        take = resolve_indices(getattr(model, "model_name", model.family), out_indices, len(info), "out_indices")
        self.out_indices = tuple(model.prune_intermediate_layers(take, prune_norm=True, prune_head=True))
        self.model = model
        self.feature_info = info.from_other(self.out_indices)

    @property
    def grad_checkpointing(self) -> bool:
        return self.model.grad_checkpointing

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    @property
    def pretrained_cfg(self) -> dict:
        return self.model.pretrained_cfg

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)
