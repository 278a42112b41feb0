"""A model written for deployment: an ONNX file checked in onnxruntime, or a `torch.export` program
(.pt2) checked by reloading it; both with a dynamic batch dimension.

    result = attnlab.export(model, torch.randn(2, 3, 224, 224), "model.onnx")
    result.exporter, result.max_abs_diff      # 'torch.onnx (dynamo)', 3e-07

What `export` does, in order:

1. checks its arguments and the destination before any work (a file already there is refused
   unless `overwrite=True`);
2. exports the model in eval mode (its training flag is restored afterwards) into a temporary
   file beside the destination. ONNX goes through `torch.onnx.export(dynamo=True)`, the exporter
   built on `torch.export`; only where that raises does it fall back to the TorchScript-based
   exporter (`dynamo=False`), and the result says so and why (`fallback_reason`);
3. runs the written file on seeded random inputs at batch sizes other than the example's (1 and
   one more than the example's), in onnxruntime or by `torch.export.load`, against the eager model,
   and raises `ExportError` when the largest absolute difference exceeds
   ``atol + rtol * max|eager output|``;
4. only then moves the file into place, so a failed export never leaves a file behind nor
   replaces an existing one.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

FORMATS = ("onnx", "torch-export")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2"}
ONNX_INPUT, ONNX_OUTPUT = "input", "logits"
ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")   # writing (dynamo exporter) and checking


class ExportError(RuntimeError):
    """An export that failed or whose file does not compute what the model computes."""


@dataclass
class ExportResult:
    """What `export` wrote and how well it reproduces the eager model."""

    path: Path
    format: str
    exporter: str                     # 'torch.onnx (dynamo)', 'torch.onnx (torchscript)' or 'torch.export'
    max_abs_diff: float               # over every verification input, against the eager model
    tolerance: float                  # atol + rtol * max|eager output|
    batch_sizes: tuple[int, ...]      # the batch sizes verified (the batch dimension is dynamic)
    fallback_reason: Optional[str] = None   # why the dynamo-based ONNX exporter was not used
    metadata: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"path": str(self.path), "format": self.format, "exporter": self.exporter,
                "max_abs_diff": self.max_abs_diff, "tolerance": self.tolerance,
                "batch_sizes": list(self.batch_sizes), "fallback_reason": self.fallback_reason}


def check_destination(path: str | os.PathLike, overwrite: bool = False, what: str = "path") -> Path:
    """`path` as a Path once it is a place a file can be written: its folder exists and is writable,
    it is not a folder, and it does not exist unless `overwrite`. ValueError naming it otherwise."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{what} must be a file path (str or PathLike), got {type(path).__name__} {path!r}")
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{what} {str(path)!r} is a folder; expected a file path")
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{what} {str(path)!r}: folder {str(folder)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValueError(f"{what} {str(path)!r}: folder {str(folder)!r} is not writable")
    if target.exists() and not overwrite:
        raise ValueError(f"{what} {str(path)!r} already exists; remove it or allow overwriting")
    return target


def check_suffix(path: str | os.PathLike, format: str) -> Path:
    """`path` as a Path unless its suffix names another format's file (a .pt2 program written under
    an .onnx name would mislead whoever loads it); any other suffix is the caller's choice."""
    target = Path(path)
    for other, suffix in SUFFIXES.items():
        if other != format and target.suffix.lower() == suffix:
            raise ValueError(f"export: {str(path)!r} ends in {suffix}, the suffix of format {other!r}, but the format "
                             f"is {format!r}; expected a {SUFFIXES[format]} file or format {other!r}")
    return target


def check_format(format: str) -> str:
    """`format` if it is one of FORMATS and the packages it needs are installed; ValueError naming
    it, or ModuleNotFoundError naming the missing packages, otherwise."""
    if format not in FORMATS:
        raise ValueError(f"export: unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if format == "onnx":
        missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
        if missing:
            raise ModuleNotFoundError(f"export: format 'onnx' needs the packages {', '.join(ONNX_PACKAGES)}; "
                                      f"missing: {', '.join(missing)} (pip install {' '.join(missing)})")
    return format


def _check_arguments(model, example_input, format: str, atol: float, rtol: float, program) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"export: model must be a torch.nn.Module, got {type(model).__name__}")
    if program is not None and not isinstance(program, torch.export.ExportedProgram):
        raise TypeError(f"export: program must be a torch.export.ExportedProgram or None, got {type(program).__name__}")
    if not isinstance(example_input, torch.Tensor) or example_input.dim() < 1 or example_input.shape[0] < 1:
        shape = tuple(example_input.shape) if isinstance(example_input, torch.Tensor) else type(example_input).__name__
        raise ValueError(f"export: example_input must be a tensor with a batch dimension first, got {shape}")
    if not example_input.is_floating_point():
        raise TypeError(f"export: example_input must be a floating-point tensor, got {example_input.dtype}")
    check_format(format)
    for name, value in (("atol", atol), ("rtol", rtol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"export: {name} must be a finite number >= 0, got {value!r}")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def verification_inputs(example_input: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """Seeded random inputs shaped like `example_input` but at batch sizes 1 and one more than the
    example's, so that a batch dimension fixed at export time fails verification."""
    generator = torch.Generator().manual_seed(seed)
    batches = sorted({1, example_input.shape[0] + 1})
    return [torch.randn((n, *example_input.shape[1:]), generator=generator, dtype=example_input.dtype)
            .to(example_input.device) for n in batches]


def compare_outputs(model: nn.Module, run: Callable[[torch.Tensor], torch.Tensor], inputs: Sequence[torch.Tensor],
                    atol: float, rtol: float) -> tuple[float, float]:
    """(largest |run(x) - model(x)| over `inputs`, the tolerance atol + rtol * max|model(x)|), with
    `model` in eval mode. A shape mismatch counts as an infinite difference."""
    worst, scale = 0.0, 0.0
    with _eval_mode(model), torch.no_grad():
        for x in inputs:
            expected = model(x).detach().float().cpu()
            got = torch.as_tensor(run(x)).detach().float().cpu()
            scale = max(scale, float(expected.abs().max()))
            if got.shape != expected.shape or not torch.isfinite(got).all():
                return math.inf, atol + rtol * scale
            worst = max(worst, float((got - expected).abs().max()))
    return worst, atol + rtol * scale


# ---------------------------------------------------------------------------- ONNX
def _onnx_dynamo(model: nn.Module, example_input: torch.Tensor, file: Path, opset: Optional[int],
                 program: Optional[torch.export.ExportedProgram] = None) -> None:
    # an ExportedProgram carries its own dynamic batch dimension; a module is exported with one here
    source, shapes = (model, ({0: torch.export.Dim("batch", min=1)},)) if program is None else (program, None)
    torch.onnx.export(source, (example_input,), str(file), dynamo=True, dynamic_shapes=shapes,
                      input_names=[ONNX_INPUT], output_names=[ONNX_OUTPUT], opset_version=opset,
                      external_data=False, verbose=False)


def _onnx_torchscript(model: nn.Module, example_input: torch.Tensor, file: Path, opset: Optional[int]) -> None:
    torch.onnx.export(model, (example_input,), str(file), dynamo=False, input_names=[ONNX_INPUT],
                      output_names=[ONNX_OUTPUT], dynamic_axes={ONNX_INPUT: {0: "batch"}, ONNX_OUTPUT: {0: "batch"}},
                      opset_version=opset, verbose=False)


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else ''}"[:300]


def write_onnx(model: nn.Module, example_input: torch.Tensor, file: Path, opset: Optional[int] = None,
               exporter: str = "auto", program: Optional[torch.export.ExportedProgram] = None
               ) -> tuple[str, Optional[str]]:
    """Write `model` (in eval mode) to ONNX file `file` with a dynamic batch dimension; returns
    (exporter used, why the dynamo-based one was not). `exporter`: 'auto' (dynamo, falling back to
    TorchScript where dynamo raises), 'dynamo' or 'torchscript'. `program`: `export_program` of the
    model in eval mode, which the dynamo-based exporter then translates instead of exporting the
    model again."""
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise ValueError(f"write_onnx: exporter must be 'auto', 'dynamo' or 'torchscript', got {exporter!r}")
    if exporter == "torchscript":
        _onnx_torchscript(model, example_input, file, opset)
        return "torch.onnx (torchscript)", "asked for"
    try:
        _onnx_dynamo(model, example_input, file, opset, program)
        return "torch.onnx (dynamo)", None
    except Exception as err:  # noqa: BLE001  (any exporter failure is recorded, then the fallback is tried)
        if exporter == "dynamo":
            raise ExportError(f"the dynamo-based ONNX exporter failed: {_first_line(err)}") from err
        reason = _first_line(err)
    file.unlink(missing_ok=True)
    _onnx_torchscript(model, example_input, file, opset)
    return "torch.onnx (torchscript)", reason


def onnx_runner(file: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running ONNX file `file` in onnxruntime on the CPU: tensor in, tensor out."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3          # errors only: no optimiser chatter on stderr
    session = onnxruntime.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.detach().cpu().numpy()})[0])


def _add_onnx_metadata(file: Path, metadata: dict) -> None:
    import onnx

    proto = onnx.load(str(file))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.save(proto, str(file))


# ---------------------------------------------------------------------------- torch.export
def export_program(model: nn.Module, example_input: torch.Tensor) -> torch.export.ExportedProgram:
    """`torch.export.export` of `model` (as it is: train or eval mode) with a dynamic batch dimension."""
    return torch.export.export(model, (example_input,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))


def _write_program(program: torch.export.ExportedProgram, file: Path, metadata: dict) -> None:
    extra = {str(k): str(v) for k, v in metadata.items()}
    torch.export.save(program, str(file), extra_files=extra or None)


def program_runner(file: Path) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function running the .pt2 program in `file`, reloaded with `torch.export.load`."""
    module = torch.export.load(str(file)).module()
    return lambda x: module(x)


# ---------------------------------------------------------------------------- the entry point
def export(model: nn.Module, example_input: torch.Tensor, path: str | os.PathLike, format: str = "onnx", *,
           overwrite: bool = False, atol: float = 1e-4, rtol: float = 1e-4, opset: Optional[int] = None,
           onnx_exporter: str = "auto", metadata: Optional[dict] = None, seed: int = 0,
           program: Optional[torch.export.ExportedProgram] = None) -> ExportResult:
    """Write `model` for deployment to `path` and check the file computes what the model computes.

    format: 'onnx' (run in onnxruntime to check it) or 'torch-export' (a .pt2 written by
    `torch.export.save`, checked by reloading it). The batch dimension of `example_input` is dynamic
    in the file (a batch of 1 is traced as 2); its other dimensions are fixed. overwrite: replace an
    existing file (refused otherwise). atol, rtol: the check passes when the largest absolute
    difference to the eager model is at most atol + rtol * max|eager output|. opset: the ONNX opset
    (default: the exporter's). onnx_exporter: 'auto' (dynamo-based, TorchScript-based where it
    raises), 'dynamo' or 'torchscript'. metadata: string pairs stored in the file (ONNX
    metadata_props; .pt2 extra files). program: `export_program(model, example_input)` of the model
    in eval mode, already made, to write or translate instead of exporting the model again (the
    file is still checked against `model`). Raises ValueError / TypeError on a bad argument,
    ExportError when the export fails or the file does not match the model.
    """
    _check_arguments(model, example_input, format, atol, rtol, program)
    target = check_destination(check_suffix(path, format), overwrite)
    metadata = dict(metadata or {})
    # torch.export fixes a dimension of size 1 (it may broadcast): trace a batch of 1 as a batch of 2
    traced = example_input if example_input.shape[0] > 1 else torch.cat([example_input, example_input])
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp{SUFFIXES[format]}")   # .pt2: torch.export wants it
    try:
        try:
            with _eval_mode(model):
                if format == "onnx":
                    exporter, reason = write_onnx(model, traced, temporary, opset, onnx_exporter, program)
                    if metadata:
                        _add_onnx_metadata(temporary, metadata)
                    run = onnx_runner(temporary)
                else:
                    _write_program(program or export_program(model, traced), temporary, metadata)
                    exporter, reason = "torch.export", None
                    run = program_runner(temporary)
        except ExportError:
            raise
        except Exception as err:  # noqa: BLE001  (the exporters raise many kinds; one kind here, with the reason)
            raise ExportError(f"{format} export of {type(model).__name__} failed: {_first_line(err)}") from err
        inputs = verification_inputs(example_input, seed)
        try:
            worst, tolerance = compare_outputs(model, run, inputs, atol, rtol)
        except Exception as err:  # noqa: BLE001  (a file that does not run is a failed export)
            raise ExportError(f"the {format} file does not run on random inputs at batch sizes "
                              f"{[x.shape[0] for x in inputs]}: {_first_line(err)}") from err
        if not worst <= tolerance:
            raise ExportError(f"the {format} file differs from the eager model by {worst:.3g} (tolerance "
                              f"{tolerance:.3g}) on random inputs at batch sizes "
                              f"{[x.shape[0] for x in inputs]}; nothing was written to {str(target)!r}")
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    return ExportResult(target, format, exporter, worst, tolerance, tuple(x.shape[0] for x in inputs), reason,
                        metadata)


__all__ = ["ExportError", "ExportResult", "FORMATS", "SUFFIXES", "check_destination", "check_format", "check_suffix", "compare_outputs",
           "export", "export_program", "onnx_runner", "program_runner", "verification_inputs", "write_onnx"]
