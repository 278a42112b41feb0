"""Checkpoints that never run code, never lose work and refuse to load when damaged.

Not a paper module. One checkpoint is two files in `<run>/checkpoints/`:

* ``ckpt-<step>.safetensors``: every tensor: the model's weights under ``model.<name>`` (the
  `state_dict` names; models/pretrained.py reads exactly these keys), the optimizer's buffers,
  the RNG states (torch, CUDA, numpy, the augmentation generator);
* ``ckpt-<step>.json``: the rest of the state (epoch, step, data-order position, optimizer
  hyper-parameters, python/numpy RNG scalars, the run's config, the dataset's shape, metrics),
  the SHA-256 of the tensor file and the SHA-256 of the state itself. The JSON is written last:
  it is the commit record, so a checkpoint whose JSON exists has a complete tensor file.

Both files are written atomically (temporary file in the same folder, fsync, rename, fsync of
the folder). Loading checks the JSON's own hash, then the tensor file's hash (a truncated, bit-
flipped or swapped file is refused), then, when asked, the config; the error names the file, what
is wrong, and the newest older checkpoint that verifies. Rotation keeps the last K and the best.
Nothing here calls `pickle` or `torch.load`.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

FORMAT = "attnlab-checkpoint/1"
CHECKPOINT_SUBDIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d+)\.json$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or does not match the run."""


@dataclass
class Checkpoint:
    path: Path                     # the JSON file
    state: dict                    # JSON state, tensors put back in place
    tensors: dict[str, torch.Tensor]

    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model."):]: v for k, v in self.tensors.items() if k.startswith("model.")}


# ---------------------------------------------------------------------------- encoding
def encode(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """JSON-able copy of `obj` whose tensors / numpy arrays move into `tensors` under `prefix...`."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj.detach().to("cpu").clone().contiguous()
        return {"__tensor__": prefix}
    if isinstance(obj, np.ndarray):
        tensors[prefix] = torch.from_numpy(obj.astype(np.int64) if obj.dtype.kind in "ui" else obj.copy())
        return {"__ndarray__": prefix, "dtype": str(obj.dtype)}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode(v, f"{prefix}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, encode(v, f"{prefix}.{k}", tensors)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint (at {prefix})")


def decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            return tensors[obj["__ndarray__"]].numpy().astype(obj["dtype"])
        if "__tuple__" in obj:
            return tuple(decode(v, tensors) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: decode(v, tensors) for k, v in obj["__items__"]}
        return {k: decode(v, tensors) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors) for v in obj]
    return obj


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


# ---------------------------------------------------------------------------- atomic writes
def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass  # directories cannot be fsynced on some filesystems; the rename is still atomic


def save_checkpoint(directory: str | os.PathLike, step: int, state: dict,
                    model_state: dict[str, torch.Tensor]) -> Path:
    """Write checkpoint `ckpt-<step>` in `directory`; returns the JSON path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model_state.items():
        tensors[f"model.{name}"] = value.detach().to("cpu").clone().contiguous()
    encoded_state = encode(state, "state", tensors)
    blob = save_safetensors_bytes(tensors, metadata={"format": FORMAT})
    stem = f"ckpt-{step:09d}"
    tensor_path = directory / f"{stem}.safetensors"
    atomic_write(tensor_path, blob)
    record = {"format": FORMAT, "step": step, "tensors_file": tensor_path.name,
              "tensors_sha256": hashlib.sha256(blob).hexdigest(), "state": encoded_state}
    record["record_sha256"] = hashlib.sha256(_canonical(record)).hexdigest()
    json_path = directory / f"{stem}.json"
    atomic_write(json_path, json.dumps(record, indent=1, allow_nan=True).encode())
    return json_path


# ---------------------------------------------------------------------------- finding and loading
def checkpoint_dir(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / CHECKPOINT_SUBDIR if (path / CHECKPOINT_SUBDIR).is_dir() else path


def list_checkpoints(directory: str | os.PathLike) -> list[Path]:
    """The JSON files of the checkpoints in `directory` (or `<run>/checkpoints`), oldest first."""
    directory = checkpoint_dir(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """A run folder, a checkpoints folder, a .json or a .safetensors file -> the JSON to load
    (the newest one for a folder); CheckpointError when there is none."""
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CheckpointError(f"no checkpoint (ckpt-*.json) in {path} or {path / CHECKPOINT_SUBDIR}")
        return found[-1]
    if path.suffix == ".safetensors":
        path = path.with_suffix(".json")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def _previous_good(bad: Path) -> Optional[Path]:
    for candidate in reversed(list_checkpoints(bad.parent)):
        if candidate == bad or (_NAME.match(candidate.name) and _NAME.match(bad.name)
                                and int(_NAME.match(candidate.name).group(1)) > int(_NAME.match(bad.name).group(1))):
            continue
        try:
            _read_verified(candidate)
            return candidate
        except CheckpointError:
            continue
    return None


def _read_verified(path: Path) -> Checkpoint:
    try:
        record = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({err})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an {FORMAT} record")
    claimed = record.pop("record_sha256", None)
    if claimed != hashlib.sha256(_canonical(record)).hexdigest():
        raise CheckpointError(f"checkpoint {path} is corrupt: its state does not match its hash")
    tensor_path = path.parent / str(record.get("tensors_file", ""))
    try:
        blob = tensor_path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"checkpoint {path}: tensor file {tensor_path} is missing ({err})") from None
    if hashlib.sha256(blob).hexdigest() != record.get("tensors_sha256"):
        raise CheckpointError(f"checkpoint {path}: tensor file {tensor_path} is truncated, corrupt or from "
                              "another checkpoint (its SHA-256 does not match the record)")
    try:
        tensors = load_safetensors_bytes(blob)
    except Exception as err:  # the hash matched, so this is a writer bug; still refuse cleanly
        raise CheckpointError(f"checkpoint {path}: cannot parse {tensor_path} ({err})") from None
    return Checkpoint(path, decode(record["state"], tensors), tensors)


def load_checkpoint(path: str | os.PathLike, expect_config: Optional[dict] = None,
                    ignore_fields: tuple[str, ...] = ()) -> Checkpoint:
    """Load and verify a checkpoint (see `resolve_checkpoint` for `path`).

    With `expect_config`, the stored config must equal it, except for `ignore_fields`.
    Raises CheckpointError naming the problem and the newest older checkpoint that verifies.
    """
    json_path = resolve_checkpoint(path)
    try:
        ckpt = _read_verified(json_path)
    except CheckpointError as err:
        good = _previous_good(json_path)
        hint = (f"; the previous good checkpoint is {good} (load it explicitly or delete the damaged one)"
                if good else "; no older checkpoint in that folder verifies")
        raise CheckpointError(f"{err}{hint}") from None
    if expect_config is not None:
        stored = ckpt.state.get("config", {})
        diff = sorted(k for k in set(stored) | set(expect_config)
                      if k not in ignore_fields and _normalise(stored.get(k)) != _normalise(expect_config.get(k)))
        if diff:
            details = "; ".join(f"{k}: checkpoint {stored.get(k)!r} vs now {expect_config.get(k)!r}" for k in diff)
            raise CheckpointError(f"checkpoint {json_path} was written by a different run configuration ({details}); "
                                  "use the same settings to resume, or a new --out folder")
    return ckpt


def _normalise(value):
    if isinstance(value, tuple):
        return [_normalise(v) for v in value]
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    if isinstance(value, float) and value.is_integer() and not math.isinf(value):
        return int(value)
    return value


def rotate_checkpoints(directory: str | os.PathLike, keep_last: int, metric: str = "test_acc") -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints and the one with the best `metric`.
    Returns the JSON paths deleted. Unverifiable checkpoints are left alone (evidence)."""
    found = list_checkpoints(directory)
    keep = set(found[-keep_last:]) if keep_last > 0 else set()
    best, best_value = None, -math.inf
    for path in found:
        try:
            value = json.loads(path.read_bytes())["state"].get("metrics", {}).get(metric)
        except (OSError, ValueError, KeyError, AttributeError):
            keep.add(path)
            continue
        if isinstance(value, (int, float)) and value > best_value:
            best, best_value = path, value
    if best is not None:
        keep.add(best)
    deleted = []
    for path in found:
        if path in keep:
            continue
        path.unlink(missing_ok=True)            # the commit record first: a half-deleted pair is invalid, not wrong
        path.with_suffix(".safetensors").unlink(missing_ok=True)
        deleted.append(path)
    return deleted


def best_checkpoint(directory: str | os.PathLike, metric: str = "test_acc") -> Optional[Path]:
    best, best_value = None, -math.inf
    for path in list_checkpoints(directory):
        try:
            value = json.loads(path.read_bytes())["state"].get("metrics", {}).get(metric)
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        if isinstance(value, (int, float)) and value > best_value:
            best, best_value = path, value
    return best
