"""Write the attnlab-vs-reference section of benchmarks/RESULTS.md from the saved results.

Reads the CSV / Markdown files that bench_models.py, bench_overhead.py and profile_step.py
wrote under benchmarks/results/, computes the floors of issue 6 from the CSV rows, and replaces
(or appends) the block between `<!-- bench_models:start -->` and `<!-- bench_models:end -->`;
the other sections of RESULTS.md are left as they are.

    python benchmarks/bench_section.py --models-csv benchmarks/results/models_resnet20_focused_cpu.csv \\
        benchmarks/results/models_resnet20_focused_2threads_cpu.csv benchmarks/results/models_imagenet128_cpu.csv \\
        benchmarks/results/models_resnet20_cpu.csv benchmarks/results/models_depthwise128_cpu.csv \\
        --overhead-md benchmarks/results/overhead_resnet20_cpu.md \\
        --profile-md benchmarks/results/gate_passes_resnet20_se_*.md benchmarks/results/profile_resnet20_*.md \\
        --notes benchmarks/results/bench_notes.md
"""
from __future__ import annotations

import argparse
import csv
import os
import re

HERE = os.path.dirname(os.path.abspath(__file__))
START, END = "<!-- bench_models:start -->", "<!-- bench_models:end -->"
OVERHEAD_FLOORS = {"se": 0.08, "eca": 0.08, "cbam": 0.15}
RATIO_FLOOR, MATMUL_FLOOR = 0.97, 0.65


def read_rows(path: str) -> tuple[list[dict], list[str]]:
    """Rows of a bench CSV (numbers converted) and its '# ...' header lines."""
    with open(path) as fh:
        lines = fh.readlines()
    header = [ln[2:].strip() for ln in lines if ln.startswith("#")]
    rows = []
    for row in csv.DictReader(ln for ln in lines if not ln.startswith("#")):
        for k, v in row.items():
            if v in ("", None):
                row[k] = None
            elif v in ("True", "False"):
                row[k] = v == "True"
            else:
                try:
                    row[k] = float(v)
                except ValueError:
                    pass
        rows.append(row)
    return rows, header


def floors(rows: list[dict]) -> list[str]:
    """One Markdown table line per floor check."""
    out = ["| floor | row | measured (median over repeats) | best-of-repeats | verdict |", "|---|---|---|---|---|"]
    for r in rows:
        if r["implementation"] in ("timm", "torchvision") and r.get("ratio_train_median") is not None:
            for mode in ("train", "infer_bs1", "infer_large"):
                med, best = r.get(f"ratio_{mode}_median"), r.get(f"ratio_{mode}_best")
                if med is None:
                    continue
                out.append(f"| attnlab / reference >= {RATIO_FLOOR} ({mode}) | {r['label']} vs attnlab, "
                           f"{r['memory_format']}, {r['image_size']} | {med:.3f} "
                           f"[{r[f'ratio_{mode}_min']:.2f}, {r[f'ratio_{mode}_max']:.2f}] | {best:.3f} | "
                           f"{'met' if med >= RATIO_FLOOR else 'not met'} |")
    for r in rows:
        if r["model"] != "resnet20" or r.get("overhead_train_median") is None:
            continue
        att = r["attention"]
        if r["implementation"] == "attnlab" and att in OVERHEAD_FLOORS:
            lim = OVERHEAD_FLOORS[att]
            out.append(f"| {att} overhead <= {lim:.0%} of ResNet-20 training | {r['label']}, {r['memory_format']} | "
                       f"{r['overhead_train_median']:+.1%} [{r['overhead_train_min']:+.1%}, "
                       f"{r['overhead_train_max']:+.1%}] | {r['overhead_train_best']:+.1%} | "
                       f"{'met' if r['overhead_train_median'] <= lim else 'not met'} |")
        if r["implementation"] == "timm-modules":
            ours = next((o for o in rows if o["implementation"] == "attnlab" and o["model"] == r["model"]
                         and o["attention"] == att and o["memory_format"] == r["memory_format"]), None)
            if ours is not None and ours.get("overhead_train_median") is not None:
                a, t = ours["overhead_train_median"], r["overhead_train_median"]
                out.append(f"| {att} overhead <= timm's module | {r['memory_format']}; paired throughput "
                           f"attnlab / timm-module net {r['ratio_train_median']:.3f} | attnlab {a:+.1%} vs timm "
                           f"{t:+.1%} | attnlab {ours['overhead_train_best']:+.1%} vs timm "
                           f"{r['overhead_train_best']:+.1%} | {'met' if a <= t else 'not met'} |")
    for r in rows:
        if r["label"] == "attnlab:resnet20" and r.get("train_frac_matmul") is not None:
            out.append(f"| ResNet-20 training >= {MATMUL_FLOOR:.0%} of fp32 matmul | {r['memory_format']}, "
                       f"matmul {r['matmul_gflop_s']:.0f} GFLOP/s | {r['train_frac_matmul']:.0%} | "
                       f"{r['train_frac_matmul_best']:.0%} | "
                       f"{'met' if r['train_frac_matmul'] >= MATMUL_FLOOR else 'not met'} |")
    return out


def section(models_csv: list[str], overhead_md: list[str], profile_md: list[str], notes: list[str]) -> str:
    parts = [START, "## attnlab vs timm / torchvision: speed, memory, cost (CPU)", "",
             "Written by `python benchmarks/bench_section.py` from the result files named below; the "
             "numbers come from `benchmarks/bench_models.py`, `benchmarks/bench_overhead.py` and "
             "`benchmarks/profile_step.py` (definitions: `attnlab.measure.bench`). No GPU was lent to this "
             "run, so there are no bf16 / torch.compile rows.", ""]
    parts += ["### Floors of issue 6", ""]
    for path in models_csv:  # each run on its own: rows are only compared within their run
        rows, _ = read_rows(path)
        parts += [f"From `{os.path.basename(path)}`:", ""] + floors(rows) + [""]
    for path in notes:
        with open(path) as fh:
            parts += [fh.read().strip(), ""]
    for path in models_csv:
        md = os.path.splitext(path)[0] + ".md"
        parts += [f"### {os.path.basename(md)}", ""]
        with open(md) as fh:
            parts += [fh.read().strip(), ""]
    for path in overhead_md:
        parts += [f"### {os.path.basename(path)}: attention overhead vs batch and resolution", ""]
        with open(path) as fh:
            parts += [fh.read().strip(), ""]
    for path in profile_md:
        parts += [f"### {os.path.basename(path)}", ""]
        with open(path) as fh:
            parts += [fh.read().strip(), ""]
    parts.append(END)
    return "\n".join(parts) + "\n"


def replace_section(results_md: str, text: str) -> None:
    """Put `text` between the markers in `results_md`, or append it; other sections untouched."""
    old = ""
    if os.path.exists(results_md):
        with open(results_md) as fh:
            old = fh.read()
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END) + r"\n?", re.S)
    if pattern.search(old):
        new = pattern.sub(lambda _: text, old, count=1)
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "# Benchmark results\n\n") + text
    with open(results_md, "w") as fh:
        fh.write(new)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models-csv", nargs="+", required=True)
    p.add_argument("--overhead-md", nargs="*", default=[])
    p.add_argument("--profile-md", nargs="*", default=[])
    p.add_argument("--notes", nargs="*", default=[], help="Markdown files with the analysis, inserted after the floors")
    p.add_argument("--results-md", default=os.path.join(HERE, "RESULTS.md"))
    args = p.parse_args(argv)
    replace_section(args.results_md, section(args.models_csv, args.overhead_md, args.profile_md, args.notes))


if __name__ == "__main__":
    main()
