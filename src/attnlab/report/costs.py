"""The report's cost section: what each variant costs against its baseline, timings with their noise.

Counts (parameters, FLOPs, pooling and element-wise operations, peak memory) are exact and shown
with their ratio to the baseline. Timings are noisy: each is the median over the repeats that
attnlab.measure.cost timed, shown with the min-max range of those repeats when costs.json lists
them (``latency_b1_runs``, ``latency_large_runs``, ``train_step_runs``). Reading rules:

* a variant whose min-max range overlaps its baseline's shows "no measurable difference";
* any other variant timed faster than its baseline is flagged ("faster than its baseline:
  measurement noise, not a gain"): an attention variant or a wider baseline does more work than
  its baseline, so a lower time is noise (a busy machine, a cache), never something it bought.
"""
from __future__ import annotations

import math
from typing import Mapping, Optional

from .format import finite, human, listing, md_table, ms, ratio

# the exact cost figures -> the name of their ratio to the baseline
COUNT_KEYS = {"params": "params_ratio", "flops": "flops_ratio", "pooling_ops": "pooling_ops_ratio",
              "elementwise_ops": "elementwise_ops_ratio", "peak_train_bytes": "peak_train_ratio",
              "peak_infer_bytes": "peak_infer_ratio"}
# the timed figures (medians, seconds) -> the stem of their derived entries in a row
TIMING_KEYS = {"latency_b1_s": "latency_b1", "latency_large_s": "latency_large", "train_step_s": "train_step"}

SAME = "no measurable difference"
NOISE = "faster than its baseline: measurement noise, not a gain"


def timing_runs(entry: Mapping, key: str) -> Optional[list[float]]:
    """The repeats of timing `key` (e.g. latency_b1_s -> latency_b1_runs) when costs.json lists
    them as finite numbers, else None (costs measured before the repeats were kept)."""
    runs = entry.get(key[:-2] + "_runs")
    if isinstance(runs, list) and runs and all(finite(r) for r in runs):
        return [float(r) for r in runs]
    return None


def timing_verdict(value, low, high, base, base_low, base_high, role: str) -> Optional[str]:
    """SAME when the min-max ranges overlap, NOISE for a variant other than the baseline timed
    faster than its baseline, None otherwise (a plain ratio; also when either median is missing)."""
    if not (finite(value) and finite(base)):
        return None
    if all(finite(x) for x in (low, high, base_low, base_high)) and low <= base_high and base_low <= high:
        return SAME
    if role != "baseline" and value < base:
        return NOISE
    return None


def cost_entries(entry: Mapping, base: Mapping, role: str) -> dict:
    """The cost entries of one row: each figure, its ratio to the baseline, and for timings the
    min and max over repeats and the verdict (`timing_verdict`)."""
    out = {"memory_format": entry.get("memory_format")}   # absent in runs measured before it was recorded
    for key, ratio_key in COUNT_KEYS.items():
        out[key], out[ratio_key] = entry.get(key, math.nan), _ratio(entry.get(key), base.get(key))
    for key, stem in TIMING_KEYS.items():
        runs, base_runs = timing_runs(entry, key), timing_runs(base, key)
        value, base_value = entry.get(key, math.nan), base.get(key)
        low, high = (min(runs), max(runs)) if runs else (math.nan, math.nan)
        base_low, base_high = (min(base_runs), max(base_runs)) if base_runs else (math.nan, math.nan)
        out.update({key: value, f"{stem}_min": low, f"{stem}_max": high, f"{stem}_ratio": _ratio(value, base_value),
                    f"{stem}_repeats": len(runs) if runs else None,
                    f"{stem}_verdict": timing_verdict(value, low, high, base_value, base_low, base_high, role)})
    out["large_batch"] = entry.get("large_batch")
    out["train_batch"] = entry.get("train_batch")
    out["matched_width"] = entry.get("matched_width")
    out["matched_width_params"] = entry.get("matched_width_params")
    return out


def _ratio(value, base) -> float:
    return value / base if finite(value) and finite(base) and base != 0 else math.nan


# --------------------------------------------------------------------------------------------- tables

def counts_table(rows: list[dict]) -> str:
    head = ["variant", "params", "FLOPs", "pool + elementwise ops", "peak train mem", "peak infer mem"]
    body = [[r["variant"], f"{human(r['params'])} ({ratio(r['params_ratio'])})",
             f"{human(r['flops'])} ({ratio(r['flops_ratio'])})",
             f"{human(r['pooling_ops'])} + {human(r['elementwise_ops'])}",
             f"{human(r['peak_train_bytes'], 'B')} ({ratio(r['peak_train_ratio'])})",
             f"{human(r['peak_infer_bytes'], 'B')} ({ratio(r['peak_infer_ratio'])})"] for r in rows]
    return md_table(head, body)


def _timing_cell(row: dict, key: str, digits: int) -> str:
    stem = TIMING_KEYS[key]
    spread = (f" [{ms(row[f'{stem}_min'], digits)}-{ms(row[f'{stem}_max'], digits)}]"
              if finite(row.get(f"{stem}_min")) else "")
    if row["role"] == "baseline":
        return f"{ms(row[key], digits)}{spread}"
    verdict = {SAME: ", no measurable difference", NOISE: ", flagged: noise"}.get(row.get(f"{stem}_verdict"), "")
    return f"{ms(row[key], digits)}{spread} ({ratio(row[f'{stem}_ratio'])}{verdict})"


def timing_table(rows: list[dict]) -> str:
    large = next((r["large_batch"] for r in rows if r.get("large_batch")), "N")
    train = next((r["train_batch"] for r in rows if r.get("train_batch")), "N")
    head = ["variant", "latency batch 1 (ms)", f"latency batch {large} (ms)", f"train step batch {train} (ms)"]
    body = [[r["variant"], _timing_cell(r, "latency_b1_s", 2), _timing_cell(r, "latency_large_s", 1),
             _timing_cell(r, "train_step_s", 1)] for r in rows]
    return md_table(head, body)


def timing_notes(rows: list[dict]) -> list[str]:
    """A sentence for each timing flagged as noise, and one saying whether repeats were recorded."""
    names = {"latency_b1_s": "batch-1 latency", "latency_large_s": "large-batch latency",
             "train_step_s": "training step"}
    notes = []
    for r in rows:
        flagged = [f"{names[key]} ({ratio(r[f'{stem}_ratio'])})" for key, stem in TIMING_KEYS.items()
                   if r.get(f"{stem}_verdict") == NOISE]
        if flagged:
            notes.append(f"{r['variant']}: {listing(flagged)} timed {NOISE} "
                         "(it does more work than its baseline, so the timing is flagged, not read as a speed-up).")
    repeats = sorted({r[f"{stem}_repeats"] for r in rows for stem in TIMING_KEYS.values() if r.get(f"{stem}_repeats")})
    if repeats:
        notes.append(f"Timings are the median over {'/'.join(map(str, repeats))} repeats with their min-max range in "
                     f"brackets; a ratio whose range overlaps the baseline's reads \"{SAME}\".")
    else:
        notes.append("The repeats behind each timing were not recorded in costs.json (measured by an earlier "
                     "attnlab): timings are medians without their spread, so small ratios may be noise.")
    return notes


def cost_method_note(rows: list[dict]) -> str:
    note = ("FLOPs count matrix products and convolutions (attention products included) as 2 per "
            "multiply-accumulate (torch.utils.flop_counter); pooling and element-wise operations are "
            "counted separately. Latency is the wall time of a no-grad forward pass after warm-up; the "
            "train step is forward + backward + SGD step. Ratios are to the variant's baseline. FLOPs and "
            "latency disagree for attention: read both. CPU peak memory = tensors alive at the peak "
            "(tracked per aten op) plus weights, gradients and optimizer state.")
    formats = sorted({r["memory_format"] for r in rows if r.get("memory_format")})
    if formats:
        note += f" Models are timed in the {' / '.join(formats)} memory format, the one the Trainer used."
    return note


def cost_section(rows: list[dict]) -> list[str]:
    """The Markdown lines of the cost section."""
    return (["Exact counts (ratio to the baseline):", "", counts_table(rows), "",
             "Timings (median [min-max] over repeats, ratio to the baseline):", "", timing_table(rows), ""]
            + [f"- {n}" for n in timing_notes(rows)] + ["", cost_method_note(rows), ""])


__all__ = ["COUNT_KEYS", "TIMING_KEYS", "SAME", "NOISE", "timing_runs", "timing_verdict", "cost_entries",
           "cost_section"]
