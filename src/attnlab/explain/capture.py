"""Record what the attention modules of a model computed, and override their gates.

Not a paper module: the explanations and the reliance study of the report are built on it.

    with attnlab.capture(model, query_points=[(0.5, 0.5), (0.25, 0.75)]) as rec:
        model(x1); model(x2)
    rec.paths()                         # module paths that recorded something, in forward order
    rec["layer1.0.attention"]["gate"]   # (N1 + N2, C, 1, 1), detached, on the CPU
    rec.modules["layer1.0.attention"]   # 'SqueezeExcite'

    with override_gates(model, {"layer1.0.attention": {"gate": 1.0}}):
        model(x)                        # that SE block removed (gate = 1)

How it works: every `AttentionModule` passes each explainable tensor through
`self.observe(name, value)` (attention/base.py). `capture` sets the module's `recorder` attribute
for the duration of the `with` block; the recorder stores a detached CPU copy of the value under
the module's path (its name in `model.named_modules()`, '' for the model itself) and carries the
`query_points` that the non-local / self-attention modules read to compute affinity rows. Outside
the block `recorder` is None again (also after an exception), so nothing is recorded and the only
cost is one attribute test per observed tensor. `override_gates` sets the modules'
`gate_override` the same way: `observe` then returns the given constant (broadcast to the
observed shape) instead of the computed value.

Values are stored per forward call and concatenated along the batch dimension when read; calls
whose non-batch shapes differ (another input size) cannot be concatenated: `rec.chunks(path, name)`
returns them call by call. The recorded value is the one the module computed, before any override.

A capture belongs to the thread that entered it: several threads may capture the same model at
once, and each recording holds only the forward passes its own thread ran. While any capture is
active the module's `recorder` is one router shared by all threads, which hands each observed
tensor to the innermost capture of the calling thread (one dictionary lookup); a thread with no
capture of its own records nothing (forward passes that torch runs in helper threads, such as
`nn.DataParallel` replicas, are not recorded either). `override_gates` is not per thread: it
changes what the model computes for every caller.
"""
from __future__ import annotations

import fnmatch
import numbers
import threading
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Optional

import torch
from torch import nn

from ..attention.base import AttentionModule, Signal


def _attention_modules(model: nn.Module) -> dict[str, AttentionModule]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"expected a torch.nn.Module, got {type(model).__name__}")
    return {path: m for path, m in model.named_modules() if isinstance(m, AttentionModule)}


def _check_query_points(query_points) -> Optional[list[tuple[float, float]]]:
    if query_points is None:
        return None
    if isinstance(query_points, (str, bytes)) or not isinstance(query_points, Iterable):
        raise ValueError(f"capture: query_points must be a list of (fy, fx) fractions in [0, 1], "
                         f"got {query_points!r}")
    points = []
    for point in query_points:
        ok = (isinstance(point, Sequence) and not isinstance(point, str) and len(point) == 2
              and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and 0 <= v <= 1 for v in point))
        if not ok:
            raise ValueError(f"capture: each query point must be a (fy, fx) pair of fractions in [0, 1], "
                             f"got {point!r}")
        points.append((float(point[0]), float(point[1])))
    if not points:
        raise ValueError("capture: query_points is empty; give at least one (fy, fx) pair or None (centre)")
    return points


class Recording:
    """What a `capture` recorded: ``rec[path][name]`` -> tensor concatenated over forward calls.

    Attributes:
        modules: {path: module type name} of every module the capture watched.
        query_points: the (fy, fx) query points handed to the modules (None = their default, the
            centre).
        signals: {path: {name: Signal}}, what each watched module declares it observes (the
            kind of each tensor and its neutral value).
    """

    def __init__(self, modules: Mapping[str, str], query_points=None,
                 signals: Optional[Mapping[str, Mapping[str, Signal]]] = None):
        self.modules = dict(modules)
        self.query_points = query_points
        self.signals = {path: dict(declared) for path, declared in (signals or {}).items()}
        self._chunks: dict[str, dict[str, list[torch.Tensor]]] = {}

    def _add(self, path: str, name: str, value: torch.Tensor) -> None:
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"capture: module {path!r} observed {name!r} as {type(value).__name__}, "
                            f"expected a tensor")
        stored = value.detach().to(device="cpu", copy=True)
        self._chunks.setdefault(path, {}).setdefault(name, []).append(stored)

    def paths(self) -> list[str]:
        """Paths of the modules that recorded at least one value, in the order they first did."""
        return list(self._chunks)

    def names(self, path: str) -> list[str]:
        """The names recorded under `path`."""
        return list(self._module_chunks(path))

    def signal(self, path: str, name: str) -> Optional[Signal]:
        """What the module at `path` declares about `name` (kind, neutral value); None if nothing."""
        return self.signals.get(path, {}).get(name)

    def names_of(self, path: str, *kinds: str) -> list[str]:
        """The names recorded under `path` that its module declares of one of `kinds`."""
        return [name for name in self.names(path) if getattr(self.signal(path, name), "kind", None) in kinds]

    def chunks(self, path: str, name: str) -> list[torch.Tensor]:
        """The values of `name` at `path`, one tensor per forward call (not concatenated)."""
        chunks = self._module_chunks(path)
        if name not in chunks:
            raise KeyError(f"capture: module {path!r} recorded no {name!r}; recorded: {', '.join(chunks)}")
        return list(chunks[name])

    def get(self, path: str, name: str) -> torch.Tensor:
        """The values of `name` at `path`, concatenated along the batch dimension."""
        chunks = self.chunks(path, name)
        if len(chunks) == 1:
            return chunks[0]
        shapes = {tuple(c.shape[1:]) for c in chunks}
        if len(shapes) > 1:
            raise ValueError(f"capture: {path!r} {name!r} was recorded with different shapes over the forward "
                             f"calls ({', '.join(str(tuple(c.shape)) for c in chunks)}); they cannot be "
                             f"concatenated along the batch; use rec.chunks({path!r}, {name!r})")
        return torch.cat(chunks)

    def batch_means(self, names: Optional[Iterable[str]] = None) -> dict[str, dict[str, torch.Tensor]]:
        """{path: {name: mean over the batch, shape (1, ...)}}, ready for `override_gates` (the
        reliance study's "gate frozen at its data mean"). `names` restricts the names."""
        wanted = None if names is None else set([names] if isinstance(names, str) else names)
        out: dict[str, dict[str, torch.Tensor]] = {}
        for path, chunks in self._chunks.items():
            means = {name: self.get(path, name).float().mean(0, keepdim=True)
                     for name in chunks if wanted is None or name in wanted}
            if means:
                out[path] = means
        return out

    def _module_chunks(self, path: str) -> dict[str, list[torch.Tensor]]:
        if path not in self._chunks:
            known = ", ".join(repr(p) for p in self._chunks) or "none"
            raise KeyError(f"capture: nothing recorded for module path {path!r}; recorded paths: {known}")
        return self._chunks[path]

    def __getitem__(self, path: str) -> "ModuleRecord":
        self._module_chunks(path)  # KeyError naming the recorded paths
        return ModuleRecord(self, path)

    def __contains__(self, path) -> bool:
        return path in self._chunks

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths())

    def __len__(self) -> int:
        return len(self._chunks)

    def keys(self) -> list[str]:
        return self.paths()

    def items(self) -> Iterator[tuple[str, "ModuleRecord"]]:
        for path in self.paths():
            yield path, self[path]

    def __repr__(self) -> str:
        return f"Recording({len(self)} of {len(self.modules)} watched modules recorded)"


class ModuleRecord(Mapping):
    """``rec[path]``: a read-only mapping name -> tensor, each concatenated when it is read (so one
    name recorded at several map sizes does not prevent reading the others)."""

    def __init__(self, recording: Recording, path: str):
        self._recording, self.path = recording, path

    def __getitem__(self, name: str) -> torch.Tensor:
        return self._recording.get(self.path, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._recording.names(self.path))

    def __len__(self) -> int:
        return len(self._recording.names(self.path))

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n!r}: {[tuple(c.shape) for c in self._recording.chunks(self.path, n)]}" for n in self)
        return f"ModuleRecord({self.path!r}, {{{shapes}}})"


class _Recorder:
    """The callable set as `module.recorder`: stores what the module observes under its path."""

    __slots__ = ("recording", "path")

    def __init__(self, recording: Recording, path: str):
        self.recording, self.path = recording, path

    @property
    def query_points(self):
        return self.recording.query_points

    def __call__(self, module: AttentionModule, name: str, value: torch.Tensor) -> None:
        self.recording._add(self.path, name, value)


class _ThreadRouter:
    """The `module.recorder` while any capture watches the module: routes each observed tensor to
    the innermost capture entered by the calling thread; other threads call the recorder that
    was set before any capture (`outside`, usually None) instead."""

    __slots__ = ("stacks", "outside", "_current")

    def __init__(self, outside):
        self.stacks: dict[int, list[_Recorder]] = {}     # thread ident -> its captures, innermost last
        self.outside = outside
        # Not traced by torch.compile: which capture records depends on the calling thread, at run
        # time. Wrapped here, when a capture first watches a module, not at import: the decorator
        # imports torch's compiler, which would add seconds to every `import attnlab`.
        self._current = torch.compiler.disable(self._innermost, reason="which capture records depends on the "
                                               "calling thread, at run time")

    def _innermost(self):
        stack = self.stacks.get(threading.get_ident())
        return stack[-1] if stack else self.outside

    @property
    def query_points(self):
        return getattr(self._current(), "query_points", None)

    def __call__(self, module: AttentionModule, name: str, value: torch.Tensor) -> None:
        recorder = self._current()
        if recorder is not None:
            recorder(module, name, value)


_ROUTING = threading.Lock()   # attaching / detaching routers and stacks; recording itself takes no lock


def _attach(watched: Mapping[str, AttentionModule], recorders: Mapping[str, _Recorder], thread: int) -> None:
    with _ROUTING:
        for path, module in watched.items():
            router = module.recorder
            if not isinstance(router, _ThreadRouter):
                router = module.recorder = _ThreadRouter(router)
            router.stacks.setdefault(thread, []).append(recorders[path])


def _detach(watched: Mapping[str, AttentionModule], recorders: Mapping[str, _Recorder], thread: int) -> None:
    with _ROUTING:
        for path, module in watched.items():
            router = module.recorder
            if not isinstance(router, _ThreadRouter):
                continue                                  # replaced inside the block by its caller
            stack = router.stacks.get(thread, [])
            for i in range(len(stack) - 1, -1, -1):
                if stack[i] is recorders[path]:
                    del stack[i]
                    break
            if not stack:
                router.stacks.pop(thread, None)
            if not router.stacks:
                module.recorder = router.outside


def _select(found: dict[str, AttentionModule], modules) -> dict[str, AttentionModule]:
    if modules is None:
        return found
    patterns = [modules] if isinstance(modules, str) else list(modules)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise ValueError(f"capture: modules must be a path pattern or a list of them (fnmatch), got {modules!r}")
    chosen = {}
    for pattern in patterns:
        hits = {p: m for p, m in found.items() if fnmatch.fnmatchcase(p, pattern)}
        if not hits:
            known = ", ".join(repr(p) for p in list(found)[:20]) or "none"
            raise ValueError(f"capture: pattern {pattern!r} matches no attention module; "
                             f"attention module paths: {known}{' ...' if len(found) > 20 else ''}")
        chosen.update(hits)
    return {p: m for p, m in found.items() if p in chosen}  # model order


@contextmanager
def capture(model: nn.Module, query_points=None, modules=None) -> Iterator[Recording]:
    """Record, inside the `with` block, what every attention module of `model` observes.

    Args:
        model: any nn.Module; every `AttentionModule` in it (itself included) is watched.
        query_points: (fy, fx) fractions in [0, 1] of the map's height and width, the query
            positions whose affinity rows the non-local / self-attention modules record (default:
            the modules' default, the centre).
        modules: an fnmatch pattern or list of patterns over module paths (e.g. "layer4.*");
            only the matching modules are watched. A pattern that matches nothing is an error.

    Yields a `Recording` of the forward passes run by this thread inside the block (other
    threads may capture the same model at the same time, each into its own recording). On exit
    the previous recorders (None outside any capture) are restored.
    """
    points = _check_query_points(query_points)
    watched = _select(_attention_modules(model), modules)
    recording = Recording({p: type(m).__name__ for p, m in watched.items()}, points,
                          {p: m.signals for p, m in watched.items()})
    recorders = {path: _Recorder(recording, path) for path in watched}
    thread = threading.get_ident()
    _attach(watched, recorders, thread)
    try:
        yield recording
    finally:
        _detach(watched, recorders, thread)


def forward_with_hooks(model: nn.Module, x: torch.Tensor, hooks: Mapping[str, Callable]) -> None:
    """Run `model` on `x` without gradients with `hooks[path]` as a forward hook of the module at
    each path (called as hook(module, inputs, output); its return value is ignored); the hooks are
    removed afterwards, also after an exception."""
    def quiet(hook):
        return lambda module, inputs, output: hook(module, inputs, output) and None

    handles = [model.get_submodule(path).register_forward_hook(quiet(hook)) for path, hook in hooks.items()]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def override_gates(model: nn.Module, overrides: Mapping[str, Mapping[str, object]]) -> Iterator[nn.Module]:
    """Inside the `with` block, replace observed tensors by constants: {path: {name: value}}.

    `value` is a number or a tensor broadcastable to the observed shape, e.g. 1.0 for an SE
    'gate' (the block removed), 0.0 for a GC 'transform' or a non-local 'response', or the data
    mean from `Recording.batch_means()` (the attention frozen). Unknown paths, modules that are
    not attention modules and names a module does not observe raise a ValueError. The previous
    overrides are restored on exit (also after an exception).
    """
    found = _attention_modules(model)
    if not isinstance(overrides, Mapping):
        raise TypeError(f"override_gates: overrides must be a dict {{path: {{name: value}}}}, "
                        f"got {type(overrides).__name__}")
    plan = {}
    for path, values in overrides.items():
        if path not in found:
            known = ", ".join(repr(p) for p in list(found)[:20]) or "none"
            raise ValueError(f"override_gates: {path!r} is not an attention module of the model; "
                             f"attention module paths: {known}{' ...' if len(found) > 20 else ''}")
        module = found[path]
        if not isinstance(values, Mapping) or not values:
            raise ValueError(f"override_gates: {path!r} needs a non-empty dict {{name: value}}, got {values!r}")
        allowed = tuple(getattr(module, "observables", ()) or ())
        for name, value in values.items():
            if allowed and name not in allowed:
                raise ValueError(f"override_gates: {type(module).__name__} at {path!r} observes "
                                 f"{', '.join(map(repr, allowed))}; got {name!r}")
            if isinstance(value, bool) or not isinstance(value, (numbers.Real, torch.Tensor)):
                raise TypeError(f"override_gates: value for {path!r} {name!r} must be a number or a tensor, "
                                f"got {type(value).__name__}")
        plan[path] = dict(values)
    previous = {path: found[path].gate_override for path in plan}
    try:
        for path, values in plan.items():
            found[path].gate_override = {**(previous[path] or {}), **values}
        yield model
    finally:
        for path in plan:
            found[path].gate_override = previous[path]
