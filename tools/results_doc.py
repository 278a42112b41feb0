"""Write docs/results.md from finished run folders: the numbers are read, never typed in.

    python tools/results_doc.py --train RUN_DIR [RUN_DIR ...] --compare COMPARE_DIR [...] \
        --out docs/results.md

A `--train` folder is one `attnlab train` run (config.yaml, metrics.jsonl, final.json); a
`--compare` folder is one `attnlab compare` study as tools/keep_study.py keeps it under
docs/studies/ (results.json, compare.json, runs/*/seed*/final.json, report.md, figures/), finished
or still in progress (then the section says how many runs are done). The command that reproduces
each run is rebuilt from its config.yaml (train) or compare.json (compare). Links are relative to
the page written.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path

import yaml

from attnlab.train import TrainConfig

# TrainConfig fields and the `attnlab train` flag of each, where the value differs from the default.
_FLAGS = {"model": "--model", "attention": "--attention", "dataset": "--dataset", "image_size": "--image-size",
          "epochs": "--epochs", "batch_size": "--batch-size", "optimizer": "--optimizer", "lr": "--lr",
          "weight_decay": "--weight-decay", "schedule": "--schedule", "warmup_epochs": "--warmup-epochs",
          "label_smoothing": "--label-smoothing", "seed": "--seed"}


def train_command(config: dict, out: str) -> str:
    default = TrainConfig(model=config["model"]).to_dict()
    parts = ["attnlab", "train"]
    for key, flag in _FLAGS.items():
        value = config.get(key)
        if key in ("model", "dataset", "epochs", "seed") or (value is not None and value != default.get(key)):
            parts += [flag, " ".join(map(str, value)) if isinstance(value, list) else str(value)]
    if config.get("nesterov"):
        parts.append("--nesterov")
    augment = config.get("augment") or {}
    if "crop_padding" in augment:
        parts += ["--crop-padding", str(augment["crop_padding"])]
    parts.append("--flip" if augment.get("flip") else "--no-flip")
    return " ".join(parts + ["--out", out])


def train_section(run: Path) -> list[str]:
    config = yaml.safe_load((run / "config.yaml").read_text())
    final = json.loads((run / "final.json").read_text())
    epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lines = [f"### {config['model']} on {config['dataset']}, seed {config['seed']}", "",
             f"Command: `{train_command(config, run.name)}`", "",
             f"Test accuracy after {final['epochs']} epochs: **{100 * final['test_acc']:.2f}%** "
             f"(test loss {final['test_loss']:.4f}), {final['params']:,} parameters, "
             f"{final['seconds'] / 60:.1f} min of training.", "",
             "| epoch | train loss | train acc % | test loss | test acc % |", "|---|---|---|---|---|"]
    lines += [f"| {e['epoch']} | {e['train_loss']:.4f} | {100 * e['train_acc']:.2f} | {e['test_loss']:.4f} | "
              f"{100 * e['test_acc']:.2f} |" for e in epochs]
    return lines + [""]


def compare_section(run: Path, page_dir: Path) -> list[str]:
    """A kept study (tools/keep_study.py): what ran and on what, its table (variants without a
    finished run yet say so), the report and figures it links to."""
    results = json.loads((run / "results.json").read_text())
    plan = json.loads((run / "compare.json").read_text()) if (run / "compare.json").is_file() else {}
    finals = [json.loads(f.read_text()) for f in sorted(run.glob("runs/*/seed*/final.json"))]
    planned = len(plan.get("variants") or []) * len(plan.get("seeds") or [])
    finished = len(finals)
    status = "complete" if planned and finished >= planned else f"in progress, {finished} of {planned} runs finished"
    link = lambda p: os.path.relpath(p, page_dir)   # noqa: E731 - links relative to the page
    train = plan.get("train") or {}
    hours = sum(f.get("seconds", 0.0) for f in finals) / 3600
    machines = sorted({f.get("machine", "?") for f in finals})
    lines = [f"### `{results['preset']}` on {results['dataset']}, seeds {results['seeds']}: {status}", "",
             f"Command: `attnlab compare --preset {results['preset']}`"
             + (f" ({train.get('epochs')} epochs per run)" if train.get("epochs") is not None else "") + ". "
             f"Compute: {hours:.2f} h of training over {finished} runs on {'; '.join(machines) or 'no machine yet'}. "
             f"Its report: [{link(run / 'report.md')}]({link(run / 'report.md')}).", "",
             "| variant | runs | test acc % (mean +- std) | 95% CI | diff vs baseline (points) | 95% CI | p (Holm) | MDE |",
             "|---|---|---|---|---|---|---|---|"]
    for v in results["variants"]:
        if not v.get("n"):
            lines.append(f"| {v['variant']} | 0 | no finished run yet | | | | | |")
            continue
        diff = "baseline" if v.get("diff_mean") is None else f"{100 * v['diff_mean']:+.2f}"
        ci = "" if v.get("diff_ci_low") is None else f"[{100 * v['diff_ci_low']:+.2f}, {100 * v['diff_ci_high']:+.2f}]"
        p = v.get("p_holm") if v.get("p_holm") is not None else v.get("p_value")
        mde = "" if v.get("mde") is None else f"{100 * v['mde']:.2f}"
        std = "" if v.get("acc_std") is None else f" +- {100 * v['acc_std']:.2f}"
        acc_ci = "" if v.get("acc_ci_low") is None else f"[{100 * v['acc_ci_low']:.2f}, {100 * v['acc_ci_high']:.2f}]"
        lines.append(f"| {v['variant']} | {v['n']} | {100 * v['acc_mean']:.2f}{std} | {acc_ci} | {diff} | {ci} | "
                     f"{'' if p is None else f'{p:.3f}'} | {mde} |")
    lines += [""] + [f"- {v['sentence']}" for v in results["variants"] if v.get("sentence")] + [""]
    for name, caption in (("accuracy.png", "accuracy with 95% CI"), ("gain_vs_cost.png", "gain against cost")):
        figure = run / "figures" / name
        if figure.is_file():
            lines += [f"![{results['preset']}: {caption}]({link(figure)})", ""]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", nargs="*", default=[], type=Path)
    parser.add_argument("--compare", nargs="*", default=[], type=Path)
    parser.add_argument("--title", default="Measured results")
    parser.add_argument("--intro-file", type=Path, help="Markdown to put under the title (the reading of the numbers)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 when --out differs from what this command would write")
    args = parser.parse_args(argv)
    command = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--check"]
    lines = [f"# {args.title}", "",
             f"Generated by `python tools/results_doc.py {shlex.join(command)}` "
             "from the run folders; every figure below is read from them.", ""]
    if args.intro_file:
        lines += [args.intro_file.read_text().strip(), ""]
    for run in args.train:
        lines += train_section(run)
    for run in args.compare:
        lines += compare_section(run, args.out.resolve().parent)
    text = "\n".join(lines)
    if args.check:
        same = args.out.is_file() and args.out.read_text() == text
        print(f"{args.out}: {'up to date' if same else 'differs from what its command writes; run it again'}")
        return 0 if same else 1
    args.out.write_text(text)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
