"""Statistics over seeds: mean, spread, t confidence intervals and paired comparisons.

No paper is implemented here; these are the textbook formulas the report relies on.

* Sample standard deviation with Bessel's correction: s = sqrt(sum (x_i - mean)^2 / (n - 1)).
* Two-sided confidence interval of a mean with Student's t distribution (n - 1 degrees of
  freedom): mean +- t_{(1+level)/2, n-1} * s / sqrt(n).
* Paired comparison of two variants trained with the same seeds (same initial weights where
  the architectures agree, same data order): d_i = a_i - b_i per seed, the interval above on d,
  and the paired t-test t = mean(d) / (s_d / sqrt(n)) with its two-sided p-value.

Choices worth naming:

* With one value there is no interval: the bounds and the p-value are NaN, never 0.
* When every paired difference is the same (s_d = 0, which happens with few test images), the
  t statistic is infinite. The interval collapses to that value; the p-value is 0 when the
  difference is not zero and 1 when it is. scipy returns NaN there; we make the limit explicit.
* `effect_sentence` claims a difference only when the confidence interval excludes 0. Otherwise
  it says "no detectable difference" and still prints the interval so a reader sees how large
  an effect the data cannot exclude.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import stats as _scipy_stats

from ..checks import check_int


def _as_values(values: Iterable[float], what: str) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what} must be a sequence of numbers, got {type(values).__name__} {values!r}")
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of numbers, got {values!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must contain finite numbers only, got {arr.tolist()}")
    return arr


def _check_level(confidence: float) -> None:
    if not isinstance(confidence, (int, float)) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be a number strictly between 0 and 1, got {confidence!r}")


def t_critical(n: int, confidence: float = 0.95) -> float:
    """The two-sided Student t quantile for a mean of `n` values (n - 1 degrees of freedom)."""
    _check_level(confidence)
    check_int("t_critical", "n (the number of values)", n, 2)
    return float(_scipy_stats.t.ppf(0.5 + confidence / 2.0, n - 1))


def summarize(values: Iterable[float], confidence: float = 0.95) -> dict:
    """n, mean, sample std (ddof=1), standard error and the t confidence interval of the mean."""
    _check_level(confidence)
    x = _as_values(values, "values")
    n = int(x.size)
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "sem": math.nan,
                "ci_low": math.nan, "ci_high": math.nan, "confidence": confidence}
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    half = t_critical(n, confidence) * sem
    return {"n": n, "mean": mean, "std": std, "sem": sem,
            "ci_low": mean - half, "ci_high": mean + half, "confidence": confidence}


def paired_difference(treatment: Sequence[float], baseline: Sequence[float],
                      confidence: float = 0.95) -> dict:
    """Paired comparison treatment - baseline over matching seeds.

    Returns n, mean_diff, std_diff, ci_low, ci_high (t interval of the mean difference),
    t (statistic), p_value (two-sided paired t-test), df and the differences themselves.
    """
    a = _as_values(treatment, "treatment")
    b = _as_values(baseline, "baseline")
    if a.size != b.size:
        raise ValueError(f"paired_difference needs the same number of values (one per seed), "
                         f"got {a.size} treatment and {b.size} baseline values")
    d = a - b
    s = summarize(d, confidence)
    n = s["n"]
    out = {"n": n, "mean_diff": s["mean"], "std_diff": s["std"], "ci_low": s["ci_low"],
           "ci_high": s["ci_high"], "t": math.nan, "p_value": math.nan, "df": n - 1,
           "confidence": confidence, "differences": d.tolist()}
    if n < 2:
        return out
    if s["std"] == 0.0:
        out["t"] = math.copysign(math.inf, s["mean"]) if s["mean"] != 0 else 0.0
        out["p_value"] = 0.0 if s["mean"] != 0 else 1.0
        return out
    t = s["mean"] / s["sem"]
    out["t"] = float(t)
    out["p_value"] = float(2.0 * _scipy_stats.t.sf(abs(t), n - 1))
    return out


def paired_by_seed(treatment: Mapping[int, float], baseline: Mapping[int, float],
                   confidence: float = 0.95) -> dict:
    """`paired_difference` on the seeds both mappings share (seed -> value); adds 'seeds'."""
    for what, m in (("treatment", treatment), ("baseline", baseline)):
        if not isinstance(m, Mapping):
            raise TypeError(f"{what} must map seed -> value, got {type(m).__name__}")
    seeds = sorted(set(treatment) & set(baseline))
    if not seeds:
        raise ValueError(f"no seed in common: treatment seeds {sorted(treatment)}, baseline seeds {sorted(baseline)}")
    out = paired_difference([treatment[s] for s in seeds], [baseline[s] for s in seeds], confidence)
    out["seeds"] = seeds
    return out


def format_p(p: float) -> str:
    """'p=0.01', 'p<0.001' or 'p=n/a'."""
    if p is None or not math.isfinite(p):
        return "p=n/a"
    if p < 0.001:
        return "p<0.001"
    if p < 0.01:
        return f"p={p:.3f}"
    return f"p={p:.2f}"


def _signed(v: float, digits: int) -> str:
    return f"{v:+.{digits}f}"


def supports_difference(paired: Mapping) -> bool:
    """True when the paired confidence interval exists and excludes 0."""
    lo, hi = paired.get("ci_low", math.nan), paired.get("ci_high", math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return False
    return lo > 0.0 or hi < 0.0


def effect_sentence(name: str, paired: Mapping, unit: str = "points", scale: float = 100.0,
                    digits: int = 1, baseline: str = "the baseline",
                    confidence: Optional[float] = None) -> str:
    """The plain sentence for one variant's paired difference to the baseline.

    `paired` is the dict of `paired_difference`; values are multiplied by `scale` (accuracy in
    [0, 1] -> percentage points). Claims a difference only when the interval excludes 0:

        "SE: +0.8 points, 95% CI [+0.3, +1.3], p=0.01 over 5 seeds"
        "ECA: no detectable difference from the baseline (+0.2 points, 95% CI [-0.4, +0.8], p=0.41 over 5 seeds)"
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    for key in ("n", "mean_diff", "ci_low", "ci_high", "p_value"):
        if key not in paired:
            raise ValueError(f"paired result lacks {key!r}; expected the dict of paired_difference, got keys {sorted(paired)}")
    n = int(paired["n"])
    level = confidence if confidence is not None else paired.get("confidence", 0.95)
    mean = paired["mean_diff"] * scale
    seeds = f"over {n} seed{'s' if n != 1 else ''}"
    if n < 2 or not math.isfinite(paired["ci_low"]):
        return (f"{name}: {_signed(mean, digits)} {unit} {seeds}; too few seeds for a confidence "
                f"interval, so no difference from {baseline} can be claimed")
    lo, hi = paired["ci_low"] * scale, paired["ci_high"] * scale
    interval = f"{level * 100:.0f}% CI [{_signed(lo, digits)}, {_signed(hi, digits)}]"
    body = f"{_signed(mean, digits)} {unit}, {interval}, {format_p(paired['p_value'])} {seeds}"
    if supports_difference(paired):
        return f"{name}: {body}"
    return f"{name}: no detectable difference from {baseline} ({body})"


__all__ = ["t_critical", "summarize", "paired_difference", "paired_by_seed", "format_p",
           "supports_difference", "effect_sentence"]
