"""The front door of the `attnlab` command: every flag of every subcommand explains itself in
--help (a description, its default, its accepted values), and `attnlab list` refuses unknown
kinds and patterns that match nothing instead of printing empty lists."""
from __future__ import annotations

import argparse
import dataclasses
import re

import pytest

from attnlab.cli import build_parser, main
from attnlab.models.layers import RESIDUAL_POSITIONS
from attnlab.study import list_presets
from attnlab.train.config import TrainConfig

# Flags whose accepted values are a fixed set the help must spell out even without argparse `choices`.
FIXED_VALUES = {
    ("compare", "--preset"): list_presets,
    ("list", "what"): lambda: ["models", "attention", "datasets"],
    ("train", "--attention-position"): lambda: list(RESIDUAL_POSITIONS),
}


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _options():
    for command, sub in _subparsers(build_parser()).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            yield command, sub, action


def _name(action) -> str:
    return action.option_strings[0] if action.option_strings else action.dest


def _help_text(sub: argparse.ArgumentParser, action) -> str:
    """The help of one action as --help prints it (with %(default)s filled in), on one line."""
    formatter = sub._get_formatter()
    return " ".join(formatter._expand_help(action).split())


def test_every_subcommand_is_there():
    assert set(_subparsers(build_parser())) == {"list", "train", "eval", "compare", "report", "bench", "explain",
                                                    "export"}


def test_every_option_has_a_help_text_that_states_its_default():
    missing, no_default = [], []
    for command, sub, action in _options():
        text = _help_text(sub, action) if action.help else ""
        if len(text) < 10:
            missing.append(f"{command} {_name(action)}")
        elif "default" not in text and "required" not in text:
            no_default.append(f"{command} {_name(action)}: {text}")
    assert not missing, f"options without a help text: {missing}"
    assert not no_default, "options whose help states neither a default nor 'required':\n" + "\n".join(no_default)


def test_flags_with_a_fixed_set_of_values_show_them():
    failures = []
    for command, sub, action in _options():
        values = list(action.choices) if action.choices else None
        if (command, _name(action)) in FIXED_VALUES:
            values = FIXED_VALUES[command, _name(action)]()
        if not values:
            continue
        shown = sub.format_help()
        text = _help_text(sub, action)
        for value in values:
            if str(value) not in text and str(value) not in shown.split("usage:")[1].split("\n\n")[0]:
                failures.append(f"{command} {_name(action)} does not show {value!r}")
    assert not failures, "\n".join(failures)
    assert set(FIXED_VALUES[("compare", "--preset")]()) >= {"quick"}       # the presets were found


def test_train_help_states_trainconfig_defaults_not_typed_numbers():
    """Each train flag that TrainConfig fills shows TrainConfig's own default value."""
    sub = _subparsers(build_parser())["train"]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    by_dest = {a.dest: a for a in sub._actions}
    checked = 0
    for name in ("epochs", "batch_size", "eval_batch_size", "lr", "momentum", "weight_decay", "seed", "gamma",
                 "warmup_epochs", "label_smoothing", "max_bad_steps", "keep_checkpoints", "checkpoint_every",
                 "stn_lr_scale", "optimizer", "schedule", "device", "num_workers", "precision"):
        text = _help_text(sub, by_dest[name])
        assert re.search(rf"\(default: {re.escape(str(defaults[name]))}\)", text), (name, defaults[name], text)
        checked += 1
    for name in ("nesterov", "deterministic", "amp", "sync_bn"):
        text = _help_text(sub, by_dest[name])
        assert f"(default: {'on' if defaults[name] else 'off'})" in text, (name, text)
    from attnlab.train.trainer import COMPILE_MIN_STEPS

    assert defaults["compile"] is None   # auto: the help says what auto does, with the Trainer's own threshold
    assert f"(default: auto, on for runs of at least {COMPILE_MIN_STEPS:,} steps" in _help_text(sub, by_dest["compile"])
    assert checked == 19


def test_attention_help_names_the_mechanisms_and_where_they_are_listed():
    import attnlab

    sub = _subparsers(build_parser())["train"]
    text = _help_text(sub, next(a for a in sub._actions if a.dest == "attention"))
    assert "attnlab list attention" in text and all(name in text for name in attnlab.list_attention())


def test_attention_position_refuses_other_values_in_one_line(capsys, tmp_path):
    code = main(["train", "--model", "resnet20", "--dataset", "digits", "--attention", "se",
                 "--attention-position", "middle", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "'middle'" in err and "identity" in err


# ------------------------------------------------------------------------------------------ list
def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_unknown_kind_names_the_closest_kind(capsys):
    for argv, close in ((["list", "modelz"], "models"), (["list", "modles", "*"], "models"),
                        (["list", "atention", "se"], "attention"), (["list", "datsets"], "datasets")):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, out, err)
        assert f"{argv[1]!r}" in err and f"did you mean {close!r}" in err, err


def test_list_bare_word_is_a_substring_pattern(capsys):
    import attnlab

    code, out, _ = run(capsys, "list", "models", "se")
    expected = [n for n in attnlab.list_models() if "se" in n]
    assert code == 0 and out.split() == expected and "se_resnet50" in expected
    code, out, _ = run(capsys, "list", "model", "SE")           # singular kind and upper case are accepted
    assert code == 0 and out.split() == expected
    code, out, _ = run(capsys, "list", "resnet20")               # one word: every kind, only kinds that match
    assert code == 0 and out.splitlines()[0].startswith("models (") and "datasets" not in out
    code, out, _ = run(capsys, "list", "attention", "s?")        # a glob stays a glob
    assert code == 0 and out.split() == ["se"]


def test_list_pattern_matching_nothing_says_so(capsys):
    for argv, hint in ((["list", "models", "zzz"], "attnlab list models"), (["list", "qqqq"], "attnlab list`"),
                       (["list", "datasets", "*nope*"], "attnlab list datasets")):
        code, out, err = run(capsys, *argv)
        assert code == 2 and out == "" and err.count("\n") == 1, (argv, out, err)
        assert repr(argv[-1]) in err and hint in err, err
    assert "read as '*zzz*'" in run(capsys, "list", "models", "zzz")[2]


def test_list_into_a_closed_pipe_stops_quietly():
    import subprocess
    import sys

    proc = subprocess.run(f"{sys.executable} -m attnlab list models | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.count("\n") == 1 and "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
