"""Keep a study's small files under docs/ and rebuild its report there, finished or not.

    python tools/keep_study.py RUN_DIR docs/studies/NAME

A study folder made by `attnlab compare` holds checkpoints (megabytes per run) next to the small
files that every figure and table is computed from. This copies the small ones into DEST, so that
the repository keeps the evidence and docs/ regenerates on a fresh clone without the checkpoints:
compare.json, costs.json, the explanations (explain/<variant>/: PNG figures, summary.json and the
explorer page), and of each finished run config.yaml, metrics.jsonl, final.json and
test_predictions.json. Then it
builds the report in DEST from what was copied (`attnlab.report.build_report`, nothing measured or
explained again): results.json, results.csv, report.md, report.html and figures/. Run it while a
long study is still training (between runs: unfinished runs are left out, and the report says which
variants have no finished run yet), commit DEST, and run it again as the study goes on: DEST is
replaced as a whole, so a run or figure that the study no longer has does not linger.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from attnlab.io.run_folder import FINAL_FILE
from attnlab.io.study_files import StudyFolder
from attnlab.report import build_report

RUN_FILES = ("config.yaml", "metrics.jsonl", FINAL_FILE, "test_predictions.json")
STUDY_FILES = ("compare.json", "costs.json")
EXPLAIN_SUFFIXES = (".png", ".json", ".html")   # .html: the offline explorer page the report links


def keep_study(run_dir: Path, dest: Path) -> list[Path]:
    """Copy the small files of study `run_dir` into `dest` (replaced as a whole) and build its
    report there; return the files written, relative to `dest`."""
    source = StudyFolder(run_dir)
    plan = source.read_plan()   # a folder that is not a study is refused here, before anything is written
    with tempfile.TemporaryDirectory(dir=dest.parent if dest.parent.is_dir() else None) as tmp:
        staged = Path(tmp) / dest.name
        staged.mkdir()
        for name in STUDY_FILES:
            if (source.root / name).is_file():
                shutil.copy2(source.root / name, staged / name)
        target = StudyFolder(staged)
        for v in plan.variants:
            for _, run in source.finished_runs(v.name):
                out = target.variant_dir(v.name) / run.name
                out.mkdir(parents=True)
                for name in RUN_FILES:
                    if (run / name).is_file():
                        shutil.copy2(run / name, out / name)
            explain = source.explain_dir(v.name)
            if explain.is_dir():
                for f in sorted(explain.iterdir()):
                    if f.is_file() and f.suffix in EXPLAIN_SUFFIXES:
                        target.explain_dir(v.name).mkdir(parents=True, exist_ok=True)
                        shutil.copy2(f, target.explain_dir(v.name) / f.name)
        build_report(staged, explain=False, measure=False)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), dest)
    return sorted(p.relative_to(dest) for p in dest.rglob("*") if p.is_file())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a study folder made by `attnlab compare` (finished or not)")
    parser.add_argument("dest", type=Path, help="where to keep its small files, e.g. docs/studies/NAME (replaced)")
    args = parser.parse_args(argv)
    try:
        written = keep_study(args.run_dir, args.dest)
    except ValueError as err:
        print(f"keep_study: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    size = sum((args.dest / p).stat().st_size for p in written)
    print(f"{args.dest}: {len(written)} files, {size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
