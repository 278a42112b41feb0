"""The `attnlab` command (also `python -m attnlab`): a thin shell over the Python API.

    attnlab list [models|attention|datasets] [PATTERN]
    attnlab train --model M [--attention A] --dataset D --epochs N --seed S --out DIR [...]
    attnlab eval --checkpoint DIR_OR_FILE [--dataset D]
    attnlab compare [--preset NAME | --models ... --attentions ... --seeds ...] [--epochs N] [--out DIR] [--jobs N]
    attnlab compare --resume RUN_DIR
    attnlab report RUN_DIR
    attnlab explain --checkpoint C --out DIR [--dataset D] [--html]
    attnlab export --checkpoint C --format onnx|torch-export --out FILE [--batch N] [--force]

Not a paper module. Every command validates all its arguments before any work starts; a bad
value gives one line on stderr naming it and the accepted values, exit status 2, no traceback.
A run stopped by Ctrl-C / SIGTERM exits with 130 after saying how to resume. A run that cannot go
on (non-finite loss, a file of the run folder that cannot be written: disk full) exits with 1
after one line naming the cause; what it wrote before (earlier checkpoints) is intact.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141    # 128 + SIGPIPE, as a shell reports a writer whose pipe closed


class UsageError(Exception):
    """A bad command-line value: reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (no usage dump) and exit status 2."""

    def error(self, message: str):
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _progress_line(text: str) -> None:
    """Where the library's progress lines go (the commands own the output): one line on stderr."""
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- validators
def _check_model(name: str) -> str:
    from .models.registry import list_models, resolve_model_name

    try:
        return resolve_model_name(name)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{_one_line(err)} Accepted: {', '.join(list_models())}") from None


def _check_attention(name: Optional[str]) -> Optional[str]:
    if name is None or name.lower() == "none":
        return None
    from .attention import resolve_attention_name

    try:
        return resolve_attention_name(name)
    except (ValueError, TypeError) as err:
        raise UsageError(_one_line(err)) from None


def _check_dataset(name: str) -> str:
    from .data.datasets import resolve_dataset_name

    try:
        return resolve_dataset_name(name)[0]
    except (ValueError, TypeError) as err:
        raise UsageError(_one_line(err)) from None


def _check_writable_dir(path: str, what: str = "--out") -> Path:
    """Check that `path` is a writable folder or can be made one, without making it: a probe file
    is written and removed in the folder, or in its nearest existing parent. The command makes
    the folder when its work starts, so a command refused later leaves no folder behind."""
    folder = Path(path)
    if folder.is_symlink() and not folder.exists():
        raise UsageError(f"{what} {path!r} is a link to a missing path ({os.readlink(folder)!r}); expected a "
                         "writable folder")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{what} {path!r} exists and is not a folder; expected a writable folder")
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{what} {path!r} cannot be made: {str(existing)!r} is not a folder")
    try:
        probe = existing / f".attnlab-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"{what} {path!r} is not a writable folder ({existing}: {err.strerror or err})") from None
    return folder


def _check_outside_checkpoints(path: str, checkpoint_file: Path, what: str = "--out") -> None:
    """Refuse an output at or inside the folder holding the checkpoint read: a file written there
    could replace the checkpoint itself (`export --force`) or be taken for one by rotation."""
    folder = checkpoint_file.resolve().parent
    out = Path(path).resolve()
    if out == folder or folder in out.parents:
        raise UsageError(f"{what} {path!r} is inside the checkpoint folder {str(folder)!r} being read; expected a "
                         "path outside it")


def _check_device(name: str, what: str = "--device") -> str:
    """`name` if it names a device that is present (train.device.resolve_device), else one line
    naming it and the available devices."""
    from .train.device import resolve_device

    try:
        resolve_device(name)
    except (ValueError, TypeError) as err:
        raise UsageError(f"{what}: {_one_line(err)}") from None
    return name


def _parse_json_dict(text: Optional[str], what: str) -> dict:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except RecursionError:
        raise UsageError(f"{what} is nested too deeply; expected a JSON object like '{{\"reduction\": 8}}'") from None
    except json.JSONDecodeError as err:
        raise UsageError(f"{what} must be a JSON object like '{{\"reduction\": 8}}', got {text!r} ({err.msg})") from None
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object, got {text!r}")
    return value


def _check_model_takes_data(config):
    """Build the model of TrainConfig `config` for its dataset's shape, push one zero image
    through it and return it."""
    import torch

    from .data.datasets import dataset_info
    from .train.loading import build_model

    model_name, dataset = config.model, config.dataset
    info = dataset_info(dataset, config.image_size)
    chans, (h, w) = info["in_chans"], info["image_size"]
    try:
        model = build_model(config, info["num_classes"] or 2, chans)
    except (ValueError, TypeError) as err:
        raise UsageError(f"cannot build model {model_name!r}: {_one_line(err)}") from None
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(2, chans, h, w))
    except (ValueError, RuntimeError) as err:
        min_size = getattr(model, "min_size", None)
        need = f"; it needs H, W >= {min_size}" if min_size else ""
        raise UsageError(f"model {model_name!r} cannot take dataset {dataset!r} images of shape ({chans}, {h}, {w})"
                         f"{need}; pass --image-size to resize ({_one_line(err)[:200]})") from None
    return model


def _check_settings_used(config, given: dict, model) -> None:
    """Refuse a setting the user gave (`given`: {TrainConfig field: where it was given}) that has
    no effect in `config` with its built `model` (TrainConfig.unused_settings): a flag typed
    and silently ignored would make a run other than the one asked for."""
    unused = config.unused_settings(model)
    for name, where in given.items():
        if name in unused:
            raise UsageError(f"train: {where} has no effect: {unused[name]}; leave it out")


# ---------------------------------------------------------------------------- list
LIST_KINDS = ("models", "attention", "datasets")
LIST_ALIASES = {"model": "models", "attentions": "attention", "dataset": "datasets"}


def _list_pattern(pattern: Optional[str]) -> str:
    """A shell-style pattern; a bare word (no * ? [) matches anywhere in the name: se -> *se*."""
    if pattern is None:
        return "*"
    pattern = pattern.lower()
    return pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"


def _unknown_kind(what: str) -> UsageError:
    import difflib

    close = difflib.get_close_matches(what.lower(), [*LIST_KINDS, *LIST_ALIASES], n=1, cutoff=0.6)
    hint = f"did you mean {LIST_ALIASES.get(close[0], close[0])!r}? " if close else ""
    return UsageError(f"list: unknown kind {what!r}; {hint}accepted: {', '.join(LIST_KINDS)}")


def cmd_list(args) -> int:
    from .attention import list_attention
    from .data.datasets import list_datasets
    from .models import list_models

    kinds = {"models": list_models, "attention": list_attention, "datasets": list_datasets}
    what, pattern = args.what, args.pattern
    if what is not None:
        what = LIST_ALIASES.get(what.lower(), what.lower())
    if what is not None and what not in kinds:
        if pattern is not None:
            raise _unknown_kind(args.what)
        what, pattern = None, args.what          # `attnlab list '*resnet*'` or `attnlab list resnet`
    if args.details and what != "models":
        raise UsageError("list: --details describes models only: attnlab list models [PATTERN] --details")
    glob = _list_pattern(pattern)
    found = {kind: [n for n in kinds[kind]() if fnmatch.fnmatchcase(n.lower(), glob)]
             for kind in ([what] if what else list(kinds))}
    if not any(found.values()):
        if what is None and pattern is not None and not any(c in pattern for c in "*?["):
            import difflib                       # `attnlab list modelz`: a kind's typo, not a name
            if difflib.get_close_matches(pattern.lower(), [*LIST_KINDS, *LIST_ALIASES], n=1, cutoff=0.6):
                raise _unknown_kind(pattern)
        read_as = f" (read as {glob!r})" if glob != pattern else ""
        where = f"nothing in {what}" if what else "no model, attention or dataset"
        raise UsageError(f"list: {where} matches {pattern!r}{read_as}; `attnlab list{' ' + what if what else ''}` "
                         "lists them all")
    for kind, names in found.items():
        if what is None:
            if pattern is not None and not names:
                continue                         # a pattern over every kind: only the kinds it matches
            print(f"{kind} ({len(names)}):")
            print("".join(f"  {n}\n" for n in names), end="")
        elif kind == "models" and args.details:
            from .models import describe_model

            for n in names:
                print(n + "".join(f"\n  {key}: {value}" for key, value in describe_model(n).items()))
        else:
            print("\n".join(names))
    return 0


# ---------------------------------------------------------------------------- train
TRAIN_FLAGS = {  # flag dest -> TrainConfig field (flags default to None = keep the config's value)
    "model": "model", "attention": "attention", "attention_position": "attention_position",
    "dataset": "dataset", "data_dir": "data_dir", "epochs": "epochs", "batch_size": "batch_size",
    "eval_batch_size": "eval_batch_size", "optimizer": "optimizer", "lr": "lr", "momentum": "momentum",
    "weight_decay": "weight_decay", "schedule": "schedule", "gamma": "gamma", "warmup_epochs": "warmup_epochs",
    "label_smoothing": "label_smoothing", "seed": "seed", "stn_lr_scale": "stn_lr_scale",
    "max_bad_steps": "max_bad_steps", "checkpoint_every": "checkpoint_every",
    "checkpoint_every_steps": "checkpoint_every_steps", "keep_checkpoints": "keep_checkpoints",
    "device": "device", "num_workers": "num_workers", "threads": "threads", "nesterov": "nesterov", "deterministic": "deterministic",
    "channels_last": "channels_last", "amp": "amp", "compile": "compile", "sync_bn": "sync_bn",
    "precision": "precision",
}
LIST_FLAGS = {"attention_stages": "attention_stages", "milestones": "milestones"}   # nargs="+": lists


def _flag_text(dest: str, value) -> str:
    """The flag of argparse destination `dest` as typed: '--gamma 0.5', '--no-nesterov'."""
    flag = "--" + dest.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else "--no-" + flag[2:]
    return " ".join([flag, *map(str, value if isinstance(value, list) else [value])])


def _train_config(args):
    """The TrainConfig of `attnlab train`: the --config file, overridden by the flags, validated
    once by TrainConfig (types, then values), then the names checked against the registries."""
    from .train.config import TrainConfig, check_field_types, read_yaml_mapping

    base: dict = {}
    if args.config:
        try:
            base = read_yaml_mapping(args.config, "--config")
            # each key of the file on its own, a null included: a flag overriding it must not hide it
            check_field_types({k: v for k, v in base.items() if not (k == "augment" and v is None)},
                              f"--config {args.config!r}: ")
        except (ValueError, TypeError) as err:
            raise UsageError(_one_line(err)) from None
    defaults = TrainConfig()
    args.given = {name: f"--config {args.config!r} key {name}: {value!r}" for name, value in base.items()
                  if hasattr(defaults, name) and value != getattr(defaults, name) and name != "augment"}
    if args.device is not None:
        _check_device(args.device)
    for dest, name in (*TRAIN_FLAGS.items(), *LIST_FLAGS.items()):
        value = getattr(args, dest)
        if value is not None:
            base[name] = value
            args.given[name] = _flag_text(dest, value)
    if args.attention is not None and args.attention.lower() == "none":
        base["attention"] = None
    if args.attention_kwargs is not None:
        base["attention_kwargs"] = _parse_json_dict(args.attention_kwargs, "--attention-kwargs")
        args.given["attention_kwargs"] = _flag_text("attention_kwargs", args.attention_kwargs)
    if args.model_kwargs is not None:
        base["model_kwargs"] = _parse_json_dict(args.model_kwargs, "--model-kwargs")
    if args.image_size is not None:
        base["image_size"] = args.image_size[0] if len(args.image_size) == 1 else list(args.image_size)
    augment = base.get("augment")
    augment = {} if augment is None else augment       # `augment:` left empty in YAML
    flags = {k: v for k, v in (("crop_padding", args.crop_padding), ("flip", args.flip)) if v is not None}
    base["augment"] = {**augment, **flags} if isinstance(augment, dict) else augment   # a wrong type: TrainConfig names it
    if "model" not in base:
        raise UsageError("train: --model is required (see attnlab list models)")
    if "dataset" not in base:
        raise UsageError("train: --dataset is required (see attnlab list datasets)")
    try:
        config = TrainConfig.from_dict(base)
    except (ValueError, TypeError) as err:
        raise UsageError(_one_line(err)) from None
    _check_model(config.model)
    _check_dataset(config.dataset)
    _check_device(config.device)
    attention = _check_attention(config.attention)
    return config if attention == config.attention else config.replace(attention=attention)


def cmd_train(args) -> int:
    from .data.datasets import DatasetError
    from .io.checkpoint import CheckpointError, RunWriteError, list_checkpoints
    from .io.run_folder import RUN_FILES
    from .train.distributed import launched_by_torchrun
    from .train.trainer import NonFiniteLossError, Trainer, TrainingInterrupted

    config = _train_config(args)
    _check_launch_environment()
    if not launched_by_torchrun():   # another run writing there: say so first
        _refuse_folder_in_use(args.out)
    out = _check_writable_dir(args.out)
    if not args.resume and list_checkpoints(out):
        raise UsageError(f"--out {args.out!r} already holds a run's checkpoints; add --resume to continue it "
                         "or choose another folder")
    if args.resume and not list_checkpoints(out):
        raise UsageError(f"--resume: no checkpoint in {out / 'checkpoints'} to continue from")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if not args.resume and found:   # a run kept without checkpoints, or one cut before its first
        raise UsageError(f"--out {args.out!r} holds another run's files ({', '.join(found)}), which this run would "
                         "replace; choose another folder")
    _check_settings_used(config, args.given, _check_model_takes_data(config))
    from .train.distributed import init_distributed, shutdown_distributed

    try:  # under torchrun: join the process group (NCCL on GPUs, gloo on CPU); alone: nothing changes
        context = init_distributed(config.device)
    except (ValueError, RuntimeError) as err:
        raise UsageError(f"torchrun environment: {_one_line(err)}") from None
    try:  # the Trainer checks what needs the data and the machine (threads, crop padding) before fit writes
        trainer = Trainer(config, out, progress=not args.no_progress)
    except (ValueError, TypeError) as err:
        shutdown_distributed()
        raise UsageError(_one_line(err)) from None
    try:
        result = trainer.fit(resume=args.resume)
    except (DatasetError, CheckpointError) as err:
        raise UsageError(_one_line(err)) from None
    except TrainingInterrupted as err:
        print(f"attnlab train: {_one_line(str(err).split('; resume with:')[0])}; resume with: "
              f"{_resume_command(args)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (NonFiniteLossError, RunWriteError) as err:
        print(f"attnlab train: error: {_one_line(err)}", file=sys.stderr)
        return 1
    finally:
        shutdown_distributed()
    if context.is_main:
        print(json.dumps({k: result[k] for k in ("test_acc", "test_loss", "params", "epochs", "seconds")}))
        print(f"run folder: {out}")
    return 0


def _check_launch_environment() -> None:
    """torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK) all set and consistent, or none set;
    one line naming the bad one otherwise (train.distributed.check_launch_environment)."""
    from .train.distributed import check_launch_environment

    try:
        check_launch_environment()
    except ValueError as err:
        raise UsageError(f"torchrun environment: {_one_line(err)}") from None


def _refuse_folder_in_use(folder: str) -> None:
    """Refuse run folder `folder` when another live run holds its lock, writing nothing there:
    the lock file is only opened when it exists (a holder always has it), and taken shared, which
    a writer's exclusive lock refuses; only then is the writer's lock asked for its holder."""
    from .io.checkpoint import CheckpointError
    from .io.run_folder import LOCK_NAME, lock_run_folder

    try:
        import fcntl
    except ImportError:   # no flock: no lock either (io.run_folder)
        return
    lock_file = Path(folder) / LOCK_NAME
    if not lock_file.is_file() or lock_file.is_symlink():
        return
    try:
        fd = os.open(lock_file, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return   # unreadable: the Trainer's own lock names the problem before it writes
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return   # free
    except OSError:
        pass
    finally:
        os.close(fd)
    try:   # held: the writer's lock refuses too, before writing, and names the holder
        lock_run_folder(folder).release()
    except CheckpointError as err:
        raise UsageError(_one_line(err)) from None


def _resume_command(args) -> str:
    """The exact command that continues this run: the same arguments plus --resume."""
    import shlex

    argv = list(getattr(args, "argv", None) or ["train", "...", "--out", str(args.out)])
    return shlex.join(["attnlab", *argv, *([] if "--resume" in argv else ["--resume"])])


# ---------------------------------------------------------------------------- eval
def cmd_eval(args) -> int:
    from .data.datasets import DatasetError, dataset_info, load_dataset
    from .train import CheckpointError, load_checkpoint
    from .train import evaluate, load_trained

    if args.batch_size is not None and args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset = _check_dataset(args.dataset) if args.dataset else None
    try:
        ckpt = load_checkpoint(args.checkpoint, needs="run")
    except CheckpointError as err:
        raise UsageError(_one_line(err)) from None
    data_state = ckpt.state.get("data", {})
    config = ckpt.state.get("config", {})
    dataset = dataset or config.get("dataset")
    image_size = config.get("image_size")
    info = dataset_info(dataset, image_size)
    if info["in_chans"] != data_state.get("in_chans"):
        raise UsageError(f"dataset {dataset!r} has {info['in_chans']} channel(s) but the checkpoint's model takes "
                         f"{data_state.get('in_chans')}")
    if info["num_classes"] is not None and info["num_classes"] != data_state.get("num_classes"):
        raise UsageError(f"dataset {dataset!r} has {info['num_classes']} classes but the checkpoint's model predicts "
                         f"{data_state.get('num_classes')}")
    try:
        model, _ = load_trained(ckpt.path)
        data = load_dataset(dataset, args.data_dir or config.get("data_dir"), image_size=image_size)
    except (DatasetError, CheckpointError) as err:
        raise UsageError(_one_line(err)) from None
    if data.num_classes != data_state.get("num_classes"):
        raise UsageError(f"dataset {dataset!r} has {data.num_classes} classes but the checkpoint's model predicts "
                         f"{data_state.get('num_classes')}")
    try:
        source = data.test_x if data.in_memory else data.test_set
        result = evaluate(model, source, data.test_y, args.batch_size or 512, "cpu",
                          data_state.get("mean"), data_state.get("std"))
    except ValueError as err:
        raise UsageError(f"model cannot evaluate dataset {dataset!r}: {_one_line(err)}") from None
    print(json.dumps({"checkpoint": str(ckpt.path), "dataset": dataset, "test_acc": result["acc"],
                      "test_loss": result["loss"], "count": result["count"]}))
    return 0


# ---------------------------------------------------------------------------- compare / report / explain
def cmd_compare(args) -> int:
    models = [_check_model(m) for m in args.models] if args.models else None
    attentions = None
    if args.attentions:
        attentions = [a if a.lower() == "none" else _check_attention(a) for a in args.attentions]
    dataset = _check_dataset(args.dataset) if args.dataset else None
    try:
        from . import study
    except ImportError as err:
        raise UsageError(f"compare is not available in this installation ({err})") from None
    if args.preset is not None:
        presets = study.list_presets()
        if args.preset not in presets:
            raise UsageError(f"unknown preset {args.preset!r}; accepted: {', '.join(presets)}")
    if args.resume is not None:
        if args.out is not None:
            raise UsageError(f"compare: --out {args.out!r} cannot be combined with --resume: a resumed study stays in "
                             "its own folder")
        if not Path(args.resume).is_dir():
            raise UsageError(f"compare: --resume {args.resume!r} is not a folder; expected a study folder made by "
                             "`attnlab compare`")
    else:
        _check_writable_dir(args.out or "runs")
    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"compare: --jobs {args.jobs} is not a positive number of runs at once")
    _check_launch_environment()
    from .data.datasets import DatasetError
    from .io.checkpoint import CheckpointError
    from .train.distributed import current_context, shutdown_distributed
    from .train.trainer import NonFiniteLossError

    changes = dict(preset=args.preset, models=models, attentions=attentions, seeds=args.seeds, epochs=args.epochs,
                   dataset=dataset, precision=args.precision, compile=args.compile)
    try:  # every variant, seed, model shape, the device and the data, checked before any work
        plan = None
        if args.resume is None or any(v is not None for v in changes.values()):
            plan = study.plan_compare(**changes, data_dir=args.data_dir)
        if args.resume is not None:   # the folder's own plan, checked the same way; a changed study is refused
            plan = study.open_study(args.resume, plan, data_dir=args.data_dir)[1]
    except (ValueError, TypeError) as err:
        raise UsageError(f"compare: {_one_line(err)}") from None
    try:  # under torchrun run_compare spreads the runs over the ranks; rank 0 writes the report
        folder = study.run_compare(plan=plan, out_root=args.out or "runs", resume=args.resume, workers=args.jobs,
                                   progress=False if args.no_progress else _progress_line)
        is_main = current_context().is_main
    except (DatasetError, CheckpointError) as err:   # the same line whether the run failed here or in a worker
        raise UsageError(_one_line(err)) from None
    except NonFiniteLossError as err:                 # a run diverged: what train says, for that run
        print(f"attnlab compare: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except study.StudyInterrupted as err:
        print(f"attnlab compare: {_one_line(err)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        shutdown_distributed()
    if is_main:
        print(folder)
    return 0


def cmd_report(args) -> int:
    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"report: RUN_DIR {args.run_dir!r} is not a folder; expected a run folder made by "
                         "`attnlab compare`")
    from .report import build_report
    from .report.builder import read_run_folder

    try:  # every file the report reads, checked before any work
        read_run_folder(run_dir)
    except (ValueError, TypeError) as err:
        raise UsageError(f"report: {_one_line(err)}") from None
    print(build_report(run_dir))
    return 0


def cmd_bench(args) -> int:
    from .attention import resolve_attention_name
    from .models.registry import resolve_model_name

    try:  # names first: a typo costs one line, not a half-run benchmark
        models = [resolve_model_name(m) for m in args.models] if args.models else None
        attentions = None
        if args.attentions:
            attentions = [None if a == "none" else resolve_attention_name(a) for a in args.attentions]
    except ValueError as err:
        raise UsageError(f"bench: {err}") from None
    _check_device(args.device)
    if args.out:
        _check_writable_dir(args.out)
    from .measure.bench import BenchArgumentError, format_markdown, run_bench, write_results

    command = "attnlab " + " ".join(args.argv)
    try:  # every argument (sizes, batches, repeats, each model at the image size) is checked before any timing
        rows = run_bench(models=models, attentions=attentions, batch_sizes=tuple(args.batch_sizes),
                         image_size=args.image_size, repeats=args.repeats, device=args.device,
                         reference=args.reference, command=command, progress=_progress_line)
    except BenchArgumentError as err:
        raise UsageError(_one_line(err).replace("run_bench: ", "bench: ", 1)) from None
    except RuntimeError as err:
        raise _memory_refusal(err, f"bench: --batch-sizes {' '.join(map(str, args.batch_sizes))} at --image-size "
                                   f"{args.image_size or 'native'}", "smaller batches or images") from None
    if args.out:
        for path in write_results(rows, args.out, command=command):
            print(path)
    else:
        print(format_markdown(rows, command=command))
    return 0


def cmd_explain(args) -> int:
    from .train import CheckpointError, load_checkpoint

    try:  # verify the hash before any work (a damaged or foreign file gets one line, exit 2)
        ckpt = load_checkpoint(args.checkpoint, needs="run")
    except CheckpointError as err:
        raise UsageError(_one_line(err)) from None
    dataset = _check_dataset(args.dataset) if args.dataset else None
    _check_outside_checkpoints(args.out, ckpt.path)
    _check_writable_dir(args.out)
    from .data.datasets import DatasetError
    from .explain import explain_checkpoint

    try:
        paths = explain_checkpoint(args.checkpoint, args.out, dataset=dataset, data_dir=args.data_dir,
                                   evidence=args.html, html=args.html)
    except DatasetError as err:
        raise UsageError(_one_line(err)) from None
    for path in paths:
        print(path)
    return 0


# ---------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .deploy.export import ExportError, check_destination, check_format, check_suffix, export
    from .train import CheckpointError, load_checkpoint, load_trained

    if args.batch < 1:
        raise UsageError(f"--batch must be >= 1, got {args.batch}")
    try:
        check_format(args.format)
        check_destination(check_suffix(args.out, args.format), args.force, "--out")
        ckpt = load_checkpoint(args.checkpoint, needs="run")
    except (ValueError, TypeError, ModuleNotFoundError, CheckpointError) as err:
        hint = " (add --force to replace it)" if "already exists" in str(err) else ""
        raise UsageError(_one_line(err) + hint) from None
    _check_outside_checkpoints(args.out, ckpt.path)
    try:
        model, config = load_trained(ckpt.path)
    except CheckpointError as err:
        raise UsageError(_one_line(err)) from None
    import torch

    data = model.data_info
    shape = (args.batch, data["in_chans"], *data["image_size"])
    metadata = {"attnlab_model": config.model, "checkpoint": str(ckpt.path), "input_size": json.dumps(shape[1:]),
                "mean": json.dumps(data.get("mean")), "std": json.dumps(data.get("std")),
                "classes": json.dumps(data.get("classes"))}
    try:
        example = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        result = export(model, example, args.out, args.format, overwrite=args.force, metadata=metadata)
    except ExportError as err:
        print(f"attnlab: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:
        raise _memory_refusal(err, f"export: --batch {args.batch} (an input of shape {shape}, {_gib(shape)} GiB of "
                                   "float32, and the model's activations on it)",
                              "a smaller --batch (the file's batch dimension is dynamic)") from None
    print(json.dumps({"checkpoint": str(ckpt.path), **result.as_dict()}))
    return 0


def _memory_refusal(err: RuntimeError, what: str, expected: str) -> UsageError:
    """The one-line refusal of sizes `what` when `err` is torch failing to allocate memory (CPU or
    GPU: a limit of the sizes the user asked for, not a fault); any other error is raised again."""
    if not _is_allocation_failure(err):
        raise err
    return UsageError(f"{what} does not fit in memory ({_allocation_text(err)}); expected {expected}")


def _allocation_text(err: BaseException) -> str:
    """What a failed allocation asked for, short: 'tried to allocate 36,000.0 GB' when torch says
    how many bytes, else the end of its message."""
    import re

    found = re.search(r"tried to allocate (\d+) bytes", str(err))
    if found:
        return f"tried to allocate {int(found.group(1)) / 1e9:,.1f} GB"
    return _one_line(err)[-120:]


def _is_allocation_failure(err: BaseException) -> bool:
    """Whether `err` is torch failing to allocate memory, on the CPU or a GPU."""
    import torch

    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or (
        isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()))


def _gib(shape) -> str:
    """The size of a float32 tensor of `shape`, in GiB, as text."""
    count = 1
    for size in shape:
        count *= int(size)
    return f"{count * 4 / 2**30:,.1f}"


# ---------------------------------------------------------------------------- parser
def _integer(text: str) -> int:
    """An integer flag's value: an int of at most COUNT_MAX (2**31 - 1) in size, the largest count
    the libraries below take; lower bounds are the command's own checks."""
    from .train.config import COUNT_MAX

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if abs(value) > COUNT_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is out of range; expected an integer up to 2**31 - 1 = "
                                         f"{COUNT_MAX}")
    return value


def _seed(text: str) -> int:
    """A seed flag's value: an int in 0 .. SEED_MAX (train.config.check_seed)."""
    from .train.config import check_seed

    try:
        return check_seed(int(text))
    except ValueError as err:
        reason = str(err) if text.strip().lstrip("+-").isdigit() else f"expected an integer, got {text!r}"
        raise argparse.ArgumentTypeError(reason) from None


def _config_default(name: str) -> str:
    """TrainConfig's default for field `name`, as the help shows it (switches as on / off): the
    train flags default to None so that a --config file can set them, and help names the value
    the run then gets."""
    import dataclasses

    from .train.config import TrainConfig

    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            if isinstance(value, bool):
                return "on" if value else "off"
            return str(value)
    raise KeyError(f"TrainConfig has no field {name!r}")


LIST_HELP = """\
examples:
  attnlab list                      every model, attention mechanism and dataset
  attnlab list models               every model
  attnlab list models se            models whose name contains 'se' (a bare word means *se*)
  attnlab list '*resnet5*'          names of any kind matching the shell-style pattern
"""


def build_parser() -> argparse.ArgumentParser:
    from .deploy.export import FORMATS as EXPORT_FORMATS
    from .measure.bench import RESNET_ATTENTIONS, RESNET_DEFAULTS
    from .models.layers import RESIDUAL_POSITIONS
    from .attention import list_attention
    from .study import DEFAULT_PRESET, list_presets
    from .train.precision import PRECISIONS
    from .train.trainer import COMPILE_MIN_STEPS

    d = _config_default
    parser = _Parser(prog="attnlab", description="What does attention buy a convolutional network? "
                     "Run `attnlab COMMAND --help` for a command's flags.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("list", help="list models, attention mechanisms or datasets", epilog=LIST_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", nargs="?", metavar="KIND",
                   help=f"one of {', '.join(LIST_KINDS)} (default: all three); a pattern in this place "
                        "lists the matching names of every kind")
    p.add_argument("pattern", nargs="?", metavar="PATTERN",
                   help="shell-style pattern, e.g. '*resnet*'; a bare word without * ? [ matches anywhere in "
                        "the name ('se' is read as '*se*'); case-insensitive (default: every name)")
    p.add_argument("--details", action="store_true",
                   help="with `list models`: each model's data config (pretrained_cfg: input size, mean, std, "
                        "interpolation, crop, first conv, classifier, paper) and feature stages (default: off, names only)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("train", help="train one model", description="Train one model and write its run folder "
                       "(config.yaml, metrics.jsonl, final.json, checkpoints/). Flags override --config; a flag "
                       "left out keeps TrainConfig's default, shown as (default: ...).")
    p.add_argument("--config", help="YAML file of TrainConfig fields; flags given here override it (default: none)")
    p.add_argument("--model", help="model name, e.g. resnet20 (`attnlab list models` shows them all); required "
                                   "unless --config sets it")
    p.add_argument("--attention", help=f"attention mechanism: {', '.join(list_attention())} (`attnlab list "
                                       "attention` lists them), or 'none' (default: none)")
    p.add_argument("--attention-kwargs", metavar="JSON",
                   help="the mechanism's settings as a JSON object, e.g. '{\"reduction\": 8}' "
                        f"(default: {d('attention_kwargs')}, the mechanism's own defaults)")
    p.add_argument("--attention-stages", type=_integer, nargs="+", metavar="STAGE",
                   help="stages that get attention, numbered from 1 in forward order (default: every stage)")
    p.add_argument("--attention-position", choices=RESIDUAL_POSITIONS,
                   help="where inside a residual block: standard (residual branch, before the addition), pre "
                        "(block input), post (after the addition), identity (on the shortcut); families "
                        f"without residual blocks accept post only (default: {RESIDUAL_POSITIONS[0]} in residual "
                        "blocks, post elsewhere)")
    p.add_argument("--model-kwargs", metavar="JSON",
                   help="extra model arguments as a JSON object, e.g. '{\"spatial_transformer\": true}' "
                        f"(default: {d('model_kwargs')})")
    p.add_argument("--dataset", help="dataset name, e.g. digits (`attnlab list datasets` shows them all); required "
                                     "unless --config sets it")
    p.add_argument("--data-dir", help="folder holding the dataset's files, for datasets read from disk "
                                      "(default: none; built-in sets need none)")
    p.add_argument("--image-size", type=_integer, nargs="+", metavar="PIXELS",
                   help="H [W]: resize images to H x W, one number for a square (default: the dataset's native "
                        "size)")
    p.add_argument("--epochs", type=_integer, help=f"training epochs (default: {d('epochs')})")
    p.add_argument("--batch-size", type=_integer,
                   help=f"training batch, per process under torchrun (default: {d('batch_size')})")
    p.add_argument("--eval-batch-size", type=_integer, help=f"test-set batch (default: {d('eval_batch_size')})")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help=f"sgd or adamw (default: {d('optimizer')})")
    p.add_argument("--lr", type=float, help=f"peak learning rate (default: {d('lr')})")
    p.add_argument("--momentum", type=float, help=f"SGD momentum (default: {d('momentum')})")
    p.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=None,
                   help=f"Nesterov momentum for SGD (default: {d('nesterov')})")
    p.add_argument("--weight-decay", type=float, help=f"weight decay (default: {d('weight_decay')})")
    p.add_argument("--schedule", choices=("cosine", "step", "constant"),
                   help="learning-rate schedule: cosine (down to 0), step (times --gamma at each of --milestones) "
                        f"or constant (default: {d('schedule')})")
    p.add_argument("--milestones", type=float, nargs="+", metavar="EPOCH",
                   help="epochs at which the step schedule multiplies the rate by --gamma (default: none)")
    p.add_argument("--gamma", type=float, help=f"factor of the step schedule (default: {d('gamma')})")
    p.add_argument("--warmup-epochs", type=float,
                   help=f"epochs of linear learning-rate warm-up from 0 (default: {d('warmup_epochs')})")
    p.add_argument("--label-smoothing", type=float,
                   help=f"label smoothing of the cross-entropy (default: {d('label_smoothing')})")
    p.add_argument("--crop-padding", type=_integer,
                   help="random-crop padding in pixels, 0 = no crop (default: the dataset's own setting)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default: the dataset's own setting)")
    p.add_argument("--seed", type=_seed,
                   help=f"seed of weights, data order and augmentation (default: {d('seed')})")
    p.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="deterministic algorithms; a resumed CPU run then ends bit-identical "
                        f"(default: {d('deterministic')})")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last memory format (default: on)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help=f"float16 autocast with a GradScaler, CUDA only (default: {d('amp')})")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the training forward (default: auto, on for runs of at least "
                        f"{COMPILE_MIN_STEPS:,} steps: compiling costs about a minute on a CPU and a compiled ResNet-20 "
                        "step gained 4-13%% there, repaid after 1,100-3,000 steps; shorter runs would lose time)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="arithmetic of training: auto = bf16 where the hardware runs it natively and a probe "
                        "confirms it is faster (GPUs from Ampere, CPUs with AMX / AVX-512 BF16), fp16 with loss "
                        f"scaling on older GPUs, fp32 otherwise (default: {d('precision')})")
    p.add_argument("--sync-bn", action=argparse.BooleanOptionalAction, default=None,
                   help=f"under torchrun: BatchNorm statistics over all ranks (default: {d('sync_bn')})")
    p.add_argument("--stn-lr-scale", type=float, help="learning-rate multiplier of spatial-transformer "
                                                      f"localisation networks (default: {d('stn_lr_scale')})")
    p.add_argument("--max-bad-steps", type=_integer,
                   help=f"steps with a non-finite loss to skip before stopping (default: {d('max_bad_steps')})")
    p.add_argument("--checkpoint-every", type=_integer, metavar="EPOCHS",
                   help=f"write a checkpoint every N epochs; 0 = only at the end (default: {d('checkpoint_every')})")
    p.add_argument("--checkpoint-every-steps", type=_integer, metavar="STEPS",
                   help=f"also every N optimizer steps; 0 = off (default: {d('checkpoint_every_steps')})")
    p.add_argument("--keep-checkpoints", type=_integer, metavar="N",
                   help=f"checkpoints kept: the newest N plus the best (default: {d('keep_checkpoints')})")
    p.add_argument("--device", help=f"auto, cpu, cuda or cuda:N; auto = cuda when available (default: "
                                    f"{d('device')})")
    p.add_argument("--num-workers", type=_integer, help="DataLoader workers for datasets decoded from image files "
                                                   f"(default: {d('num_workers')})")
    p.add_argument("--threads", type=_integer, help="torch threads while training; 1 is often faster on a busy machine "
                                               "(default: torch's own choice)")
    p.add_argument("--out", required=True, help="run folder, created if missing; required")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --out (default: off, a new run)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress on stderr (default: progress shown: a bar on a terminal, one line per epoch "
                        "always)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a checkpoint on a dataset's test split")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, its checkpoints/ folder or one ckpt-*.json file; required")
    p.add_argument("--dataset", help="dataset to test on (default: the dataset it was trained on)")
    p.add_argument("--data-dir", help="folder of the dataset's files (default: the one it was trained with)")
    p.add_argument("--batch-size", type=_integer, default=512, help="test batch (default: %(default)s)")
    p.set_defaults(func=cmd_eval)

    presets = list_presets()
    p = sub.add_parser("compare", help="train many variants over seeds and tabulate them",
                       description="Train every variant over every seed with one recipe, measure each variant's "
                                   "cost, explain the first seed, and write a report into a new run folder.")
    p.add_argument("--preset", metavar="NAME",
                   help=f"a preset, one YAML file of attnlab's configs/ folder: {', '.join(presets) or 'none found'} "
                        f"(default: {DEFAULT_PRESET})")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help="models to compare (`attnlab list models`) (default: the preset's model)")
    p.add_argument("--attentions", nargs="+", metavar="ATTENTION",
                   help="attention mechanisms (`attnlab list attention`); 'none' for the baseline "
                        "(default: the preset's variants)")
    p.add_argument("--seeds", type=_seed, nargs="+", metavar="SEED",
                   help="seeds, one run each per variant (default: the preset's seeds)")
    p.add_argument("--epochs", type=_integer, help="epochs per run (default: the preset's)")
    p.add_argument("--dataset", help="dataset (`attnlab list datasets`) (default: the preset's)")
    p.add_argument("--data-dir", help="folder of the dataset's files (default: the preset's, else none)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="arithmetic of every run (default: the preset's, else auto: bf16 where the hardware runs it "
                        "natively and faster, fp16 on older GPUs, fp32 otherwise; chosen once for the whole study)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help=f"torch.compile each run (default: the preset's, else auto: runs of at least "
                        f"{COMPILE_MIN_STEPS:,} steps)")
    p.add_argument("--out", default=None, help="parent folder of the new run folder (default: runs)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue the interrupted study in RUN_DIR: finished runs are kept, cut runs continue from "
                        "their checkpoints, then costs, explanations and the report; the study itself cannot change "
                        "(--data-dir and --jobs may) (default: a new study)")
    p.add_argument("--jobs", type=_integer, metavar="N",
                   help="runs trained at once, each in its own process (default: the preset's, else one per CPU "
                        "core, 1 on a GPU; on a GPU N runs share the device)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress lines on stderr (default: off, a line per run and per phase)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("report", help="build the report of a compare run folder")
    p.add_argument("run_dir", metavar="RUN_DIR",
                   help="a run folder made by `attnlab compare` (required; no default)")
    p.set_defaults(func=cmd_report)

    default_attentions = " ".join(a or "none" for a in RESNET_ATTENTIONS)
    p = sub.add_parser("bench", help="speed, memory, FLOPs of models (and timm/torchvision twins)",
                       description="Time training and inference of models, interleaved (A B A B ...), and "
                                   "print a table with a legend (or write results.csv and results.md).")
    p.add_argument("--models", nargs="+", metavar="MODEL",
                   help=f"models (`attnlab list models`) (default: {', '.join(RESNET_DEFAULTS)} and one model "
                        "of every other family)")
    p.add_argument("--attentions", nargs="+", metavar="ATTENTION",
                   help=f"attention mechanisms, 'none' for none (default: {default_attentions} on the ResNets, "
                        "none on the others)")
    p.add_argument("--batch-sizes", type=_integer, nargs=2, default=(1, 64), metavar=("SMALL", "LARGE"),
                   help="inference batches; LARGE is also the training batch (default: 1 64)")
    p.add_argument("--image-size", type=_integer, help="input H = W (default: each model's native input size)")
    p.add_argument("--repeats", type=_integer, default=5,
                   help="interleaved rounds; ratios are summarised over them (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: %(default)s)")
    p.add_argument("--reference", action="store_true",
                   help="also time the timm/torchvision twins; needs both packages installed "
                        "(default: off)")
    p.add_argument("--out", help="folder for results.csv and results.md (default: none, print the table)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("explain", help="figures of what a trained model's attention does")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, its checkpoints/ folder or one ckpt-*.json file; required")
    p.add_argument("--out", required=True, help="folder for the figures, created if missing; required")
    p.add_argument("--dataset", help="dataset of the images explained (default: the dataset it was trained on)")
    p.add_argument("--data-dir", help="folder of the dataset's files (default: the one it was trained with)")
    p.add_argument("--html", action="store_true",
                   help="also compute class evidence (CAMs, faithfulness, randomisation test), draw each "
                        "module's map beside its CAMs (f_evidence_*.png) and write explorer.html, one "
                        "self-contained interactive page (default: off)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("export", help="write a trained model as ONNX or a torch.export program, checked",
                       description="Write a run's model (eval mode, dynamic batch dimension) as an ONNX file or a "
                                   "torch.export program (.pt2), then check the file against the model on random "
                                   "inputs (onnxruntime for ONNX, reloading for .pt2); prints one JSON line.")
    p.add_argument("--checkpoint", required=True,
                   help="run folder, its checkpoints/ folder or one ckpt-*.json file; required")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="file format; required")
    p.add_argument("--out", required=True, help="the file to write (its folder must exist); required")
    p.add_argument("--batch", type=_integer, default=1,
                   help="batch of the example input (the file's batch dimension is dynamic) (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists (default: off, refuse)")
    p.set_defaults(func=cmd_export)
    return parser


def _refuse_blank_values(args) -> None:
    """An empty or blank string given for any argument is a usage error: read as "not given", it
    would silently mean the default (`--out ''`: the current folder, `--dataset ''`: the trained one)."""
    for dest, value in vars(args).items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and not item.strip():
                flag = dest.upper() if dest in ("run_dir", "what", "pattern") else "--" + dest.replace("_", "-")
                raise UsageError(f"{args.command}: {flag} {item!r} is empty; expected a value (see attnlab "
                                 f"{args.command} --help)")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        _refuse_blank_values(args)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        return args.func(args)
    except UsageError as err:
        print(f"attnlab: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("attnlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `attnlab list models | head`: the reader has gone; stop quietly
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):   # stdout without a file descriptor (captured in tests)
            pass
        return EXIT_BROKEN_PIPE
    except OSError as err:   # a full disk, a folder made read-only mid-run: the system's reason, one line
        print(f"attnlab: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except RuntimeError as err:   # sizes asked for (a model's width, a batch) that the memory cannot hold
        if not _is_allocation_failure(err):
            raise
        print(f"attnlab: error: the sizes asked for do not fit in memory ({_allocation_text(err)}); expected "
              "a smaller model, batch or image size", file=sys.stderr)
        return EXIT_USAGE


def console_main() -> int:
    """The `attnlab` command and `python -m attnlab`: `main` in a process of attnlab's own, which
    may therefore take process-wide settings that a library call must not (malloc keeps freed
    blocks: train.process.keep_freed_memory; ATTNLAB_KEEP_FREED_MEMORY=0 leaves malloc alone)."""
    from .train.process import keep_freed_memory

    keep_freed_memory()
    return main()
