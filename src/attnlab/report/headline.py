"""The headline paragraph at the top of the report, generated from the rows and claiming no more
than they support.

It names the best attention variant's difference to its baseline with its interval and tests
(a difference is called one only when the row says it is supported: interval excluding 0 and
Holm-adjusted paired test below 0.05), what that variant cost, whether the baseline sits near the
data set's ceiling (mean >= 99%, or its interval's top within 1 point of 100%), the power of the
comparison (the minimum detectable effect at these seeds and this spread, and the seeds that would
resolve the observed difference), and whether the accuracy-cost Pareto front holds only baselines.
"""
from __future__ import annotations

from ..measure.stats import format_p
from .costs import NOISE, SAME
from .format import finite, interval, listing, num, pct, points, ratio
from .plots import pareto_front

CEILING = 0.99          # a baseline at or above this accuracy (or whose interval reaches it) is at the ceiling


def _best(rows: list[dict]):
    candidates = [r for r in rows if r["role"] == "attention" and r.get("paired_n") and finite(r.get("diff_mean"))]
    return max(candidates, key=lambda r: r["diff_mean"]) if candidates else None


def _effect(best: dict, base: dict, compared: int) -> str:
    tests = (f"95% CI of the paired difference {interval(best['diff_ci_low'], best['diff_ci_high'], points)}, "
             f"paired t-test {format_p(best['p_value'])}, {format_p(best['p_holm'])} after Holm's "
             f"adjustment for {compared} comparison{'s' if compared != 1 else ''}")
    move = _move(best, base)
    n = best["paired_n"]
    if best["claimed"]:
        return (f"The best attention variant, **{best['variant']}**, changes test accuracy by "
                f"**{points(best['diff_mean'])} points** ({move}; {tests}): a difference these {n} seeds resolve.")
    return (f"The best attention variant, **{best['variant']}**, is {points(best['diff_mean'])} points from the "
            f"baseline ({move}; {tests}): **no detectable difference** over {n} seed{'s' if n != 1 else ''}.")


def _move(best: dict, base: dict) -> str:
    """'baseline% to variant%', both means over the seeds the two share, so that the step between
    them is the paired difference quoted beside it (also where one of them misses seeds)."""
    shared = sorted(set(best["seed_accs"]) & set(base["seed_accs"]))
    if len(shared) == best["n"] == base["n"]:
        return f"{pct(base['acc_mean'])}% to {pct(best['acc_mean'])}%"
    means = [sum(r["seed_accs"][s] for s in shared) / len(shared) for r in (base, best)]
    return f"{pct(means[0])}% to {pct(means[1])}% over the {len(shared)} seeds both finished"


def _per_example(best: dict) -> str:
    if not finite(best.get("mcnemar_p")):
        return f"No per-example test: {best.get('mcnemar_note') or 'the runs did not record their test predictions'}."
    text = (f"On the test set, pooled over the seeds, it got {best['mcnemar_treatment_only']:,} predictions right that "
            f"the baseline got wrong and {best['mcnemar_baseline_only']:,} the other way round (exact McNemar "
            f"{format_p(best['mcnemar_p'])}, {format_p(best['mcnemar_holm'])} after Holm)")
    if best["mcnemar_holm"] < 0.05 and not best["claimed"]:
        text += ("; that test speaks for these trained models on this test set, not for a model trained with a new "
                 "seed, which is what the seed-level test above judges")
    return text + "."


def _size(best: dict, pairs: list[dict]) -> str:
    pair = next((p for p in pairs if p["variant"] == best["variant"] and p.get("paired_n")), None)
    if pair is None:
        if best.get("matched_width") == 1.0:
            return "Its parameter count is matched by the baseline itself (it adds less than one step of width)."
        return "No baseline of its parameter count was trained, so size and attention are not separated for it."
    verdict = "a difference" if pair["claimed"] else "no detectable difference"
    return (f"Against the baseline widened to its parameter count ({pair['baseline']}) it is "
            f"{points(pair['diff_mean'])} points (95% CI {interval(pair['diff_ci_low'], pair['diff_ci_high'], points)}, "
            f"{format_p(pair['p_value'])}): {verdict}.")


def _cost(best: dict) -> str:
    parts = [f"{ratio(best[key])} the {what}" for key, what in (("params_ratio", "parameters"), ("flops_ratio", "FLOPs"))
             if finite(best.get(key))]
    verdict = best.get("latency_b1_verdict")
    if verdict == SAME:
        parts.append("no measurable difference in batch-1 latency")
    elif verdict == NOISE:
        parts.append(f"a batch-1 latency timed at {ratio(best.get('latency_b1_ratio'))} (faster than its "
                     "baseline: measurement noise, not a gain)")
    elif finite(best.get("latency_b1_ratio")):
        parts.append(f"{ratio(best['latency_b1_ratio'])} the batch-1 latency")
    if finite(best.get("peak_train_ratio")):
        parts.append(f"{ratio(best['peak_train_ratio'])} the peak training memory")
    return f"It costs {listing(parts)} of its baseline." if parts else "Its costs were not measured."


def _ceiling(base: dict) -> str:
    mean, high = base["acc_mean"], base.get("acc_ci_high")
    ci = interval(base.get("acc_ci_low"), high)
    if mean >= CEILING or (finite(high) and high >= CEILING):
        return (f"The baseline already reaches {pct(mean)}% (95% CI {ci}): the data set is at its ceiling, so at "
                f"most {100 * (1 - mean):.2f} points were there to gain.")
    return f"The baseline reaches {pct(mean)}% (95% CI {ci}), {100 * (1 - mean):.1f} points below 100%."


def _power(best: dict) -> str:
    n = best["paired_n"]
    if not finite(best.get("mde")):
        return "With one shared seed there is no spread, so the power of the comparison cannot be estimated."
    text = (f"With {n} seeds and the spread of {best['variant']}'s paired differences (standard deviation "
            f"{num(100 * best['diff_std'], '{:.2f}')} points), the paired t-test detects an effect of "
            f"{num(100 * best['mde'], '{:.2f}')} points with 80% power at alpha 0.05; smaller effects can go unseen.")
    needed = best.get("seeds_needed")
    if best["claimed"]:
        return text
    if best["diff_mean"] == 0:
        return text + " The observed difference is exactly 0."
    if needed is None:
        return text + f" Resolving the observed {points(best['diff_mean'])} points would take more than 100,000 seeds."
    return text + f" Resolving the observed {points(best['diff_mean'])} points would take about {needed:,} seeds."


def _pareto(rows: list[dict]) -> str:
    phrases = []
    for key, label in (("flops_ratio", "FLOPs"), ("latency_b1_ratio", "batch-1 latency")):
        usable = [r for r in rows if finite(r.get(key)) and (r["role"] == "baseline" or finite(r.get("diff_mean")))]
        if not usable:
            continue
        front = [usable[i] for i in pareto_front([(r[key], 0.0 if r["role"] == "baseline" else r["diff_mean"])
                                                  for r in usable])]
        names = listing([r["variant"] for r in front])
        only = all(r["role"] != "attention" for r in front)
        phrases.append(f"against {label} {'only baselines (' + names + ')' if only else names}")
    if not phrases:
        return ""
    return (f"The Pareto front of mean accuracy holds, {' and '.join(phrases)}; it compares means, so read it with "
            "the intervals above.")


def headline(rows: list[dict], pairs: list[dict] = ()) -> str:
    """The headline (Markdown: what the best variant changed, then what it cost and how much the
    study could see) of the report's rows and its capacity-control `pairs` (attention variant
    against its parameter-matched baseline, judged as the rows are)."""
    best = _best(rows)
    base = next((r for r in rows if best is not None and r["variant"] == best["baseline"] and r["n"]), None)
    if base is None or best is None:
        return ("No attention variant shares a seed with its baseline, so this study cannot say what attention "
                "bought.")
    compared = sum(1 for r in rows if finite(r.get("p_value")))
    effect = [_effect(best, base, compared), _per_example(best), _size(best, pairs)]
    context = [_cost(best), _ceiling(base), _power(best), _pareto(rows)]
    return "\n\n".join(" ".join(p for p in part if p) for part in (effect, context))


__all__ = ["CEILING", "headline"]
