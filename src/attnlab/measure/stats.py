"""Statistics for accuracies over a few seeds and over a shared test set.

No paper's model is implemented here; these are the tests and intervals the report relies on,
chosen for bounded values (accuracies in [0, 1]) measured on few seeds.

One variant, its accuracy over seeds:

* Sample standard deviation with Bessel's correction, s = sqrt(sum (x_i - mean)^2 / (n - 1)),
  and Student's t interval of a mean, mean +- t_{(1+level)/2, n-1} * s / sqrt(n) (`summarize`).
* `accuracy_interval`: the t interval computed on the logit scale, log(p / (1 - p)), and mapped
  back, so that it stays inside (0, 1) however few the seeds and however close the accuracy is
  to 100%. A seed at exactly 0 or 1 has no logit; it is moved half a test example inward, which
  needs the number of test examples. Without that number, such values get the percentile
  bootstrap over seeds instead (the result says which method was used).

Two variants trained with the same seeds (same data order, same initial weights where the
layers agree), d_i = a_i - b_i per seed:

* `paired_difference`: the mean difference with its t interval and the paired t-test.
* `bootstrap_interval`: the percentile bootstrap interval of a mean over seeds (Efron and
  Tibshirani 1993), with a generator of fixed seed so that a report is reproducible. It stays
  within the observed values, and so within [0, 1] for accuracies; at few seeds it is close to
  [min, max] and covers less often than its level says, which is why a difference is claimed
  only when the paired test agrees (`supports_difference`).
* `probability_of_outperforming`: P(A > B), the probability that the variant beats the baseline
  when both are trained with a new seed, estimated as the share of seeds where it did (ties count
  one half; Bouthillier et al. 2021, "Accounting for variance in machine learning benchmarks",
  MLSys). Deviation: its interval is the exact binomial (Clopper-Pearson) interval of that
  share, not their percentile bootstrap, which collapses to a point when every seed agrees (3
  wins out of 3 give [1, 1]; the exact interval is [0.29, 1]).
* `paired_power`, `minimum_detectable_effect`, `seeds_needed`: the power of the two-sided
  paired t-test from the noncentral t distribution, power = P(|T'| > t_{1-alpha/2, n-1}) with
  T' ~ t'(n - 1, delta sqrt(n) / s_d); the smallest effect detected with the given power at n
  seeds, and the number of seeds that would detect a given effect.
* `paired_comparison`: all of the above for one pair of variants, seed by seed.

Over the test set (both models' prediction for every test example, pooled over the seeds they
share): `mcnemar_exact`, McNemar's test in its exact form, the two-sided binomial test (p = 1/2)
on the discordant examples, those that exactly one of the two models gets right (Dietterich
1998, "Approximate statistical tests for comparing supervised classification learning
algorithms"). Pooling treats the seed x example pairs as independent; the same example repeated
over seeds is not, so the p-value is optimistic when the same examples flip in every seed.

Several variants against one baseline: `holm` adjusts the p-values for the number compared
(Holm 1979, "A simple sequentially rejective multiple test procedure").

Choices worth naming:

* With one value there is no interval: the bounds and the p-value are NaN, never 0.
* When every paired difference is the same (s_d = 0, which happens with few test images), the
  t statistic is infinite. The interval collapses to that value; the p-value is 0 when the
  difference is not zero and 1 when it is. scipy returns NaN there; we make the limit explicit.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from scipy import optimize as _optimize
from scipy import special as _special
from scipy import stats as _scipy_stats

from ..checks import check_int

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


# --------------------------------------------------------------------------------------------- checks

def _as_values(values: Iterable[float], what: str) -> np.ndarray:
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{what} must be a sequence of numbers, got {type(values).__name__} {values!r}")
    arr = np.asarray(list(values), dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D sequence of numbers, got {values!r}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} must contain finite numbers only, got {arr.tolist()}")
    return arr


def _check_level(confidence: float, name: str = "confidence") -> None:
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {confidence!r}")


def _check_pairs(treatment, baseline, owner: str) -> tuple[np.ndarray, np.ndarray]:
    a = _as_values(treatment, "treatment")
    b = _as_values(baseline, "baseline")
    if a.size != b.size:
        raise ValueError(f"{owner} needs the same number of values (one per seed), "
                         f"got {a.size} treatment and {b.size} baseline values")
    return a, b


# --------------------------------------------------------------------------------------------- one variant

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


def bootstrap_interval(values: Iterable[float], confidence: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` (scipy.stats.bootstrap, a
    generator seeded with `seed`); (NaN, NaN) for a single value."""
    _check_level(confidence)
    check_int("bootstrap_interval", "resamples", resamples, 1)
    x = _as_values(values, "values")
    if x.size < 2:
        return math.nan, math.nan
    result = _scipy_stats.bootstrap((x,), np.mean, n_resamples=resamples, confidence_level=confidence,
                                    method="percentile", rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def accuracy_interval(values: Iterable[float], confidence: float = 0.95, count: Optional[int] = None) -> dict:
    """An interval for the accuracy of a variant over seeds that stays inside [0, 1].

    The t interval of the mean logit, mapped back (method ``logit t``). `count`, the number of
    test examples, moves a value of exactly 0 or 1 half an example inward; without it such a
    value makes the percentile bootstrap over seeds the method (``bootstrap``). Returns n, mean
    (of the accuracies), ci_low, ci_high and method (``none`` for a single value)."""
    _check_level(confidence)
    x = _as_values(values, "accuracies")
    if np.any((x < 0) | (x > 1)):
        raise ValueError(f"accuracies must lie in [0, 1], got {x.tolist()}")
    if count is not None:
        check_int("accuracy_interval", "count (the number of test examples)", count, 1)
    out = {"n": int(x.size), "mean": float(x.mean()), "ci_low": math.nan, "ci_high": math.nan,
           "method": "none", "confidence": confidence}
    if x.size < 2:
        return out
    at_bound = bool(np.any((x == 0) | (x == 1)))
    if at_bound and count is None:
        out["ci_low"], out["ci_high"] = bootstrap_interval(x, confidence)
        out["method"] = "bootstrap"
        return out
    if count is not None:
        x = np.clip(x, 0.5 / count, 1 - 0.5 / count)
    s = summarize(_special.logit(x), confidence)
    out["ci_low"], out["ci_high"] = float(_special.expit(s["ci_low"])), float(_special.expit(s["ci_high"]))
    out["method"] = "logit t"
    return out


# --------------------------------------------------------------------------------------------- two variants, over seeds

def paired_difference(treatment: Sequence[float], baseline: Sequence[float],
                      confidence: float = 0.95) -> dict:
    """Paired comparison treatment - baseline over matching seeds.

    Returns n, mean_diff, std_diff, ci_low, ci_high (t interval of the mean difference),
    t (statistic), p_value (two-sided paired t-test), df and the differences themselves.
    """
    a, b = _check_pairs(treatment, baseline, "paired_difference")
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
    seeds = common_seeds(treatment, baseline)
    out = paired_difference([treatment[s] for s in seeds], [baseline[s] for s in seeds], confidence)
    out["seeds"] = seeds
    return out


def common_seeds(treatment: Mapping[int, float], baseline: Mapping[int, float]) -> list[int]:
    """The seeds both mappings (seed -> value) hold, sorted; ValueError when there is none."""
    for what, m in (("treatment", treatment), ("baseline", baseline)):
        if not isinstance(m, Mapping):
            raise TypeError(f"{what} must map seed -> value, got {type(m).__name__}")
    seeds = sorted(set(treatment) & set(baseline))
    if not seeds:
        raise ValueError(f"no seed in common: treatment seeds {sorted(treatment)}, baseline seeds {sorted(baseline)}")
    return seeds


def probability_of_outperforming(treatment: Sequence[float], baseline: Sequence[float],
                                 confidence: float = 0.95) -> dict:
    """P(A > B) over paired seeds: the share of seeds where the treatment scored higher (a tie
    counts 1/2), with the exact binomial (Clopper-Pearson) interval of that share; ties count as
    losses for the lower bound and as wins for the upper. {"p", "ci_low", "ci_high", "n"}."""
    _check_level(confidence)
    a, b = _check_pairs(treatment, baseline, "probability_of_outperforming")
    n, wins, ties = int(a.size), int(np.sum(a > b)), int(np.sum(a == b))
    low = _scipy_stats.binomtest(wins, n).proportion_ci(confidence, method="exact").low
    high = _scipy_stats.binomtest(wins + ties, n).proportion_ci(confidence, method="exact").high
    return {"p": (wins + ties / 2) / n, "ci_low": float(low), "ci_high": float(high), "n": n}


# --------------------------------------------------------------------------------------------- power

def _check_power_args(owner: str, sd, n, alpha, power=None) -> None:
    check_int(owner, "n (the number of seeds)", n, 2)
    if isinstance(sd, bool) or not isinstance(sd, (int, float)) or not math.isfinite(sd) or sd < 0:
        raise ValueError(f"{owner}: sd must be a finite number >= 0, got {sd!r}")
    _check_level(alpha, "alpha")
    if power is not None:
        _check_level(power, "power")


def paired_power(effect: float, sd: float, n: int, alpha: float = 0.05) -> float:
    """The power of the two-sided paired t-test at level `alpha` to detect a true mean
    difference `effect` when the per-seed differences have standard deviation `sd`, with `n`
    seeds: P(|T'| > t_{1-alpha/2, n-1}), T' noncentral t with n - 1 degrees of freedom and
    noncentrality effect * sqrt(n) / sd."""
    _check_power_args("paired_power", sd, n, alpha)
    if not isinstance(effect, (int, float)) or not math.isfinite(effect):
        raise ValueError(f"paired_power: effect must be a finite number, got {effect!r}")
    if sd == 0:
        return 1.0 if effect != 0 else alpha
    df = n - 1
    critical = _scipy_stats.t.ppf(1 - alpha / 2, df)
    nc = abs(effect) * math.sqrt(n) / sd
    # P(T' < -c) written as P(T'(-nc) > c): scipy's nct.cdf returns NaN far in the lower tail
    return float(_scipy_stats.nct.sf(critical, df, nc) + _scipy_stats.nct.sf(critical, df, -nc))


def minimum_detectable_effect(sd: float, n: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """The smallest true mean difference (in the units of `sd`) that the two-sided paired t-test
    at level `alpha` detects with probability `power` with `n` seeds (0 when sd is 0)."""
    _check_power_args("minimum_detectable_effect", sd, n, alpha, power)
    if sd == 0:
        return 0.0
    if power <= alpha:
        raise ValueError(f"minimum_detectable_effect: power {power!r} must exceed alpha {alpha!r}")
    high = sd
    while paired_power(high, sd, n, alpha) < power:
        high *= 2
    return float(_optimize.brentq(lambda e: paired_power(e, sd, n, alpha) - power, 0.0, high, xtol=1e-12 * high))


def seeds_needed(effect: float, sd: float, alpha: float = 0.05, power: float = 0.8,
                 max_seeds: int = 100_000) -> Optional[int]:
    """The smallest number of seeds (>= 2) at which the paired t-test detects a true difference
    `effect` with probability `power`, for per-seed differences of standard deviation `sd`;
    None when `effect` is 0 or more than `max_seeds` would be needed."""
    _check_power_args("seeds_needed", sd, 2, alpha, power)
    check_int("seeds_needed", "max_seeds", max_seeds, 2)
    if not isinstance(effect, (int, float)) or not math.isfinite(effect):
        raise ValueError(f"seeds_needed: effect must be a finite number, got {effect!r}")
    if effect == 0:
        return None

    def enough(n: int) -> bool:
        return paired_power(effect, sd, n, alpha) >= power

    if enough(2):
        return 2
    low, high = 2, 4                      # enough(low) is False; find a high that is enough
    while not enough(high):
        if high >= max_seeds:
            return None
        low, high = high, min(2 * high, max_seeds)
    while high - low > 1:                 # power grows with n: bisect
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


# --------------------------------------------------------------------------------------------- the bundle per pair

def paired_comparison(treatment: Mapping[int, float], baseline: Mapping[int, float], confidence: float = 0.95,
                      power: float = 0.8) -> dict:
    """Everything the report says about a variant against its baseline over the seeds both have.

    The keys of `paired_by_seed` (t interval as t_ci_low / t_ci_high, paired t-test p_value),
    ci_low / ci_high: the percentile bootstrap interval of the mean difference; p_better,
    p_better_low, p_better_high: P(A > B) with its interval; mde: the minimum detectable effect
    at these seeds and this spread (alpha = 1 - confidence, `power`); seeds_needed: the seeds
    that would detect the observed mean difference (None when it is 0 or out of reach). The
    spread-dependent entries are NaN / None with fewer than 2 seeds."""
    out = paired_by_seed(treatment, baseline, confidence)
    out["t_ci_low"], out["t_ci_high"] = out["ci_low"], out["ci_high"]
    d = out["differences"]
    out["ci_low"], out["ci_high"] = bootstrap_interval(d, confidence)
    out["ci_method"] = "percentile bootstrap over seeds"
    a = [treatment[s] for s in out["seeds"]]
    b = [baseline[s] for s in out["seeds"]]
    better = probability_of_outperforming(a, b, confidence)
    out.update(p_better=better["p"], p_better_low=better["ci_low"], p_better_high=better["ci_high"])
    alpha = round(1 - confidence, 12)
    enough = out["n"] >= 2 and math.isfinite(out["std_diff"])
    out["mde"] = minimum_detectable_effect(out["std_diff"], out["n"], alpha, power) if enough else math.nan
    out["seeds_needed"] = seeds_needed(out["mean_diff"], out["std_diff"], alpha, power) if enough else None
    out.update(alpha=alpha, power=power)
    return out


# --------------------------------------------------------------------------------------------- over the test set

def mcnemar_exact(treatment_correct: Sequence[bool], baseline_correct: Sequence[bool]) -> dict:
    """The exact McNemar test of two classifiers on the same examples: the two-sided binomial
    test (p = 1/2, scipy.stats.binomtest) on the examples exactly one of them gets right.
    Returns examples, treatment_only (right only for the treatment), baseline_only, p_value
    (1 when no example is discordant)."""
    a = np.asarray(treatment_correct)
    b = np.asarray(baseline_correct)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"mcnemar_exact needs two equally long, non-empty 1-D sequences of right/wrong, got "
                         f"shapes {a.shape} and {b.shape}")
    for what, arr in (("treatment_correct", a), ("baseline_correct", b)):
        if arr.dtype != bool and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"mcnemar_exact: {what} must hold True/False (or 1/0) per example, got values "
                             f"{sorted(set(np.unique(arr).tolist()))[:5]}")
    a, b = a.astype(bool), b.astype(bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    p = float(_scipy_stats.binomtest(only_a, discordant, 0.5).pvalue) if discordant else 1.0
    return {"examples": int(a.size), "treatment_only": only_a, "baseline_only": only_b, "p_value": p}


# --------------------------------------------------------------------------------------------- several comparisons

def holm(p_values: Sequence[Optional[float]]) -> list[float]:
    """Holm's step-down adjustment of `p_values` for the number of comparisons: sorted
    ascending, the k-th smallest (k = 1..m) becomes max over j <= k of min(1, (m - j + 1) p_(j)).
    None or NaN entries are left as NaN and not counted in m; the order of the input is kept."""
    if isinstance(p_values, (str, bytes)) or not hasattr(p_values, "__iter__"):
        raise TypeError(f"p_values must be a sequence of numbers, got {type(p_values).__name__} {p_values!r}")
    values = [math.nan if p is None else p for p in p_values]
    for p in values:
        if isinstance(p, bool) or not isinstance(p, (int, float)) or (math.isfinite(p) and not 0 <= p <= 1):
            raise ValueError(f"p_values must be numbers in [0, 1] (None or NaN for a missing one), got {p_values!r}")
    present = sorted((p, i) for i, p in enumerate(values) if math.isfinite(p))
    m = len(present)
    out = [math.nan] * len(values)
    running = 0.0
    for k, (p, i) in enumerate(present):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


# --------------------------------------------------------------------------------------------- words

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


def supports_difference(paired: Mapping, p_adjusted: Optional[float] = None) -> bool:
    """True when the interval (ci_low, ci_high) exists and excludes 0 and the test agrees: the
    p-value (`p_adjusted` when given, else paired['p_value']) is below 1 - confidence."""
    lo, hi = paired.get("ci_low", math.nan), paired.get("ci_high", math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)) or not (lo > 0.0 or hi < 0.0):
        return False
    p = p_adjusted if p_adjusted is not None else paired.get("p_value", math.nan)
    return math.isfinite(p) and p < 1 - paired.get("confidence", 0.95)


def effect_sentence(name: str, paired: Mapping, unit: str = "points", scale: float = 100.0,
                    digits: int = 1, baseline: str = "the baseline", p_adjusted: Optional[float] = None) -> str:
    """The plain sentence for one variant's paired difference to the baseline.

    `paired` is the dict of `paired_difference` or `paired_comparison` (its interval is shown);
    values are multiplied by `scale` (accuracy in [0, 1] -> percentage points); `p_adjusted`, the
    p-value adjusted for the number of variants compared, is shown beside the raw one and
    decides. A difference is claimed only when `supports_difference`:

        "SE: +0.8 points, 95% CI [+0.3, +1.3], p=0.01, adjusted p=0.02, over 5 seeds"
        "ECA: no detectable difference from the baseline (+0.2 points, 95% CI [-0.4, +0.8], p=0.41 over 5 seeds)"
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    for key in ("n", "mean_diff", "ci_low", "ci_high", "p_value"):
        if key not in paired:
            raise ValueError(f"paired result lacks {key!r}; expected the dict of paired_difference, got keys {sorted(paired)}")
    n = int(paired["n"])
    level = paired.get("confidence", 0.95)
    mean = paired["mean_diff"] * scale
    seeds = f"over {n} seed{'s' if n != 1 else ''}"
    if n < 2 or not math.isfinite(paired["ci_low"]):
        return (f"{name}: {_signed(mean, digits)} {unit} {seeds}; too few seeds for a confidence "
                f"interval, so no difference from {baseline} can be claimed")
    lo, hi = paired["ci_low"] * scale, paired["ci_high"] * scale
    interval = f"{level * 100:.0f}% CI [{_signed(lo, digits)}, {_signed(hi, digits)}]"
    p_text = format_p(paired["p_value"])
    if p_adjusted is not None:
        p_text += f", adjusted {format_p(p_adjusted)},"
    body = f"{_signed(mean, digits)} {unit}, {interval}, {p_text} {seeds}"
    if supports_difference(paired, p_adjusted):
        return f"{name}: {body}"
    return f"{name}: no detectable difference from {baseline} ({body})"


__all__ = ["t_critical", "summarize", "bootstrap_interval", "accuracy_interval", "paired_difference",
           "paired_by_seed", "common_seeds", "probability_of_outperforming", "paired_power",
           "minimum_detectable_effect", "seeds_needed", "paired_comparison", "mcnemar_exact", "holm",
           "format_p", "supports_difference", "effect_sentence"]
