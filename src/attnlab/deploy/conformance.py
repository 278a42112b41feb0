"""The conformance matrix: every registered model against every check a timm-grade backbone passes
(in the spirit of timm's own per-model tests). `tools/conformance.py` writes it as
docs/conformance.md; tests/models/test_conformance.py runs it in CI.

    row = check_model("se_resnet50")       # row.family, row.cells: {"forward": Outcome("pass"), ...}

Each check builds nothing itself: `check_model` builds the model once, with a small input
(`model_input`: batch 2 at the smallest side the model accepts where every stage's map is at least
2 x 2) and runs the checks in the order of `CHECKS`, the one that turns the model into a feature
extractor last. The torch.export and ONNX checks share one torch.export program (`Case.exported`):
the ONNX exporter translates it rather than exporting the model a second time. A check passes or
raises:

* `Unsupported` (or `NotImplementedError` from the model's own API): the family declares that it
  cannot honour the column; the cell reads ``n/a`` and the reason is listed under the table;
* `MissingAPI`: the model lacks the method the column needs (``missing``);
* anything else: ``FAIL`` with the first line of the error.

Per-model columns (the test suite runs them on every model): forward finite, backward reaches
every parameter, features_only shapes equal feature_info, forward_intermediates equals
forward_features, FX trace equals eager, gradient checkpointing equals plain, torch.export round
trip equals eager. Costly ones (one model per family in the test suite, all models in the script):
ONNX in onnxruntime, torch.compile tracing in training without a graph break, bf16 autocast
against fp32. The torch.export round trip is by far the dearest per-model column: exporting,
saving and loading cost some 25 ms of CPU per node of the model's FX graph (seconds for a
20-layer network, two minutes for Attention-452), so the test suite leaves the models with the
largest graphs, `SCRIPT_ONLY_EXPORTS`, to the script, and round-trips one small configuration per
family instead.
"""
from __future__ import annotations

import dataclasses
import io
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

from ..models import create_model
from .export import compare_outputs, export, export_program

NUM_CLASSES = 3
MIN_SIDE = 8          # the smallest side used, even where a model accepts less
BF16_RELATIVE = 0.05  # |bf16 - fp32| / |fp32| (L2 over the logits) allowed under bf16 autocast


class Unsupported(Exception):
    """A family declares that it cannot honour a check (the reason is the message)."""


class MissingAPI(Exception):
    """The model lacks the method a check needs."""


@dataclass(frozen=True)
class Outcome:
    """One cell: 'pass', 'FAIL', 'n/a' (declared unsupported), 'missing' (no API) or '—' (not run),
    and the CPU seconds the check took (0 for a cell not run here)."""

    status: str
    detail: str = ""
    seconds: float = 0.0


PASS, FAIL, NOT_APPLICABLE, MISSING, NOT_RUN = "pass", "FAIL", "n/a", "missing", "—"


@dataclass
class Case:
    """A model under check: its name, the model itself, the input the checks use and, once a check
    has made it, the model's eval-mode torch.export program (shared by the export checks)."""

    name: str
    model: nn.Module
    x: torch.Tensor
    program: Optional[torch.export.ExportedProgram] = None

    def exported(self) -> torch.export.ExportedProgram:
        """`export_program` of the model in eval mode on the case's input, made on first use."""
        if self.program is None:
            self.program = export_program(self.model.eval(), self.x)
        return self.program


@dataclass(frozen=True)
class Check:
    key: str
    title: str
    costly: bool
    run: Callable[[Case], None]


def _method(model: nn.Module, name: str):
    method = getattr(model, name, None)
    if not callable(method):
        raise MissingAPI(f"{type(model).__name__} has no {name}()")
    return method


def _close(got: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    if got.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(got.shape)} vs {tuple(expected.shape)}")
    worst = float((got.float() - expected.float()).abs().max()) if got.numel() else 0.0
    bound = atol + rtol * float(expected.float().abs().max() if expected.numel() else 0.0)
    if not worst <= bound:
        raise AssertionError(f"{what}: max abs diff {worst:.3g} > {bound:.3g}")


# ---------------------------------------------------------------------------- the cheap checks
def check_forward(case: Case) -> None:
    """Train-mode forward: logits of shape (N, num_classes), all finite."""
    case.model.train()
    out = case.model(case.x)
    if out.shape != (case.x.shape[0], NUM_CLASSES):
        raise AssertionError(f"logits {tuple(out.shape)}, expected {(case.x.shape[0], NUM_CLASSES)}")
    if not torch.isfinite(out).all():
        raise AssertionError("non-finite logits")


def check_backward(case: Case) -> None:
    """Every parameter that requires a gradient gets a finite one."""
    case.model.train()
    case.model.zero_grad(set_to_none=True)
    out = case.model(case.x)
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(2))).sum().backward()
    params = [(n, p) for n, p in case.model.named_parameters() if p.requires_grad]
    missing = [n for n, p in params if p.grad is None]
    if missing:
        raise AssertionError(f"no gradient reaches {len(missing)} parameter(s), e.g. {missing[:3]}")
    bad = [n for n, p in params if not torch.isfinite(p.grad).all()]
    if bad:
        raise AssertionError(f"non-finite gradient in {bad[:3]}")
    case.model.zero_grad(set_to_none=True)


def check_intermediates(case: Case) -> None:
    """forward_intermediates(x) gives forward_features(x) and one map per feature_info stage."""
    model = case.model.eval()
    intermediates = _method(model, "forward_intermediates")
    info = getattr(model, "feature_info", None)
    if info is None:
        raise MissingAPI(f"{type(model).__name__} has no feature_info")
    with torch.no_grad():
        final, maps = intermediates(case.x)
        _close(final, model.forward_features(case.x), "final features vs forward_features")
        only = intermediates(case.x, intermediates_only=True)
    if len(maps) != len(info) or len(only) != len(info):
        raise AssertionError(f"{len(maps)} maps for {len(info)} feature_info stages")
    channels = [m.shape[1] for m in maps]
    if channels != [s["num_chs"] for s in info]:
        raise AssertionError(f"map channels {channels} vs feature_info {[s['num_chs'] for s in info]}")
    for i, (a, b) in enumerate(zip(maps, only)):
        _close(b, a, f"intermediates_only map {i}")


def check_fx(case: Case) -> None:
    """torch.fx.symbolic_trace gives a graph that computes what the model computes (eval mode)."""
    model = case.model.eval()
    graph = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        _close(graph(case.x), model(case.x), "traced vs eager logits")


def check_grad_checkpointing(case: Case) -> None:
    """set_grad_checkpointing(True) gives the output and gradients of plain training."""
    model = case.model.train()
    enable = _method(model, "set_grad_checkpointing")
    # a training step changes the buffers (BN running statistics), not the parameters
    start = {name: buffer.clone() for name, buffer in model.named_buffers()}

    def restore():
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                buffer.copy_(start[name])
        model.zero_grad(set_to_none=True)

    def step():
        restore()
        torch.manual_seed(1)                       # the same dropout masks both times
        out = model(case.x)
        out.sum().backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}   # kept past zero_grad
        return out.detach(), grads, {n: b.clone() for n, b in model.named_buffers()}

    plain = step()
    enable(True)
    try:
        checkpointed = step()
    finally:
        enable(False)
        restore()
    _close(checkpointed[0], plain[0], "logits")
    if checkpointed[1].keys() != plain[1].keys():
        raise AssertionError("checkpointing changes which parameters get a gradient")
    for name, grad in plain[1].items():
        _close(checkpointed[1][name], grad, f"gradient of {name}", rtol=1e-3, atol=1e-5)
    for name, value in plain[2].items():           # BN running statistics updated once, as without
        if value.is_floating_point():
            _close(checkpointed[2][name], value, f"buffer {name}")


def check_features_only(case: Case) -> None:
    """The features_only network's maps have the channels feature_info gives, one per stage, with
    spatial sizes no larger than input / reduction (rounded up) and shrinking as reductions grow.
    The model is turned into the feature network: run this check last."""
    from ..models.features import FeatureNet   # create_model(features_only=True)'s wrapper

    if getattr(case.model, "feature_info", None) is None:
        raise MissingAPI(f"{type(case.model).__name__} has no feature_info")
    net = FeatureNet(case.model).eval()
    with torch.no_grad():
        maps = net(case.x)
    channels, reductions = net.feature_info.channels(), net.feature_info.reduction()
    if [m.shape[1] for m in maps] != list(channels):
        raise AssertionError(f"map channels {[m.shape[1] for m in maps]} vs feature_info {channels}")
    side = case.x.shape[-1]
    for m, r in zip(maps, reductions):
        if m.shape[0] != case.x.shape[0] or m.shape[-1] > -(-side // r) or m.shape[-1] < 1:
            raise AssertionError(f"map {tuple(m.shape)} at reduction {r} from a {side}-px input")
    if list(reductions) != sorted(reductions):
        raise AssertionError(f"reductions {reductions} not non-decreasing")


# ---------------------------------------------------------------------------- the costly checks
def check_torch_export(case: Case) -> None:
    """torch.export (dynamic batch), saved and loaded again, computes what the model computes."""
    model = case.model.eval()
    buffer = io.BytesIO()
    torch.export.save(case.exported(), buffer)
    buffer.seek(0)
    module = torch.export.load(buffer).module()
    worst, tolerance = compare_outputs(model, module, [case.x, case.x[:1]], 1e-5, 1e-4)
    if not worst <= tolerance:
        raise AssertionError(f"reloaded program differs by {worst:.3g} (tolerance {tolerance:.3g})")


def check_onnx(case: Case) -> None:
    """attnlab.export to ONNX with the dynamo-based exporter (no fallback), run in onnxruntime. The
    exporter translates the torch.export program of the previous check rather than tracing again."""
    with tempfile.TemporaryDirectory() as folder:
        export(case.model, case.x, Path(folder) / "model.onnx", "onnx", onnx_exporter="dynamo",
               program=case.exported())


def check_compile(case: Case) -> None:
    """torch.compile traces the training forward as one graph (torch._dynamo.explain: no break)."""
    import torch._dynamo as dynamo

    model = case.model.train()
    dynamo.reset()
    try:
        explanation = dynamo.explain(model)(case.x)
    finally:
        dynamo.reset()
    if explanation.graph_break_count:
        reasons = "; ".join(str(b.reason).splitlines()[0] for b in explanation.break_reasons[:2])
        raise AssertionError(f"{explanation.graph_break_count} graph break(s): {reasons}")


def check_bf16(case: Case) -> None:
    """bf16 autocast (eval mode, on the input's device) stays within BF16_RELATIVE of fp32."""
    model = case.model.eval()
    with torch.no_grad():
        reference = model(case.x).float()
        with torch.autocast(case.x.device.type, dtype=torch.bfloat16):
            low = model(case.x).float()
    relative = float((low - reference).norm() / reference.norm().clamp_min(1e-12))
    if not relative <= BF16_RELATIVE:
        raise AssertionError(f"bf16 logits differ from fp32 by {relative:.3g} (relative L2) > {BF16_RELATIVE}")


CHECKS = (
    Check("forward", "forward finite", False, check_forward),
    Check("backward", "backward reaches every parameter", False, check_backward),
    Check("intermediates", "forward_intermediates = forward_features", False, check_intermediates),
    Check("fx", "FX trace = eager", False, check_fx),
    Check("grad_checkpointing", "grad checkpointing = plain", False, check_grad_checkpointing),
    Check("torch_export", "torch.export round trip", False, check_torch_export),
    Check("onnx", "ONNX in onnxruntime", True, check_onnx),
    Check("compile", "torch.compile, training, 0 breaks", True, check_compile),
    Check("bf16", "bf16 autocast ≈ fp32", True, check_bf16),
    Check("features_only", "features_only = feature_info", False, check_features_only),   # last: it prunes
)
CHECK_KEYS = tuple(c.key for c in CHECKS)
CHEAP = tuple(c.key for c in CHECKS if not c.costly)
COSTLY = tuple(c.key for c in CHECKS if c.costly)

# The models whose torch.export round trip only the script runs, as the test suite's 10 minutes
# cannot hold them: those whose torch.fx graph has more than SCRIPT_ONLY_NODES nodes (the round trip
# costs CPU time per node), and the ImageNet VGGs, whose 130 M weights it writes and reads. The suite
# round-trips the other registered models and, for every family, one small configuration
# (tests/models/test_conformance.py).
SCRIPT_ONLY_NODES = 150
SCRIPT_ONLY_EXPORTS = frozenset({
    "attention128_cifar", "attention164_cifar", "attention236_cifar", "attention452_cifar", "attention56",
    "attention56_cifar", "attention92", "attention92_cifar", "cbam_resnet18", "cbam_resnet50",
    "densenet121", "densenet121_small", "densenet169", "densenet169_small", "densenet201",
    "densenet201_small", "densenet_bc100_k12", "eca_resnet101", "eca_resnet18", "eca_resnet50",
    "gc_resnet50", "googlenet", "googlenet_small", "inception_v3", "inception_v3_small", "nasnet_a_cifar",
    "nasnet_a_mobile", "nl_resnet20", "nl_resnet50", "preact_resnet1001", "preact_resnet164",
    "preact_resnet50", "resnet101", "resnet110", "resnet152", "resnet34", "resnet44", "resnet50",
    "resnet50_cifar", "resnet56", "resnext50_32x4d", "se_preact_resnet164", "se_resnet101", "se_resnet110",
    "se_resnet152", "se_resnet18", "se_resnet20", "se_resnet34", "se_resnet50", "se_resnet56",
    "se_resnext50_32x4d", "se_wrn16_8", "shufflenet_v1_g1", "shufflenet_v1_g2", "shufflenet_v1_g3",
    "shufflenet_v1_g3_small", "shufflenet_v1_g4", "shufflenet_v1_g8", "shufflenet_v2_x0_5",
    "shufflenet_v2_x0_5_small", "shufflenet_v2_x1_0", "shufflenet_v2_x1_0_small", "shufflenet_v2_x1_5",
    "shufflenet_v2_x2_0", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "wide_resnet50_2", "xception",
    "xception_small",
})


def model_input(model: nn.Module, batch: int = 2) -> torch.Tensor:
    """A seeded random input at the smallest side the model accepts, at least MIN_SIDE and at least
    twice its largest reduction: every stage's map is then 2 x 2 or more, so that batch norm in
    training mode normalises over more than the batch's two values (with 1 x 1 maps it turns two
    values into +-1 and its gradient explodes through a deep network)."""
    chans = getattr(model, "in_chans", 3)
    info = getattr(model, "feature_info", None)
    deepest = max(info.reduction()) if info is not None and len(info) else 1
    side = max(int(getattr(model, "min_size", 1)), MIN_SIDE, 2 * deepest)
    return torch.randn(batch, chans, side, side, generator=torch.Generator().manual_seed(0))


def _outcome(err: BaseException) -> Outcome:
    if isinstance(err, (Unsupported, NotImplementedError)):
        return Outcome(NOT_APPLICABLE, " ".join(str(err).split()))
    if isinstance(err, MissingAPI):
        return Outcome(MISSING, " ".join(str(err).split()))
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return Outcome(FAIL, f"{type(err).__name__}: {lines[0] if lines else ''}"[:240])


@dataclass
class ModelRow:
    """One row of the matrix: the model, its family (the module its class is defined in), its
    parameter count and one Outcome per check run."""

    name: str
    family: str
    params: int
    cells: dict


def check_model(name: str, keys: Optional[tuple[str, ...]] = None, seed: int = 0,
                model: Optional[nn.Module] = None) -> ModelRow:
    """The outcome of each check in `keys` (default: all) on registered model `name`, in CHECKS
    order, on one model built with NUM_CLASSES classes and `model_input`'s input. `model`: check
    this module instead, under the name `name` (a model of the family built in another
    configuration, with NUM_CLASSES classes)."""
    keys = CHECK_KEYS if keys is None else tuple(keys)
    unknown = sorted(set(keys) - set(CHECK_KEYS))
    if unknown:
        raise ValueError(f"unknown conformance check(s) {unknown}; expected among {', '.join(CHECK_KEYS)}")
    torch.manual_seed(seed)
    if model is None:
        model = create_model(name, num_classes=NUM_CLASSES)
    row = ModelRow(name, type(model).__module__.rsplit(".", 1)[-1], sum(p.numel() for p in model.parameters()), {})
    case = Case(name, model, model_input(model))
    for check in CHECKS:
        if check.key not in keys:
            continue
        start = time.process_time()
        try:
            check.run(case)
            outcome = Outcome(PASS)
        except Exception as err:  # noqa: BLE001  (every failure is a cell of the matrix, named)
            outcome = _outcome(err)
        row.cells[check.key] = dataclasses.replace(outcome, seconds=time.process_time() - start)
    return row


# ---------------------------------------------------------------------------- the table in docs/
HEADER = ("model", "family")


def representatives(rows: list[ModelRow]) -> dict[str, str]:
    """The model that stands for each family where only one per family is checked (the costly
    columns in CI): its smallest by parameter count, ties by name."""
    chosen: dict[str, ModelRow] = {}
    for row in rows:
        best = chosen.get(row.family)
        if best is None or (row.params, row.name) < (best.params, best.name):
            chosen[row.family] = row
    return {family: chosen[family].name for family in sorted(chosen)}


def render_matrix(rows: list[ModelRow], preamble: str) -> str:
    """docs/conformance.md: `preamble`, the matrix (one row per model, one column per check), the
    family representatives and every cell that is not a pass with its reason."""
    lines = [preamble.rstrip(), "", "| " + " | ".join((*HEADER, *CHECK_KEYS)) + " |",
             "|" + "---|" * (len(HEADER) + len(CHECK_KEYS))]
    for row in sorted(rows, key=lambda r: r.name):
        cells = [row.cells.get(k, Outcome(NOT_RUN)).status for k in CHECK_KEYS]
        lines.append("| " + " | ".join((row.name, row.family, *cells)) + " |")
    lines += ["", "## One model per family", "",
              "The costly columns were run on these models (each family's smallest by parameter count). CI reruns",
              "them on one model per family, with fewer blocks where the family's arguments allow",
              "(tests/models/test_conformance.py says which and why), and expects the outcome given here.", "",
              "| family | model |", "|---|---|"]
    lines += [f"| {family} | {name} |" for family, name in representatives(rows).items()]
    notes = [f"- {row.name}, {key}: {row.cells[key].status}: {row.cells[key].detail}"
             for row in sorted(rows, key=lambda r: r.name) for key in CHECK_KEYS
             if key in row.cells and row.cells[key].status not in (PASS, NOT_RUN)]
    lines += ["", "## Cells other than pass", ""] + (notes or ["None."])
    return "\n".join(lines) + "\n"


def read_matrix(text: str) -> dict[str, dict[str, str]]:
    """The matrix of a docs/conformance.md text: model -> {"family": ..., check key: status}."""
    columns, matrix = None, {}
    for line in text.splitlines():
        if not line.startswith("| "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if tuple(cells[:2]) == HEADER:
            columns = cells
        elif columns is not None:
            if len(cells) != len(columns):
                break                                # the next table
            matrix[cells[0]] = dict(zip(columns[1:], cells[1:]))
    return matrix


__all__ = ["CHECKS", "CHECK_KEYS", "CHEAP", "COSTLY", "SCRIPT_ONLY_EXPORTS", "SCRIPT_ONLY_NODES", "Case", "Check",
           "MissingAPI", "ModelRow", "Outcome", "Unsupported", "check_model", "model_input", "read_matrix",
           "render_matrix", "representatives"]
