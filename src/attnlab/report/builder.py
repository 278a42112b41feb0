"""Build the effect report of a `compare` run folder: headline, setup, statistics, costs, capacity
control, figures and explanations, as Markdown and as one self-contained HTML page.

Not a paper module. Everything is recomputed from the run folder alone, so ``attnlab report
RUN_DIR`` regenerates the same report. The folder's layout and its plan (compare.json, also as
older versions wrote it) are those of `attnlab.io.study_files`: the report reads the plan
(`StudyPlan`: variants with their role = baseline | attention | capacity, seeds, input shape),
each run's final.json, metrics.jsonl, config.yaml and test_predictions.json (runs written before
it existed have none: the per-example test then says "not recorded"), costs.json (measured here
from the first checkpoint when missing) and the explanation figures of one checkpoint per variant
(made here when missing and `explain=True`).

Outputs: results.csv and results.json (one row per variant; strict JSON: a value that does not
exist is null, with a ``*_note`` saying why where it helps), report.md, report.html (rendered
from report.md by Python-Markdown, see `report.html`) and figures/*.png.

Statistics (`attnlab.measure.stats`, each with its reference in the report's method note): per
variant the mean and sample std of test accuracy over seeds and an interval that stays inside
[0, 100]% (t interval on the logit scale); per variant against its baseline, over the seeds both
share, the paired difference with a percentile bootstrap interval, the paired t-test, P(A > B)
on a new seed, the minimum detectable effect and the seeds needed, and the exact McNemar test on
the shared test set pooled over those seeds; p-values adjusted by Holm's method over the variants
compared, raw and adjusted both shown. A difference is claimed only when the interval excludes 0
and the Holm-adjusted paired test is below 0.05.

Capacity control: a variant with role ``capacity`` is the baseline made wider (width solved so
that its parameter count matches the attention variant named in its ``matches`` field); the
report compares that attention variant with it, paired over seeds, so the gain of attention is
separated from the gain of size. Every other attention variant gets one sentence: why it has no
trained matched baseline and which width would match it (``costs.json``: ``matched_width``).
"""
from __future__ import annotations

import csv
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

import numpy as np

from ..io.run_folder import FINAL_FILE, METRICS_FILE, PREDICTIONS_FILE, read_metrics
from ..io.study_files import StudyFolder, StudyPlan, read_json_object
from ..measure.stats import (BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, accuracy_interval, effect_sentence, holm,
                             mcnemar_exact, paired_comparison, supports_difference)
from ..train.config import TrainConfig, check_seed
from . import plots
from .costs import cost_entries, cost_section
from .explanations import explanation_section, write_explanations
from .format import finite, human, interval, listing, md_table, num, pct, points
from .headline import headline
from .html import markdown_to_html
from .setup import read_config, setup_section

CONFIDENCE = 0.95
POWER = 0.8


# --------------------------------------------------------------------------------------------- reading

def read_plan(run_dir) -> StudyPlan:
    """compare.json of `run_dir` (checked for what the report needs), or a plan inferred from its
    runs/<variant>/ folders when it is missing; ValueError naming the file and what was expected."""
    return StudyFolder(run_dir).read_plan()


# final.json entries the report uses: (key, required, lowest, highest)
FINAL_NUMBERS = (("test_acc", True, 0.0, 1.0), ("seconds", False, 0.0, math.inf), ("epochs", False, 0.0, math.inf))


def _read_final(path: Path) -> dict:
    """A run's final.json: an object whose test_acc is a fraction in [0, 1] (seconds and epochs
    numbers >= 0 too, when given); ValueError naming the file and the entry otherwise."""
    final = read_json_object(path, "the JSON object a finished training run writes (with its test_acc)")
    for key, required, low, high in FINAL_NUMBERS:
        value = final.get(key)
        if value is None and not required:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ValueError(f"{path}: {key} is {value!r}; expected a number in [{low}, {high}]")
    return final


def read_run_folder(run_dir) -> tuple[StudyPlan, dict, dict, dict]:
    """(plan, finals, metrics, costs) of a compare run folder, every file checked (`read_study`)."""
    return read_study(run_dir)[:4]


def read_study(run_dir) -> tuple[StudyPlan, dict, dict, dict, dict]:
    """(plan, finals, metrics, costs, predictions) of a compare run folder, every file the report
    reads checked and every file it writes found writable in kind, before any work: `finals`,
    `metrics` and `predictions` are {variant: {seed: ...}} over the finished runs (a run of the
    plan without final.json is not finished yet, and the report says so). ValueError (TypeError
    for a `run_dir` that is no path) naming the file and what was expected, or what is missing."""
    if not isinstance(run_dir, (str, Path)):
        raise TypeError(f"run_dir must be a path, got {type(run_dir).__name__} {run_dir!r}")
    folder = StudyFolder(run_dir)
    if not folder.root.is_dir():
        raise ValueError(f"run folder {str(run_dir)!r} does not exist; expected the folder `attnlab compare` printed")
    plan = folder.read_plan()
    finals, metrics, predictions = read_finished_runs(folder, plan)
    if not any(finals.values()):
        raise ValueError(f"{folder.root}: no finished run (runs/<variant>/seed<S>/{FINAL_FILE}) to report")
    if plan.baseline not in finals or not finals[plan.baseline]:
        raise ValueError(f"{folder.root}: the baseline {plan.baseline!r} has no finished run")
    return plan, finals, metrics, folder.read_costs(), predictions


def read_finished_runs(folder: StudyFolder, plan: StudyPlan) -> tuple[dict, dict, dict]:
    """(finals, metrics, predictions) of the finished runs of `plan` in `folder`, with the plan's
    recipe, every file of those runs the report reads and the kind of every path it writes checked
    (as `read_study` says; a study with no finished run yet gives empty dicts): what a resumed
    study checks before it trains, so that its report cannot fail on them afterwards."""
    _check_recipe(folder, plan)
    _check_outputs(folder)
    finals, metrics = {}, {}
    for v in plan.variants:
        finals[v.name], metrics[v.name] = read_variant_runs(folder.root, v.name, plan.seeds)
        for seed in finals[v.name]:
            read_config(folder, v.name, seed)   # a damaged config.yaml would hide a recipe that differs
    return finals, metrics, read_study_predictions(folder, finals, plan.num_classes)


def _check_recipe(folder: StudyFolder, plan: StudyPlan) -> None:
    """The plan's recipe (`train`) and seeds as TrainConfig takes them; ValueError naming compare.json."""
    try:
        TrainConfig.from_dict(plan.train or {})
        for seed in plan.seeds or []:
            check_seed(seed, "seeds entry")
    except (ValueError, TypeError) as err:
        raise ValueError(f"{folder.plan_file}: {' '.join(str(err).split())}; expected the recipe and seeds "
                         "`attnlab compare` writes") from None


def _check_outputs(folder: StudyFolder) -> None:
    """ValueError naming the first path the report writes (or makes explanations in) that exists
    but is of the other kind: a folder where a file goes, a file where a folder goes."""
    for path, is_folder in ((folder.figures_dir, True), (folder.explain_root, True), (folder.results_json, False),
                            (folder.results_csv, False), (folder.report_md, False), (folder.report_html, False),
                            (folder.costs_file, False)):
        if path.exists() and path.is_dir() != is_folder:
            raise ValueError(f"{path} is a {'file' if is_folder else 'folder'}; expected "
                             f"{'a folder' if is_folder else 'a file'} the report writes")


def read_variant_runs(run_dir, variant: str, seeds: Optional[list] = None) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    """{seed: final.json} and {seed: metrics.jsonl records} of one variant's finished runs;
    ValueError naming the path when its folder or a run of `seeds` (the plan's, when known) is a
    file, or a finished run has a seed the plan does not list."""
    folder = StudyFolder(run_dir)
    for path in [folder.variant_dir(variant)] + [folder.seed_dir(variant, s) for s in seeds or []]:
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file; expected a run folder (or none, for a run not started)")
    finals, metrics = {}, {}
    for seed, run in folder.finished_runs(variant):
        if seeds is not None and seed not in seeds:
            raise ValueError(f"{run} is a finished run of seed {seed}, which the plan does not list; expected "
                             f"the seeds {seeds} of {folder.plan_file}")
        finals[seed] = _read_final(run / FINAL_FILE)
        metrics[seed] = read_metrics(run / METRICS_FILE)   # drops a last line cut by an interrupted run
    return finals, metrics


def read_predictions(path: Path, num_classes: Optional[int] = None) -> Optional[dict]:
    """test_predictions.json of one run as {"labels", "predictions"} (int arrays of one length,
    classes in 0 .. num_classes - 1 when `num_classes` is known), None when the run has none;
    ValueError naming the file for any other content."""
    if not path.exists():
        return None
    classes = f" in 0 .. {num_classes - 1}" if num_classes else " >= 0"
    expected = f'the object {{"labels": [int, ...], "predictions": [int, ...]}} of equal length, classes{classes}'
    data = read_json_object(path, expected)
    arrays = {}
    for key in ("labels", "predictions"):
        values = data.get(key)
        if not isinstance(values, list) or not values or not all(
                isinstance(v, int) and not isinstance(v, bool) and 0 <= v < (num_classes or math.inf) for v in values):
            raise ValueError(f"{path}: {key} is not a non-empty list of classes; expected {expected}")
        arrays[key] = np.asarray(values, dtype=np.int64)
    if len(arrays["labels"]) != len(arrays["predictions"]):
        raise ValueError(f"{path}: {len(arrays['labels'])} labels but {len(arrays['predictions'])} predictions; "
                         f"expected {expected}")
    return arrays


def read_study_predictions(folder: StudyFolder, finals: dict, num_classes: Optional[int] = None) -> dict[str, dict[int, dict]]:
    """{variant: {seed: predictions}} for the finished runs that recorded them; ValueError naming
    the file whose number of test examples differs from the first run's (every run of a study is
    tested on the same test set)."""
    out, first = {}, None
    for name, per_seed in finals.items():
        out[name] = {}
        for seed in per_seed:
            path = folder.seed_dir(name, seed) / PREDICTIONS_FILE
            found = read_predictions(path, num_classes)
            if found is None:
                continue
            first = first or (path, len(found["labels"]))
            if len(found["labels"]) != first[1]:
                raise ValueError(f"{path}: {len(found['labels'])} test examples but {first[0]} has {first[1]}; "
                                 "expected every run's predictions on the study's one test set")
            out[name][seed] = found
    return out


# --------------------------------------------------------------------------------------------- rows

CURVE_KEYS = ("train_loss", "test_loss", "val_loss", "train_acc", "test_acc", "val_acc")
NOT_RECORDED_PREDICTIONS = f"{PREDICTIONS_FILE} not recorded (runs made before per-example predictions were kept)"


def _accuracies(finals: dict, name: str) -> dict[int, float]:
    return {s: float(f["test_acc"]) for s, f in sorted(finals.get(name, {}).items())}


def per_example_test(treatment: dict[int, dict], baseline: dict[int, dict], seeds: list[int]) -> dict:
    """The exact McNemar test of two variants on the test examples of the `seeds` both recorded,
    pooled (the same seed's runs paired); keys mcnemar_* or mcnemar_note saying what was missing."""
    usable = [s for s in seeds if s in treatment and s in baseline]
    if not usable:
        return {"mcnemar_note": NOT_RECORDED_PREDICTIONS}
    for s in usable:
        if not np.array_equal(treatment[s]["labels"], baseline[s]["labels"]):
            return {"mcnemar_note": f"the runs of seed {s} were tested on different examples; no per-example test"}
    right = [np.concatenate([p[s]["predictions"] == p[s]["labels"] for s in usable]) for p in (treatment, baseline)]
    result = mcnemar_exact(*right)
    out = {f"mcnemar_{k}": v for k, v in result.items()}
    out["mcnemar_p"] = out.pop("mcnemar_p_value")
    out["mcnemar_seeds"] = usable
    if len(usable) < len(seeds):
        out["mcnemar_note"] = f"pooled over the {len(usable)} of {len(seeds)} shared seeds that recorded predictions"
    return out


def compare_variants(name: str, accs: dict, other: str, other_accs: dict, predictions: dict) -> dict:
    """The paired statistics of variant `name` against `other` over the seeds both finished
    (`paired_comparison` and `per_example_test`), as row entries."""
    shared = sorted(set(accs) & set(other_accs))
    if not shared:
        return {"paired_n": 0, "diff_note": f"no seed shared with {other}"}
    c = paired_comparison(accs, other_accs, CONFIDENCE, POWER)
    out = {"paired_n": c["n"], "diff_mean": c["mean_diff"], "diff_std": c["std_diff"], "diff_ci_low": c["ci_low"],
           "diff_ci_high": c["ci_high"], "diff_t_ci_low": c["t_ci_low"], "diff_t_ci_high": c["t_ci_high"],
           "p_value": c["p_value"], "p_better": c["p_better"], "p_better_low": c["p_better_low"],
           "p_better_high": c["p_better_high"], "mde": c["mde"], "seeds_needed": c["seeds_needed"]}
    if c["n"] < 2:
        out["diff_note"] = "one shared seed: no interval, no test"
    out.update(per_example_test(predictions.get(name, {}), predictions.get(other, {}), shared))
    return out


def adjust_and_judge(rows: list[dict]) -> None:
    """Holm-adjust the paired and the per-example p-values over the rows compared, then decide
    in each row whether its difference is claimed and write its sentence (naming the row by its
    "label" and what it is compared with by its "against" when it has them)."""
    for key, adjusted in (("p_value", "p_holm"), ("mcnemar_p", "mcnemar_holm")):
        for row, p in zip(rows, holm([r.get(key, math.nan) for r in rows])):
            row[adjusted] = p
    for r in rows:
        if not r.get("paired_n"):
            r["claimed"] = False
            r["sentence"] = (f"{r['variant']}: the baseline, {pct(r['acc_mean'])}% over {r['n']} seeds"
                             if r["role"] == "baseline" else f"{r['variant']}: no paired comparison ({r['diff_note']})")
            continue
        paired = _as_paired(r)
        r["claimed"] = supports_difference(paired, r["p_holm"])
        r["sentence"] = effect_sentence(r.get("label", r["variant"]), paired,
                                        baseline=r.get("against", f"its baseline '{r['baseline']}'"),
                                        p_adjusted=r["p_holm"] if finite(r["p_holm"]) else None)


def _as_paired(r: dict) -> dict:
    return {"n": r["paired_n"], "mean_diff": r["diff_mean"], "ci_low": r.get("diff_ci_low", math.nan),
            "ci_high": r.get("diff_ci_high", math.nan), "p_value": r.get("p_value", math.nan), "confidence": CONFIDENCE}


NAN_FIELDS = ("acc_mean", "acc_std", "acc_ci_low", "acc_ci_high", "diff_mean", "diff_std", "diff_ci_low",
              "diff_ci_high", "diff_t_ci_low", "diff_t_ci_high", "p_value", "p_better", "p_better_low",
              "p_better_high", "mde", "mcnemar_p")


def compute_rows(plan: StudyPlan, finals: dict, costs: dict, predictions: Optional[dict] = None) -> list[dict]:
    """One row per variant: accuracy statistics, paired comparison with its baseline, costs."""
    predictions = predictions or {}
    counts = {len(p["labels"]) for per in predictions.values() for p in per.values()}
    test_count = counts.pop() if len(counts) == 1 else None   # the test-set size, when the runs agree on it
    rows = []
    for v in plan.variants:
        name, baseline = v.name, v.baseline or plan.baseline   # several models: each its own baseline
        accs = _accuracies(finals, name)
        row = {"variant": name, "role": v.role, "model": v.model, "attention": v.attention, "matches": v.matches,
               "baseline": baseline, "seeds": sorted(accs), "seed_accs": accs, "n": len(accs)}
        row.update({k: math.nan for k in NAN_FIELDS})
        row.update(paired_n=0, seeds_needed=None)
        if accs:
            values = list(accs.values())
            ci = accuracy_interval(values, CONFIDENCE, count=test_count)
            row.update(acc_mean=ci["mean"], acc_std=float(np.std(values, ddof=1)) if len(values) > 1 else math.nan,
                       acc_ci_low=ci["ci_low"], acc_ci_high=ci["ci_high"], acc_ci_method=ci["method"])
            if len(values) < 2:
                row["acc_ci_note"] = "one seed: no interval"
        if name == baseline:
            row["diff_note"] = "the baseline itself"
        elif not accs:
            row["diff_note"] = "no finished run yet"
        else:
            row.update(compare_variants(name, accs, baseline, _accuracies(finals, baseline), predictions))
        row.update(cost_entries(costs.get(name, {}), costs.get(baseline, {}), v.role))
        row["epochs"] = max((f.get("epochs", 0) for f in finals.get(name, {}).values()), default=0)
        row["train_seconds"] = sum(f.get("seconds", 0.0) for f in finals.get(name, {}).values())
        rows.append(row)
    adjust_and_judge(rows)
    return rows


def collect_curves(plan: StudyPlan, metrics: dict) -> dict:
    """curves[variant][metric] = [per-epoch values for each seed] for the metrics present."""
    curves = {}
    for v in plan.variants:
        per = {}
        for seed, records in sorted(metrics.get(v.name, {}).items()):
            epoch_records = [r for r in records if isinstance(r, dict) and "epoch" in r]
            for key in CURVE_KEYS:
                vals = [r[key] for r in epoch_records if isinstance(r.get(key), (int, float))]
                if vals:
                    per.setdefault(key, []).append(vals)
        curves[v.name] = per
    return curves


# --------------------------------------------------------------------------------------------- the effect section

def accuracy_table(rows: list[dict]) -> str:
    head = ["variant", "role", "seeds", "test accuracy % (mean ± std)", "95% CI %", "min-max over seeds %"]
    body = [[r["variant"], r["role"], str(r["n"]), f"{pct(r['acc_mean'])} ± {pct(r['acc_std'])}",
             interval(r["acc_ci_low"], r["acc_ci_high"]),
             interval(min(r["seed_accs"].values()), max(r["seed_accs"].values())) if r["n"] else "n/a"] for r in rows]
    return md_table(head, body)


def seeds_table(rows: list[dict]) -> str:
    head = ["variant", "vs", "diff (% points)", "95% CI (bootstrap)", "p (paired t)", "p (Holm)",
            "P(better on a new seed) %", "detectable effect (% points)", "seeds to resolve the diff"]
    body = []
    for r in rows:
        if not r.get("paired_n"):
            continue
        body.append([r["variant"], r["baseline"], points(r["diff_mean"]), interval(r["diff_ci_low"], r["diff_ci_high"], points),
                     num(r["p_value"], "{:.3f}"), num(r["p_holm"], "{:.3f}"),
                     f"{pct(r['p_better'], 0)} {interval(r['p_better_low'], r['p_better_high'], pct, 0)}",
                     num(100 * r["mde"] if finite(r["mde"]) else r["mde"], "{:.2f}"),
                     _seeds_to_resolve(r)])
    return md_table(head, body)


def _seeds_to_resolve(r: dict) -> str:
    if r["claimed"]:
        return "resolved"
    if r.get("seeds_needed"):
        return f"{r['seeds_needed']:,}"
    if r["paired_n"] < 2:
        return "n/a"
    return "never (no difference)" if r["diff_mean"] == 0 else "> 100,000"


def examples_table(rows: list[dict]) -> Optional[str]:
    head = ["variant", "vs", "test examples (pooled over seeds)", "right only for the variant",
            "right only for the baseline", "p (exact McNemar)", "p (Holm)"]
    body = [[r["variant"], r["baseline"], f"{r['mcnemar_examples']:,}", f"{r['mcnemar_treatment_only']:,}",
             f"{r['mcnemar_baseline_only']:,}", num(r["mcnemar_p"], "{:.3g}"), num(r["mcnemar_holm"], "{:.3g}")]
            for r in rows if finite(r.get("mcnemar_p"))]
    return md_table(head, body) if body else None


def method_note(rows: list[dict]) -> str:
    compared = sum(1 for r in rows if finite(r.get("p_value")))
    return (
        "How these numbers are computed. Accuracy interval: Student's t interval of the mean over seeds computed on "
        "the logit scale and mapped back, so it stays inside 0-100% (a seed at exactly 0 or 100% is moved half a test "
        "example inward; without the test-set size, the percentile bootstrap over seeds is used instead). Paired "
        "difference: the variant minus its baseline seed by seed (same seed = same data order and, where the layers "
        f"agree, the same initial weights), with a 95% percentile bootstrap interval over seeds ({BOOTSTRAP_RESAMPLES:,} "
        f"resamples, generator seed {BOOTSTRAP_SEED}; Efron and Tibshirani 1993). At few seeds that interval cannot "
        "reach beyond the observed differences and is too narrow, so a difference is claimed only when it excludes 0 "
        f"and the paired t-test, adjusted by Holm's method (Holm 1979) over the {compared} variant(s) compared, also "
        "gives p < 0.05. P(better on a new seed): the probability that the variant beats its baseline when both are "
        "trained with a new seed, P(A > B) of Bouthillier et al. (2021, \"Accounting for variance in machine learning "
        "benchmarks\"), estimated as the share of seeds it won (ties count one half) with an exact binomial interval. "
        "Per-example test: the exact McNemar test (a binomial test on the test examples exactly one of the two gets "
        "right; Dietterich 1998) on the shared test set, pooled over the seeds; it treats seed x example pairs as "
        "independent, which the same example repeated over seeds is not (nor are several distortion draws of one "
        "held-out image, where the data set draws them), so its p-value is optimistic, and it speaks "
        "for this test set only. Detectable effect: the smallest true difference the two-sided paired t-test detects "
        f"with {100 * POWER:.0f}% power at alpha {1 - CONFIDENCE:.2f} with this number of seeds and this standard deviation of the "
        "paired differences (noncentral t distribution); seeds to resolve: the number of seeds at which the observed "
        "difference would be detected with that power.")


def effect_section(rows: list[dict]) -> list[str]:
    lines = ["Test accuracy per variant:", "", accuracy_table(rows), "",
             "Each variant against its baseline over the seeds both ran:", "", seeds_table(rows), ""]
    examples = examples_table(rows)
    if examples:
        lines += ["Each variant against its baseline on the same test examples:", "", examples, ""]
    missing = sorted({r["mcnemar_note"] for r in rows if r.get("paired_n") and r.get("mcnemar_note")})
    lines += [f"- Per-example test: {m}." for m in missing]
    lines += [f"- {r['sentence']}" for r in rows] + ["", method_note(rows), ""]
    return lines


# --------------------------------------------------------------------------------------------- capacity control

def _width_phrase(plan: StudyPlan, multiplier) -> str:
    kwarg = (plan.capacity or {}).get("kwarg", "width")
    base = plan.baseline_variant.model_kwargs.get(kwarg)
    if isinstance(base, int) and finite(multiplier):
        return f"{kwarg} {round(base * multiplier)}, {multiplier:.3f}x the baseline's {base}"
    return f"{kwarg} multiplier {num(multiplier, '{:.3f}')}"


def _unmatched_sentence(plan: StudyPlan, row: dict, trained_for: list[str]) -> str:
    name, width = row["variant"], row.get("matched_width")
    if not finite(width):
        return (f"{name} ({human(row['params'])} parameters): no trained matched baseline, and none can be computed: "
                f"the baseline has no integer width to widen.")
    if width == 1.0:
        return (f"{name} ({human(row['params'])} parameters) is matched by the baseline itself: it adds fewer "
                f"parameters than one step of width, so no wider baseline is closer to it.")
    why = (f"the study trains one for {listing(trained_for)} only" if trained_for
           else "the study's preset has no capacity entry (capacity: {match: <variant>, kwarg: width} trains one)")
    return (f"{name} ({human(row['params'])} parameters) has no trained matched baseline ({why}); a baseline of "
            f"{_width_phrase(plan, width)} ({human(row.get('matched_width_params'))} parameters) would match it.")


def capacity_pairs(rows: list[dict], finals: dict, predictions: dict) -> list[dict]:
    """For each capacity variant whose attention variant is in the study, the paired comparison
    of that attention variant with it (judged with Holm over these pairs), as rows."""
    by_name = {r["variant"]: r for r in rows}
    pairs = []
    for cap in (r for r in rows if r["role"] == "capacity" and r.get("matches") in by_name):
        target = by_name[cap["matches"]]
        stats = compare_variants(target["variant"], _accuracies(finals, target["variant"]), cap["variant"],
                                 _accuracies(finals, cap["variant"]), predictions)
        pairs.append({**stats, "variant": target["variant"], "baseline": cap["variant"], "role": "attention",
                      "n": target["n"], "acc_mean": target["acc_mean"], "label": f"{target['variant']} vs {cap['variant']}",
                      "against": "the baseline of its size"})
    adjust_and_judge(pairs)
    return pairs


def capacity_section(plan: StudyPlan, rows: list[dict], pairs: list[dict]) -> list[str]:
    """Which baseline is matched to which attention variant, the paired comparison of each pair
    (`capacity_pairs`), and one sentence for every attention variant without a trained match."""
    by_name = {r["variant"]: r for r in rows}
    lines = ["Capacity control matches a baseline to an attention variant by parameter count: the baseline is "
             "widened to the integer width whose parameter count is closest to the variant's, so that a gain of "
             "attention is not a gain of size.", ""]
    for cap in (r for r in rows if r["role"] == "capacity"):
        target = by_name.get(cap.get("matches") or "")
        if target is None:
            lines.append(f"- {cap['variant']}: the attention variant it should match ({cap.get('matches')!r}) is not "
                         "in this study.")
            continue
        spec = plan.variant(cap["variant"]).capacity or {}
        width = f"{_width_phrase(plan, spec['multiplier'])}; " if finite(spec.get("multiplier")) else ""
        lines.append(f"- {cap['variant']} ({width}{human(cap['params'])} parameters) is matched to "
                     f"{target['variant']} ({human(target['params'])} parameters) by parameter count.")
    lines += [f"- {p['sentence']}" for p in pairs]
    trained_for = [r["matches"] for r in rows if r["role"] == "capacity" and r.get("matches")]
    unmatched = [r for r in rows if r["role"] == "attention" and r["variant"] not in trained_for]
    lines += [f"- {_unmatched_sentence(plan, r, trained_for)}" for r in unmatched] + [""]
    if any(p.get("paired_n") for p in pairs):
        lines += ["Each attention variant against its parameter-matched baseline:", "", seeds_table(pairs), ""]
    return lines


# --------------------------------------------------------------------------------------------- outputs

def _strict(value):
    """`value` made strict-JSON ready: NaN and infinities become None, keys strings, numpy scalars Python."""
    if isinstance(value, dict):
        return {str(k): _strict(x) for k, x in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(x) for x in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(run_dir, plan: StudyPlan, rows: list[dict]) -> tuple[Path, Path]:
    """results.json (everything, strict JSON) and results.csv (flat: no per-seed lists)."""
    folder = StudyFolder(run_dir)
    json_path = folder.results_json
    json_path.write_text(json.dumps(_strict({"preset": plan.preset, "baseline": plan.baseline, "dataset": plan.dataset,
                                             "seeds": plan.seeds, "variants": rows}), indent=2, allow_nan=False))
    csv_path = folder.results_csv
    skip = {"seed_accs", "seeds", "sentence", "mcnemar_seeds"}
    fields = []
    for r in rows:
        fields += [k for k in r if k not in skip and k not in fields]
    fields.append("seeds")
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            rec = {k: _strict(r.get(k)) for k in fields}
            rec["seeds"] = " ".join(str(s) for s in r["seeds"])
            w.writerow(rec)
    return json_path, csv_path


def partial_study(plan: StudyPlan, rows: list[dict]) -> Optional[str]:
    """The warning that opens the report of a study with planned runs not finished (which seeds
    of which variants are missing), None when every run of the plan finished."""
    if not plan.seeds:
        return None
    missing = {r["variant"]: sorted(set(plan.seeds) - set(r["seeds"])) for r in rows}
    missing = {name: seeds for name, seeds in missing.items() if seeds}
    if not missing:
        return None
    planned = len(plan.seeds) * len(rows)
    finished = planned - sum(len(s) for s in missing.values())
    groups: dict[tuple, list[str]] = {}
    for name, seeds in missing.items():
        groups.setdefault(tuple(seeds), []).append(name)
    which = "; ".join(f"seed{'s' if len(seeds) > 1 else ''} {listing([str(s) for s in seeds])} of {listing(names)}"
                      for seeds, names in groups.items())
    return (f"**Partial study:** {finished} of the {planned} planned runs have finished (not yet: {which}). "
            "Every number and figure below is computed from the finished runs only, and may change when the "
            "study completes.")


def render(folder: StudyFolder, plan: StudyPlan, rows: list[dict], figures: dict, setup: list[str],
           pairs: list[dict], notes: list[str]) -> tuple[str, str]:
    """(markdown, html) of the whole report; the HTML is rendered from the Markdown."""
    root = folder.root
    title = f"attnlab compare: {plan.preset or root.name}"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    md = [f"# {title}", "",
          f"Generated {stamp} from the run folder {root.name} (`attnlab report RUN_DIR` regenerates it).", ""]
    unfinished = partial_study(plan, rows)
    if unfinished:
        md += [unfinished, ""]
    if plan.description:
        md += [f"Question: {plan.description.strip()}", ""]
    md += ["## Headline", "", headline(rows, pairs), "", "## Setup", ""] + setup
    md += ["## 1. Effect of attention on test accuracy", ""] + effect_section(rows)
    md += ["## 2. Cost", ""] + cost_section(rows)
    md += ["## 3. Capacity control", ""] + capacity_section(plan, rows, pairs)
    md += ["## 4. Figures", ""]
    for label, path in figures.items():
        md += [f"![{label}]({path.relative_to(root).as_posix()})", ""]
    md += ["## 5. Explanations (one checkpoint per variant)", ""] + explanation_section(folder, plan)
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(md)
    return text, markdown_to_html(text, root, title)


# --------------------------------------------------------------------------------------------- entry

def _measure_missing_costs(folder: StudyFolder, plan: StudyPlan, finals: dict, costs: dict, notes: list[str]) -> bool:
    """Measure costs of variants missing from costs.json from their first checkpoint; True if any."""
    missing = [v for v in plan.variants if v.name not in costs and finals.get(v.name)]
    if not missing:
        return False
    from ..measure.cost import measure_costs
    from ..train import load_trained

    changed = False
    for v in missing:
        seed = min(finals[v.name])
        try:
            model, _ = load_trained(folder.seed_dir(v.name, seed))
            shape = plan.input_shape or list(model.input_size)
            costs[v.name] = measure_costs(model, tuple(shape), channels_last=plan.trains_channels_last,
                                          **plan.cost_settings)
            changed = True
        except Exception as exc:  # a report with a gap beats no report; the gap is named
            notes.append(f"costs of {v.name} could not be measured: {type(exc).__name__}: {exc}")
    return changed


def build_report(run_dir, explain: bool = True, measure: bool = True) -> Path:
    """Build results.csv, results.json, report.md and report.html in `run_dir`; return the HTML path.

    `explain`: make the explanation figures of variants that have none yet (needs the
    checkpoints and the dataset); `measure`: measure costs missing from costs.json.
    """
    plan, finals, metrics, costs, predictions = read_study(run_dir)
    folder = StudyFolder(run_dir)
    notes: list[str] = list(plan.notes or [])
    if measure and _measure_missing_costs(folder, plan, finals, costs, notes):
        folder.write_costs(costs)
    for v in plan.variants:
        if not finals.get(v.name):
            notes.append(f"{v.name}: no finished run in this folder")
    if explain:
        seeds = {name: min(per) for name, per in finals.items() if per}
        notes += write_explanations(folder, plan, seeds, only_missing=True)
    rows = compute_rows(plan, finals, costs, predictions)
    write_results(folder.root, plan, rows)
    fig_dir = folder.figures_dir
    present = [r for r in rows if r["n"]]
    figures = {"accuracy with 95% CI": plots.accuracy_figure(present, fig_dir / "accuracy.png"),
               "accuracy gain vs cost (Pareto)": plots.gain_cost_figure(present, fig_dir / "gain_vs_cost.png"),
               "training curves": plots.training_curves_figure(collect_curves(plan, metrics), fig_dir / "training_curves.png")}
    test_size = next((len(p["labels"]) for per in predictions.values() for p in per.values()), None)
    md, page = render(folder, plan, rows, figures, setup_section(folder, plan, finals, metrics, costs, test_size),
                      capacity_pairs(rows, finals, predictions), notes)
    folder.report_md.write_text(md)
    folder.report_html.write_text(page)
    return folder.report_html


__all__ = ["build_report", "compute_rows", "read_finished_runs", "read_plan", "read_run_folder", "read_study",
           "read_variant_runs", "read_predictions", "write_results"]
