"""Checkpoints that never run code, never lose work and refuse to load when damaged.

Not a paper module. One checkpoint is two files in `<run>/checkpoints/`:

* ``ckpt-<step>.safetensors``: every tensor: the model's weights under ``model.<name>`` (the
  `state_dict` names; models/pretrained.py reads exactly these keys), the optimizer's buffers,
  the RNG states (torch, CUDA, numpy, the augmentation generator);
* ``ckpt-<step>.json``: the rest of the state (epoch, step, data-order position, optimizer
  hyper-parameters, python/numpy RNG scalars, the run's config, the dataset's shape, metrics),
  the SHA-256 of the tensor file and the SHA-256 of the state itself. The JSON is written last:
  it is the commit record, so a checkpoint whose JSON exists has a complete tensor file.

Both files are written atomically (temporary file `.<name>.tmp-<pid>` in the same folder, fsync,
rename, fsync of the folder). A write that fails (disk full, no permission) raises `RunWriteError`
naming the folder and the system's reason, and leaves the checkpoints written before intact;
temporary files of a writer that was killed mid-write are removed by `remove_stale_temporaries`
when the next writer starts on that folder.

Loading reads only regular files (never a symbolic link, a folder or a device), checks the record's
structure (`check_record`: every field the JSON names, with its type; the tensor file must be a
plain `.safetensors` name inside the checkpoint's own folder, so a record that names
`../../x.safetensors` or `/etc/passwd` is refused before anything else is opened), then the JSON's
own hash, then the tensor file's hash (a truncated, bit-flipped or swapped file is refused), then
the decoded state (`check_state`: the fields that evaluation or a resume reads, `needs=`, and the
run's config through the caller's `check_config`), then, when asked, that the config equals the
caller's; the error names the file, the field or what is wrong, and the newest
older checkpoint that verifies. Rotation keeps the last K and the best. Nothing here calls
`pickle` or `torch.load`.

Trust: the two SHA-256 digests have no key. They detect damage (truncation, bit flips, a tensor
file from another checkpoint), not forgery: anyone can write a checkpoint whose hashes match.
Nothing relies on them for trust. What makes a checkpoint from elsewhere safe to load is the
reading itself: safetensors and JSON only (no code runs), the tensor file confined to the
checkpoint's folder, and the structure validated before use.
"""
from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

FORMAT = "attnlab-checkpoint/1"
CHECKPOINT_SUBDIR = "checkpoints"
_NAME = re.compile(r"^ckpt-(\d+)\.json$")


class CheckpointError(ValueError):
    """A checkpoint that is missing, damaged or does not match the run."""


class RunWriteError(OSError):
    """A file of a run folder could not be written (disk full, no permission, ...). The message is
    one line naming the folder and the system's reason; `errno` is the system's error number.
    What was written before (older checkpoints, earlier metric lines) is intact."""

    def __init__(self, message: str, errno_: Optional[int] = None):
        super().__init__(message)
        self.errno = errno_

    def __str__(self) -> str:
        return str(self.args[0])


def write_failed(what: str, folder: Path, err: OSError) -> RunWriteError:
    """The `RunWriteError` for `err`, raised while writing `what` into `folder`."""
    reason = err.strerror or str(err)
    return RunWriteError(f"cannot write {what} in {folder}: {reason} (errno {err.errno}); files written there "
                         "before are intact", err.errno)


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


def decode(obj: Any, tensors: dict[str, torch.Tensor], where: str = "state") -> Any:
    """The inverse of `encode`. A reference that cannot be resolved (a tensor the file lacks, a
    malformed marker) raises ValueError naming its place, `where` (e.g. state.rng.torch)."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            key = obj["__tensor__"]
            if not isinstance(key, str) or key not in tensors:
                raise ValueError(f"field {where} refers to tensor {key!r}, which the tensor file does not hold")
            return tensors[key]
        if "__ndarray__" in obj:
            key = obj["__ndarray__"]
            if not isinstance(key, str) or key not in tensors:
                raise ValueError(f"field {where} refers to tensor {key!r}, which the tensor file does not hold")
            try:
                return tensors[key].numpy().astype(np.dtype(obj.get("dtype")))
            except TypeError:
                raise ValueError(f"field {where}.dtype: {obj.get('dtype')!r} is not a numpy dtype") from None
        if "__tuple__" in obj:
            if not isinstance(obj["__tuple__"], list):
                raise ValueError(f"field {where}.__tuple__ must be a list, got {type(obj['__tuple__']).__name__}")
            return tuple(decode(v, tensors, f"{where}.{i}") for i, v in enumerate(obj["__tuple__"]))
        if "__items__" in obj:
            items = obj["__items__"]
            if not isinstance(items, list) or not all(isinstance(p, list) and len(p) == 2 for p in items):
                raise ValueError(f"field {where}.__items__ must be a list of [key, value] pairs")
            if not all(isinstance(k, (str, int, float, bool)) or k is None for k, _ in items):
                raise ValueError(f"field {where}.__items__ has a key that is not a number or a string")
            return {k: decode(v, tensors, f"{where}.{k}") for k, v in items}
        return {k: decode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode(v, tensors, f"{where}.{i}") for i, v in enumerate(obj)]
    return obj


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=True).encode()


# ---------------------------------------------------------------------------- atomic writes
# The files a run's writer writes (the Trainer, save_checkpoint) and their temporary names.
_WRITER_FILE = re.compile(r"^(ckpt-\d+\.(?:json|safetensors)|config\.yaml|final\.json|metrics\.jsonl)$")
_TEMPORARY = re.compile(r"^\.(.+)\.tmp-(\d+)$")


def temporary_path(path: Path) -> Path:
    """Where `atomic_write` writes `path` before renaming it: `.<name>.tmp-<pid>` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True       # exists but belongs to someone else, or cannot be asked: keep its files
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files that writers killed mid-write left in `folder`; returns them.

    Only regular files named as `atomic_write` names the files of a run (`.<name>.tmp-<pid>` for
    a checkpoint, config.yaml, final.json or metrics.jsonl) whose process is gone are removed;
    anything else is left alone. Call it while holding the folder's lock (io.run_folder)."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = _TEMPORARY.match(entry.name)
        if not m or not _WRITER_FILE.match(m.group(1)):
            continue
        pid = int(m.group(2))
        if pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            if stat.S_ISREG(os.lstat(entry).st_mode):
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old file or the new one."""
    path = Path(path)
    tmp = temporary_path(path)
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
    """Write checkpoint `ckpt-<step>` in `directory`; returns the JSON path.

    A failed write (disk full, ...) raises `RunWriteError` naming the folder and the reason; the
    checkpoints of earlier steps stay intact and no half-written file of this one is left behind
    (a checkpoint of the same step written before is withdrawn first: its record is deleted
    before its tensor file is replaced, so the pair is never mismatched)."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in model_state.items():
        tensors[f"model.{name}"] = value.detach().to("cpu").clone().contiguous()
    encoded_state = encode(state, "state", tensors)
    blob = save_safetensors_bytes(tensors, metadata={"format": FORMAT})
    stem = f"ckpt-{step:09d}"
    tensor_path = directory / f"{stem}.safetensors"
    json_path = directory / f"{stem}.json"
    record = {"format": FORMAT, "step": step, "tensors_file": tensor_path.name,
              "tensors_sha256": hashlib.sha256(blob).hexdigest(), "state": encoded_state}
    record["record_sha256"] = hashlib.sha256(_canonical(record)).hexdigest()
    tensors_written = committed = False
    try:
        directory.mkdir(parents=True, exist_ok=True)
        json_path.unlink(missing_ok=True)
        atomic_write(tensor_path, blob)
        tensors_written = True
        atomic_write(json_path, json.dumps(record, indent=1, allow_nan=True).encode())
        committed = True
    except OSError as err:
        raise write_failed(f"checkpoint {stem}", directory, err) from err
    finally:
        if tensors_written and not committed:
            try:
                tensor_path.unlink(missing_ok=True)
            except OSError:
                pass
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


def read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, which must be a regular file: a symbolic link (as the last part of the
    path), a folder, a FIFO or a device raises OSError before anything is read."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    if os.path.islink(path):   # O_NOFOLLOW's error text is vague; say what it is
        raise OSError(errno.ELOOP, "is a symbolic link, not a plain file", str(path))
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "is not a plain file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


# The fields of a decoded state that the readers use: name -> (accepted types, smallest value).
# `needs="run"` (evaluate, explain, load_trained) checks _RUN; `needs="resume"` checks both.
_NUMBER = (int, float)
_RUN = {"config": (dict, None), "data": (dict, None)}
_RUN_DATA = {"num_classes": (int, 1), "in_chans": (int, 1)}
_RUN_DATA_OPTIONAL = {"mean": (list, None), "std": (list, None), "image_size": (list, None),
                      "classes": (list, None), "name": (str, None)}
_RESUME = {"epoch": (int, 0), "batch_in_epoch": (int, 0), "step": (int, 0), "bad_steps": (int, 0),
           "seconds": (_NUMBER, 0), "best_acc": (_NUMBER, None), "steps_per_epoch": (int, 1),
           "epoch_sums": (dict, None), "optimizer": (dict, None), "rng": (dict, None)}
_RESUME_OPTIONAL = {"world_size": (int, 1), "scaler": (dict, None), "metrics": (dict, None), "device": (str, None),
                    "device_changes": (list, None)}
_RESUME_EPOCH_SUMS = {"loss": (_NUMBER, None), "correct": (_NUMBER, 0), "seen": (_NUMBER, 0),
                      "seconds": (_NUMBER, 0)}
_RESUME_OPTIMIZER = {"state": (dict, None), "param_groups": (list, None)}
_RESUME_RNG = {"torch": (torch.Tensor, None), "numpy": (tuple, None), "python": (tuple, None),
               "augment": (torch.Tensor, None)}
NEEDS = ("tensors", "run", "resume")


def _type_name(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "an integer", float: "a number", dict: "an object", list: "a list", tuple: "a tuple",
             str: "a string", torch.Tensor: "a tensor"}
    return " or ".join(dict.fromkeys(names.get(t, t.__name__) for t in types))


def _check_fields(path: Path, obj: dict, where: str, spec: dict, required: bool = True) -> None:
    for name, (types, smallest) in spec.items():
        if name not in obj or (not required and obj[name] is None):
            if required:
                raise CheckpointError(f"checkpoint {path}: field {where}.{name} is missing; expected "
                                      f"{_type_name(types)}")
            continue
        value = obj[name]
        if isinstance(value, bool) or not isinstance(value, types):
            raise CheckpointError(f"checkpoint {path}: field {where}.{name} must be {_type_name(types)}, got "
                                  f"{type(value).__name__} {str(value)[:60]!r}")
        if smallest is not None and value < smallest:
            raise CheckpointError(f"checkpoint {path}: field {where}.{name} must be >= {smallest}, got {value!r}")


def check_record(path: Path, record) -> Path:
    """Check the structure of a checkpoint's JSON record (before any other file is opened) and
    return the tensor file it names. That file must be a plain `.safetensors` name in the
    record's own folder: no folder part, no '..', no absolute path. CheckpointError otherwise."""
    if not isinstance(record, dict):
        raise CheckpointError(f"checkpoint {path} is not an {FORMAT} record (a JSON {type(record).__name__}, "
                              "expected an object)")
    if record.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not an {FORMAT} record (field format is "
                              f"{str(record.get('format'))[:40]!r})")
    _check_fields(path, record, "record", {"step": (int, 0), "tensors_file": (str, None),
                                           "tensors_sha256": (str, None), "record_sha256": (str, None),
                                           "state": (dict, None)})
    name = record["tensors_file"]
    if (not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or os.path.isabs(name)
            or Path(name).name != name or os.path.splitdrive(name)[0] or not name.endswith(".safetensors")):
        raise CheckpointError(f"checkpoint {path}: field record.tensors_file must be the name of a .safetensors file "
                              f"in the checkpoint's own folder {path.parent} (no folder, no '..', no absolute path), "
                              f"got {name[:200]!r}")
    if not re.fullmatch(r"[0-9a-f]{64}", record["tensors_sha256"]):
        raise CheckpointError(f"checkpoint {path}: field record.tensors_sha256 must be 64 hexadecimal digits, got "
                              f"{record['tensors_sha256'][:80]!r}")
    return path.parent / name


def check_state(path: Path, state: dict, needs: str = "tensors",
                check_config: Optional[Callable[[dict], object]] = None) -> None:
    """Check that the decoded `state` of checkpoint `path` holds what its reader needs:
    'tensors' (weights only: nothing more), 'run' (evaluation: the run's config, an object, and
    the dataset's shape) or 'resume' (everything a Trainer restores). For 'run' and 'resume',
    `check_config` (when given) receives the stored config and raises ValueError or TypeError if
    its reader cannot use it (attnlab.train passes `TrainConfig.from_dict`).
    CheckpointError naming the file and the field otherwise."""
    if needs not in NEEDS:
        raise ValueError(f"needs must be one of {NEEDS}, got {needs!r}")
    if needs == "tensors":
        return
    _check_fields(path, state, "state", _RUN)
    _check_fields(path, state["data"], "state.data", _RUN_DATA)
    _check_fields(path, state["data"], "state.data", _RUN_DATA_OPTIONAL, required=False)
    if check_config is not None:
        try:
            check_config(state["config"])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"checkpoint {path}: field state.config: {err}") from None
    if needs == "resume":
        _check_fields(path, state, "state", _RESUME)
        _check_fields(path, state, "state", _RESUME_OPTIONAL, required=False)
        _check_fields(path, state["epoch_sums"], "state.epoch_sums", _RESUME_EPOCH_SUMS)
        _check_fields(path, state["optimizer"], "state.optimizer", _RESUME_OPTIMIZER)
        _check_fields(path, state["rng"], "state.rng", _RESUME_RNG)


def _read_verified(path: Path) -> Checkpoint:
    try:
        text = read_regular_file(path)
    except OSError as err:
        raise CheckpointError(f"checkpoint {path} is unreadable ({err.strerror or err})") from None
    try:
        record = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"checkpoint {path} is unreadable or truncated ({err})") from None
    tensor_path = check_record(path, record)
    claimed = record.pop("record_sha256")
    if claimed != hashlib.sha256(_canonical(record)).hexdigest():
        raise CheckpointError(f"checkpoint {path} is corrupt: its state does not match its hash")
    try:
        blob = read_regular_file(tensor_path)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path}: tensor file {tensor_path} is missing") from None
    except OSError as err:
        raise CheckpointError(f"checkpoint {path}: tensor file {tensor_path} cannot be read: "
                              f"{err.strerror or err}") from None
    if hashlib.sha256(blob).hexdigest() != record["tensors_sha256"]:
        raise CheckpointError(f"checkpoint {path}: tensor file {tensor_path} is truncated, corrupt or from "
                              "another checkpoint (its SHA-256 does not match the record)")
    try:
        tensors = load_safetensors_bytes(blob)
    except Exception as err:  # the hash matched, so this is a writer bug; still refuse cleanly
        raise CheckpointError(f"checkpoint {path}: cannot parse {tensor_path} ({err})") from None
    try:
        state = decode(record["state"], tensors)
    except ValueError as err:
        raise CheckpointError(f"checkpoint {path}: {err}") from None
    return Checkpoint(path, state, tensors)


def load_checkpoint(path: str | os.PathLike, expect_config: Optional[dict] = None,
                    ignore_fields: tuple[str, ...] = (), needs: str = "tensors",
                    check_config: Optional[Callable[[dict], object]] = None) -> Checkpoint:
    """Load and verify a checkpoint (see `resolve_checkpoint` for `path`).

    `needs` says what the caller reads (see `check_state`): 'tensors' (weights), 'run'
    (evaluation) or 'resume'; `check_config` validates the stored config for those two
    (`attnlab.train.load_checkpoint` passes the TrainConfig check). With `expect_config`, the stored config must equal it, except for
    `ignore_fields`. Raises CheckpointError naming the problem (the field, for a record of the
    wrong shape) and, for a damaged file, the newest older checkpoint that verifies.
    """
    if needs not in NEEDS:
        raise ValueError(f"load_checkpoint: needs must be one of {NEEDS}, got {needs!r}")
    json_path = resolve_checkpoint(path)
    try:
        ckpt = _read_verified(json_path)
    except CheckpointError as err:
        good = _previous_good(json_path)
        hint = (f"; the previous good checkpoint is {good} (load it explicitly or delete the damaged one)"
                if good else "; no older checkpoint in that folder verifies")
        raise CheckpointError(f"{err}{hint}") from None
    check_state(json_path, ckpt.state, needs, check_config)
    if expect_config is not None:
        stored = ckpt.state.get("config", {})
        if not isinstance(stored, dict):
            raise CheckpointError(f"checkpoint {json_path}: field state.config must be an object, got "
                                  f"{type(stored).__name__}")
        diff = config_differences(stored, expect_config, ignore_fields)
        if diff:
            details = "; ".join(f"{k}: checkpoint {stored.get(k)!r} vs now {expect_config.get(k)!r}" for k in diff)
            raise CheckpointError(f"checkpoint {json_path} was written by a different run configuration ({details}); "
                                  "use the same settings to resume, or a new --out folder")
    return ckpt


def config_differences(stored: dict, expected: dict, ignore_fields: tuple[str, ...] = ()) -> list[str]:
    """The fields (sorted) in which two run configs differ, `ignore_fields` left out; 3 and 3.0 are
    the same value, and so are a tuple and a list of the same items."""
    return sorted(k for k in set(stored) | set(expected)
                  if k not in ignore_fields and _normalise(stored.get(k)) != _normalise(expected.get(k)))


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
        value = _metric(path, metric)
        if value is _UNREADABLE:
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


_UNREADABLE = object()


def _metric(path: Path, metric: str):
    """The value of `metric` recorded in checkpoint JSON `path` (None when absent), or _UNREADABLE."""
    try:
        metrics = json.loads(read_regular_file(path))["state"].get("metrics", {})
        return metrics.get(metric) if isinstance(metrics, dict) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return _UNREADABLE


def best_checkpoint(directory: str | os.PathLike, metric: str = "test_acc") -> Optional[Path]:
    """The checkpoint JSON in `directory` with the highest recorded `metric`, or None."""
    best, best_value = None, -math.inf
    for path in list_checkpoints(directory):
        value = _metric(path, metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > best_value:
            best, best_value = path, value
    return best
