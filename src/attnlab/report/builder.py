"""Build the effect report of a `compare` run folder: tables, sentences, figures, one HTML file.

Not a paper module. Everything is recomputed from the run folder alone, so ``attnlab report
RUN_DIR`` regenerates the same report. The folder's layout and its plan (compare.json, also as
older versions wrote it) are those of `attnlab.io.study_files`: the report reads the plan
(`StudyPlan`: variants with their role = baseline | attention | capacity, seeds, input shape),
each run's final.json and metrics.jsonl, costs.json (measured here from the first checkpoint
when missing) and the explanation figures of one checkpoint per variant (made here when missing
and `explain=True`).

Outputs: results.csv and results.json (one row per variant), report.md, report.html (one
self-contained file: CSS inline, figures as base64 PNG data URIs, no external reference), and
figures/*.png.

Statistics (attnlab.measure.stats): mean and sample std of test accuracy over seeds, the 95%
t interval of the mean, and for every variant the paired difference to the baseline over the
seeds both share (same seed = same data order and, where the layers agree, the same initial
weights) with its own t interval and paired t-test p-value. The plain sentence claims a
difference only when that interval excludes 0.

Capacity control: a variant with role ``capacity`` is the baseline made wider (width multiplier
solved so that its parameter count matches the attention variant named in its ``matches``
field); the report compares that attention variant with it, paired over seeds, so the gain of
attention is separated from the gain of size. Without such a variant the section says so and
lists the width each attention variant would need (``costs.json``: ``matched_width``).
"""
from __future__ import annotations

import base64
import csv
import html
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

from ..io.run_folder import FINAL_FILE, METRICS_FILE, read_metrics
from ..io.study_files import StudyFolder, StudyPlan, read_json_object
from ..measure.stats import effect_sentence, format_p, paired_by_seed, summarize
from . import plots


# --------------------------------------------------------------------------------------------- reading

def read_plan(run_dir) -> StudyPlan:
    """compare.json of `run_dir` (checked for what the report needs), or a plan inferred from its
    runs/<variant>/ folders when it is missing; ValueError naming the file and what was expected."""
    return StudyFolder(run_dir).read_plan()


def _read_final(path: Path) -> dict:
    """A run's final.json: an object whose test_acc is a number (seconds and epochs numbers too, when given)."""
    final = read_json_object(path, "the JSON object a finished training run writes (with its test_acc)")
    for key, required in (("test_acc", True), ("seconds", False), ("epochs", False)):
        value = final.get(key)
        if (value is None and required) or (value is not None and (isinstance(value, bool)
                                                                  or not isinstance(value, (int, float)))):
            raise ValueError(f"{path}: {key} is {value!r}; expected a number")
    return final


def read_run_folder(run_dir) -> tuple[StudyPlan, dict, dict, dict]:
    """(plan, finals, metrics, costs) of a compare run folder, every file checked: `finals` and
    `metrics` are {variant: {seed: ...}}. ValueError (TypeError for a `run_dir` that is no path)
    naming the file and what was expected, or what is missing."""
    if not isinstance(run_dir, (str, Path)):
        raise TypeError(f"run_dir must be a path, got {type(run_dir).__name__} {run_dir!r}")
    folder = StudyFolder(run_dir)
    if not folder.root.is_dir():
        raise ValueError(f"run folder {str(run_dir)!r} does not exist; expected the folder `attnlab compare` printed")
    plan = folder.read_plan()
    finals, metrics = {}, {}
    for v in plan.variants:
        finals[v.name], metrics[v.name] = read_variant_runs(folder.root, v.name)
    if not any(finals.values()):
        raise ValueError(f"{folder.root}: no finished run (runs/<variant>/seed<S>/{FINAL_FILE}) to report")
    if plan.baseline not in finals or not finals[plan.baseline]:
        raise ValueError(f"{folder.root}: the baseline {plan.baseline!r} has no finished run")
    return plan, finals, metrics, folder.read_costs()


def read_variant_runs(run_dir, variant: str) -> tuple[dict[int, dict], dict[int, list[dict]]]:
    """{seed: final.json} and {seed: metrics.jsonl records} of one variant."""
    finals, metrics = {}, {}
    for seed, run in StudyFolder(run_dir).finished_runs(variant):
        finals[seed] = _read_final(run / FINAL_FILE)
        metrics[seed] = read_metrics(run / METRICS_FILE)   # drops a last line cut by an interrupted run
    return finals, metrics


# --------------------------------------------------------------------------------------------- rows

# cost figure -> the name of its ratio to the baseline
COST_KEYS = {"params": "params_ratio", "flops": "flops_ratio", "pooling_ops": "pooling_ops_ratio",
             "elementwise_ops": "elementwise_ops_ratio", "latency_b1_s": "latency_b1_ratio",
             "latency_large_s": "latency_large_ratio", "train_step_s": "train_step_ratio",
             "peak_train_bytes": "peak_train_ratio", "peak_infer_bytes": "peak_infer_ratio"}
CURVE_KEYS = ("train_loss", "test_loss", "val_loss", "train_acc", "test_acc", "val_acc")


def compute_rows(plan: StudyPlan, finals: dict, costs: dict) -> list[dict]:
    """One row per variant: accuracy statistics, paired difference to the baseline, costs and ratios."""
    rows = []
    for v in plan.variants:
        name = v.name
        baseline = v.baseline or plan.baseline  # several models: each its own baseline
        base_accs = {s: f["test_acc"] for s, f in finals.get(baseline, {}).items()}
        base_cost = costs.get(baseline, {})
        accs = {s: float(f["test_acc"]) for s, f in sorted(finals.get(name, {}).items())}
        row = {"variant": name, "role": v.role, "model": v.model,
               "attention": v.attention, "matches": v.matches, "seeds": sorted(accs),
               "seed_accs": accs, "n": len(accs)}
        if accs:
            s = summarize(list(accs.values()))
            row.update(acc_mean=s["mean"], acc_std=s["std"], acc_ci_low=s["ci_low"], acc_ci_high=s["ci_high"])
        else:
            row.update(acc_mean=math.nan, acc_std=math.nan, acc_ci_low=math.nan, acc_ci_high=math.nan)
        row.update(diff_mean=math.nan, diff_ci_low=math.nan, diff_ci_high=math.nan, p_value=math.nan, paired_n=0)
        if name != baseline and accs and base_accs and set(accs) & set(base_accs):
            p = paired_by_seed(accs, base_accs)
            row.update(diff_mean=p["mean_diff"], diff_ci_low=p["ci_low"], diff_ci_high=p["ci_high"],
                       p_value=p["p_value"], paired_n=p["n"])
            row["sentence"] = effect_sentence(name, p, baseline=f"the baseline '{baseline}'")
        elif name == baseline:
            row["sentence"] = f"{name}: the baseline, {100 * row['acc_mean']:.1f}% over {len(accs)} seeds"
        else:
            row["sentence"] = f"{name}: no paired comparison (no seed shared with the baseline)"
        c = costs.get(name, {})
        row["memory_format"] = c.get("memory_format")   # absent in runs measured before it was recorded
        for key, ratio_key in COST_KEYS.items():
            value, base = c.get(key, math.nan), base_cost.get(key, math.nan)
            row[key] = value
            usable = all(isinstance(x, (int, float)) and math.isfinite(x) for x in (value, base)) and base != 0
            row[ratio_key] = value / base if usable else math.nan
        row["large_batch"] = c.get("large_batch")
        row["train_batch"] = c.get("train_batch")
        row["matched_width"] = c.get("matched_width")
        row["epochs"] = max((f.get("epochs", 0) for f in finals.get(name, {}).values()), default=0)
        row["train_seconds"] = sum(f.get("seconds", 0.0) for f in finals.get(name, {}).values())
        rows.append(row)
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


# --------------------------------------------------------------------------------------------- formatting

def _num(v, fmt: str = "{:.3g}") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return fmt.format(v)


def _pct(v, digits: int = 2) -> str:
    return _num(100 * v if isinstance(v, (int, float)) else v, f"{{:.{digits}f}}")


def _signed_pts(v) -> str:
    return _num(100 * v if isinstance(v, (int, float)) else v, "{:+.2f}")


def _ms(seconds, digits: int) -> str:
    ok = isinstance(seconds, (int, float)) and math.isfinite(seconds)
    return _num(1e3 * seconds if ok else math.nan, f"{{:.{digits}f}}")


def _ratio(v) -> str:
    return _num(v, "{:.2f}x")


def _human(n, unit: str = "") -> str:
    if not isinstance(n, (int, float)) or not math.isfinite(n):
        return "n/a"
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.3g}{suffix}{unit}"
    return f"{n:.3g}{unit}"


def effect_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["variant", "seeds", "test acc % (mean +- std)", "95% CI", "diff vs baseline (points)", "diff 95% CI", "p"]
    body = []
    for r in rows:
        body.append([r["variant"], str(r["n"]), f"{_pct(r['acc_mean'])} +- {_pct(r['acc_std'])}",
                     f"[{_pct(r['acc_ci_low'])}, {_pct(r['acc_ci_high'])}]",
                     "baseline" if r["role"] == "baseline" else _signed_pts(r["diff_mean"]),
                     "" if r["role"] == "baseline" else f"[{_signed_pts(r['diff_ci_low'])}, {_signed_pts(r['diff_ci_high'])}]",
                     "" if r["role"] == "baseline" else format_p(r["p_value"]).replace("p=", "").replace("p", "")])
    return head, body


def cost_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    lb = next((r["large_batch"] for r in rows if r.get("large_batch")), "N")
    tb = next((r["train_batch"] for r in rows if r.get("train_batch")), "N")
    head = ["variant", "params", "FLOPs", "pool + elementwise ops", "latency b1 (ms)", f"latency b{lb} (ms)",
            f"train step b{tb} (ms)", "peak train mem", "peak infer mem"]
    body = []
    for r in rows:
        body.append([
            r["variant"],
            f"{_human(r['params'])} ({_ratio(r['params_ratio'])})",
            f"{_human(r['flops'])} ({_ratio(r['flops_ratio'])})",
            f"{_human(r['pooling_ops'])} + {_human(r['elementwise_ops'])}",
            f"{_ms(r['latency_b1_s'], 2)} ({_ratio(r['latency_b1_ratio'])})",
            f"{_ms(r['latency_large_s'], 1)} ({_ratio(r['latency_large_ratio'])})",
            f"{_ms(r['train_step_s'], 1)} ({_ratio(r['train_step_ratio'])})",
            f"{_human(r['peak_train_bytes'], 'B')} ({_ratio(r['peak_train_ratio'])})",
            f"{_human(r['peak_infer_bytes'], 'B')} ({_ratio(r['peak_infer_ratio'])})",
        ])
    return head, body


def capacity_section(rows: list[dict], finals: dict) -> tuple[list[str], Optional[tuple]]:
    """Sentences and an optional table comparing attention variants with matched-size baselines."""
    by_name = {r["variant"]: r for r in rows}
    capacity = [r for r in rows if r["role"] == "capacity"]
    lines = []
    if not capacity:
        lines.append("This run trained no capacity-matched baseline. The width multiplier that would give the "
                     "baseline each attention variant's parameter count is listed below; the preset's "
                     "`capacity` entry trains one.")
        table_rows = [[r["variant"], _human(r["params"]), _num(r.get("matched_width"), "{:.3f}")]
                      for r in rows if r["role"] == "attention"]
        return lines, (["attention variant", "params", "baseline width multiplier for equal params"], table_rows)
    head = ["attention variant", "params", "matched baseline", "its params", "diff (points)", "95% CI", "p", "reading"]
    body = []
    for cap in capacity:
        target = by_name.get(cap.get("matches") or "")
        if target is None:
            lines.append(f"{cap['variant']}: the attention variant it should match ({cap.get('matches')!r}) is not in this run.")
            continue
        a = {s: f["test_acc"] for s, f in finals.get(target["variant"], {}).items()}
        b = {s: f["test_acc"] for s, f in finals.get(cap["variant"], {}).items()}
        if not (set(a) & set(b)):
            lines.append(f"{target['variant']} vs {cap['variant']}: no seed in common, no comparison.")
            continue
        p = paired_by_seed(a, b)
        sentence = effect_sentence(f"{target['variant']} vs {cap['variant']}", p, baseline=cap["variant"])
        lines.append(sentence)
        body.append([target["variant"], _human(target["params"]), cap["variant"], _human(cap["params"]),
                     _signed_pts(p["mean_diff"]), f"[{_signed_pts(p['ci_low'])}, {_signed_pts(p['ci_high'])}]",
                     format_p(p["p_value"]), "attention beats size" if p["ci_low"] > 0 else
                     ("size beats attention" if p["ci_high"] < 0 else "no detectable difference")])
    others = [r["variant"] for r in rows if r["role"] == "attention" and r["variant"] not in {c.get("matches") for c in capacity}]
    if others:
        lines.append("Attention variants without a trained matched baseline (width multiplier that would match): "
                     + ", ".join(f"{n} ({_num(by_name[n].get('matched_width'), '{:.3f}')})" for n in others) + ".")
    return lines, (head, body)


def _md_table(head, body) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    return "\n".join(out)


def _html_table(head, body) -> str:
    h = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    b = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>"


# --------------------------------------------------------------------------------------------- outputs

def write_results(run_dir, plan: StudyPlan, rows: list[dict]) -> tuple[Path, Path]:
    """results.json (everything) and results.csv (flat: no per-seed dicts)."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    folder = StudyFolder(run_dir)
    json_path = folder.results_json
    json_path.write_text(json.dumps({"preset": plan.preset, "baseline": plan.baseline,
                                     "dataset": plan.dataset, "seeds": plan.seeds,
                                     "variants": [clean(r) for r in rows]}, indent=2))
    csv_path = folder.results_csv
    skip = {"seed_accs", "seeds", "sentence"}
    fields = [k for k in rows[0] if k not in skip] + ["seeds"]
    with open(csv_path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            rec = {k: clean(r.get(k)) for k in fields}
            rec["seeds"] = " ".join(str(s) for s in r["seeds"])
            w.writerow(rec)
    return json_path, csv_path


_CSS = """body{font-family:system-ui,Arial,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.9em}th,td{border:1px solid #bbb;padding:3px 7px;text-align:right}
th{background:#eee}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #ddd;margin:0.4em 0}
code{background:#f3f3f3;padding:0 3px}li{margin:0.2em 0}.note{color:#555;font-size:0.9em}"""


SEED_PICTURE = "a_seed_picture.png"  # the same operators for every variant: shown once


def _explanation_figures(folder: StudyFolder, plan: StudyPlan) -> dict[str, list[Path]]:
    out, seed_shown = {}, False
    for v in plan.variants:
        figures = folder.explain_dir(v.name)
        pngs = sorted(figures.glob("*.png")) if figures.is_dir() else []
        if seed_shown:
            pngs = [p for p in pngs if p.name != SEED_PICTURE]
        seed_shown = seed_shown or any(p.name == SEED_PICTURE for p in pngs)
        if pngs:
            out[v.name] = pngs
    return out


def _explain_summaries(folder: StudyFolder, plan: StudyPlan) -> dict[str, dict]:
    out = {}
    for v in plan.variants:
        path = folder.explain_summary(v.name)
        if path.is_file():
            out[v.name] = read_json_object(path)
    return out


def _reliance_table(summaries: dict) -> Optional[tuple]:
    head = ["variant", "stage", "accuracy %", "gate = 1 (removed)", "gate = data mean"]
    body = []
    for name, s in summaries.items():
        rel = s.get("reliance") or {}
        base = rel.get("accuracy")
        for stage in rel.get("stages", []):
            body.append([name, str(stage["stage"]), _pct(base), _pct(stage.get("removed")), _pct(stage.get("mean"))])
    return (head, body) if body else None


def _specificity_table(summaries: dict) -> Optional[tuple]:
    head = ["variant", "module", "signal", "class specificity (between-class / total variance)"]
    body = []
    for name, s in summaries.items():
        for rec in s.get("class_specificity", []):
            body.append([name, rec["module"], rec["signal"], _num(rec["specificity"], "{:.3f}")])
    return (head, body) if body else None


def render(run_dir: Path, plan: StudyPlan, rows: list[dict], figures: dict, explain_figs: dict,
           summaries: dict, capacity: tuple, notes: list[str]) -> tuple[str, str]:
    """(markdown, html) of the whole report; the HTML embeds every PNG as a data URI."""
    title = f"attnlab compare: {plan.preset or run_dir.name}"
    setup = (f"Dataset `{plan.dataset}` at input {tuple(plan.input_shape or ())}, seeds "
             f"{plan.seeds}, {rows[0].get('epochs', '?')} epochs, baseline `{plan.baseline}`. "
             f"Generated {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} from the run folder "
             f"(`attnlab report {run_dir}` regenerates it).")
    timing = plan.seconds or {}
    if timing:
        setup += (f" The compare took {timing.get('total', sum(timing.values())):.0f} s of wall time ("
                  + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items() if k != "total")
                  + f") with {plan.workers if plan.workers is not None else 1} worker process(es).")
    eff = effect_table(rows)
    cost = cost_table(rows)
    cap_lines, cap_table = capacity
    rel = _reliance_table(summaries)
    spec = _specificity_table(summaries)
    sentences = [r["sentence"] for r in rows]
    cost_note = ("FLOPs count matrix products and convolutions (attention products included) as 2 per "
                 "multiply-accumulate (torch.utils.flop_counter); pooling and element-wise operations are "
                 "counted separately. Latency is the median wall time of a no-grad forward pass after warm-up; "
                 "the train step is forward + backward + SGD step. Ratios are to the baseline. FLOPs and "
                 "latency disagree for attention: read both. CPU peak memory = tensors alive at the peak "
                 "(tracked per aten op) plus weights, gradients and optimizer state.")
    formats = sorted({r["memory_format"] for r in rows if r.get("memory_format")})
    if formats:
        cost_note += f" Models are timed in the {' / '.join(formats)} memory format, the one the Trainer used."

    md = [f"# {title}", "", setup, "", "## 1. Effect of attention on test accuracy", "", _md_table(*eff), ""]
    md += [f"- {s}" for s in sentences] + [""]
    md += ["## 2. Cost", "", _md_table(*cost), "", cost_note, ""]
    md += ["## 3. Capacity control", ""] + [f"- {s}" for s in cap_lines] + [""]
    if cap_table and cap_table[1]:
        md += [_md_table(*cap_table), ""]
    md += ["## 4. Figures", ""]
    for label, path in figures.items():
        md += [f"![{label}]({path.relative_to(run_dir).as_posix()})", ""]
    md += ["## 5. Explanations (one checkpoint per variant)", ""]
    if spec:
        md += ["Class specificity of the excitation per module (0 = the same for every class, 1 = fixed by the class):", "",
               _md_table(*spec), ""]
    if rel:
        md += ["Reliance: test accuracy when each stage's attention output is replaced by its neutral value "
               "(gate 1, mask or transform 0, identity warp) or by its mean over the data:", "", _md_table(*rel), ""]
    for name, pngs in explain_figs.items():
        md += [f"### {name}", ""] + [f"![{name} {p.stem}]({p.relative_to(run_dir).as_posix()})" for p in pngs] + [""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]

    def img(path: Path, alt: str) -> str:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'

    h = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
         f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(setup)}</p>",
         "<h2>1. Effect of attention on test accuracy</h2>", _html_table(*eff),
         "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences) + "</ul>",
         "<h2>2. Cost</h2>", _html_table(*cost), f"<p class=\"note\">{html.escape(cost_note)}</p>",
         "<h2>3. Capacity control</h2>", "<ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in cap_lines) + "</ul>"]
    if cap_table and cap_table[1]:
        h.append(_html_table(*cap_table))
    h.append("<h2>4. Figures</h2>")
    h += [img(p, label) for label, p in figures.items()]
    h.append("<h2>5. Explanations (one checkpoint per variant)</h2>")
    if spec:
        h += ["<p>Class specificity of the excitation per module (0 = the same for every class, 1 = fixed by the class):</p>",
              _html_table(*spec)]
    if rel:
        h += ["<p>Reliance: test accuracy when each stage's attention output is replaced by its neutral value "
              "or by its mean over the data:</p>", _html_table(*rel)]
    for name, pngs in explain_figs.items():
        h.append(f"<h3>{html.escape(name)}</h3>")
        h += [img(p, f"{name} {p.stem}") for p in pngs]
    if notes:
        h += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"]
    h.append("</body></html>")
    return "\n".join(md), "\n".join(h)


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


def _make_missing_explanations(folder: StudyFolder, plan: StudyPlan, finals: dict, notes: list[str]) -> None:
    from ..explain import explain_checkpoint

    for v in plan.variants:
        out = folder.explain_dir(v.name)
        if (out.is_dir() and any(out.glob("*.png"))) or not finals.get(v.name):
            continue
        seed = min(finals[v.name])
        try:
            explain_checkpoint(folder.seed_dir(v.name, seed), out, dataset=plan.dataset, data_dir=plan.data_dir)
        except Exception as exc:  # named in the report, never silently dropped
            notes.append(f"explanations of {v.name} failed: {type(exc).__name__}: {exc}")


def build_report(run_dir, explain: bool = True, measure: bool = True) -> Path:
    """Build results.csv, results.json, report.md and report.html in `run_dir`; return the HTML path.

    `explain`: make the explanation figures of variants that have none yet (needs the
    checkpoints and the dataset); `measure`: measure costs missing from costs.json.
    """
    plan, finals, metrics, costs = read_run_folder(run_dir)
    folder = StudyFolder(run_dir)
    notes: list[str] = list(plan.notes or [])
    if measure and _measure_missing_costs(folder, plan, finals, costs, notes):
        folder.write_costs(costs)
    for v in plan.variants:
        if not finals.get(v.name):
            notes.append(f"{v.name}: no finished run in this folder")
    if explain:
        _make_missing_explanations(folder, plan, finals, notes)
    rows = compute_rows(plan, finals, costs)
    write_results(folder.root, plan, rows)
    fig_dir = folder.figures_dir
    present = [r for r in rows if r["n"]]
    figures = {"accuracy with 95% CI": plots.accuracy_figure(present, fig_dir / "accuracy.png"),
               "accuracy gain vs cost (Pareto)": plots.gain_cost_figure(present, fig_dir / "gain_vs_cost.png"),
               "training curves": plots.training_curves_figure(collect_curves(plan, metrics), fig_dir / "training_curves.png")}
    md, page = render(folder.root, plan, rows, figures, _explanation_figures(folder, plan),
                      _explain_summaries(folder, plan), capacity_section(rows, finals), notes)
    folder.report_md.write_text(md)
    folder.report_html.write_text(page)
    return folder.report_html


__all__ = ["build_report", "compute_rows", "read_plan", "read_run_folder", "read_variant_runs", "write_results"]
