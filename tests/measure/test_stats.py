"""Statistics of the report, checked against arithmetic written out by hand or against scipy."""
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from attnlab.measure.stats import (accuracy_interval, bootstrap_interval, effect_sentence, format_p, holm,
                                   mcnemar_exact, minimum_detectable_effect, paired_by_seed, paired_comparison,
                                   paired_difference, paired_power, probability_of_outperforming, seeds_needed,
                                   summarize, t_critical)

# Two-sided 97.5% quantiles of Student's t from a printed table.
T_975_DF2 = 4.302653
T_975_DF4 = 2.776445


def test_summarize_three_values_by_hand():
    s = summarize([0.90, 0.92, 0.94])
    # mean = 2.76 / 3 = 0.92; deviations -0.02, 0, +0.02 -> s^2 = (4e-4 + 4e-4) / 2 = 4e-4, s = 0.02
    assert s["n"] == 3
    assert s["mean"] == pytest.approx(0.92)
    assert s["std"] == pytest.approx(0.02)
    sem = 0.02 / math.sqrt(3)  # 0.011547
    assert s["sem"] == pytest.approx(sem)
    half = T_975_DF2 * sem  # 0.049683
    assert s["ci_low"] == pytest.approx(0.92 - half, abs=1e-6)
    assert s["ci_high"] == pytest.approx(0.92 + half, abs=1e-6)
    assert t_critical(3) == pytest.approx(T_975_DF2, abs=1e-5)


def test_single_value_has_no_interval():
    s = summarize([0.5])
    assert s["mean"] == 0.5 and math.isnan(s["std"]) and math.isnan(s["ci_low"])


def test_paired_difference_by_hand_df2():
    p = paired_difference([0.91, 0.93, 0.96], [0.90, 0.92, 0.94])
    # d = 0.01, 0.01, 0.02; mean 0.04/3 = 0.013333; deviations -1/300, -1/300, +2/300
    # s_d^2 = (1 + 1 + 4) / 300^2 / 2 = 3.3333e-5, s_d = 0.0057735, sem = 0.0033333, t = 4
    assert p["mean_diff"] == pytest.approx(0.04 / 3)
    assert p["std_diff"] == pytest.approx(math.sqrt(6 / 2) / 300)
    assert p["t"] == pytest.approx(4.0)
    # for 2 degrees of freedom the two-sided p-value is 1 - |t| / sqrt(t^2 + 2)
    assert p["p_value"] == pytest.approx(1 - 4 / math.sqrt(18), rel=1e-6)
    half = T_975_DF2 * (math.sqrt(3) / 300) / math.sqrt(3)  # t * s_d / sqrt(n) = 0.014342
    assert p["ci_low"] == pytest.approx(0.04 / 3 - half, abs=1e-6)
    assert p["ci_high"] == pytest.approx(0.04 / 3 + half, abs=1e-6)
    assert p["ci_low"] < 0 < p["ci_high"]


def test_paired_difference_by_hand_df4_and_sentence_claims_it():
    base = [0.80, 0.81, 0.79, 0.82, 0.80]
    d = [0.01, 0.02, 0.03, 0.02, 0.02]
    p = paired_difference([b + e for b, e in zip(base, d)], base)
    # mean 0.02; deviations -0.01, 0, 0.01, 0, 0 -> s_d^2 = 2e-4 / 4 = 5e-5; sem = sqrt(5e-5 / 5) = 0.0031623
    sem = math.sqrt(5e-5 / 5)
    assert p["mean_diff"] == pytest.approx(0.02)
    t = 0.02 / sem  # 6.3246
    assert p["t"] == pytest.approx(t)
    # Student t CDF for 4 degrees of freedom in closed form:
    # F(t) = 1/2 + (3/4) x (1 - x^2 / 3) with x = t / sqrt(t^2 + 4); two-sided p = 2 (1 - F(|t|))
    x = t / math.sqrt(t * t + 4)
    cdf = 0.5 + 0.75 * x * (1 - x * x / 3)
    assert p["p_value"] == pytest.approx(2 * (1 - cdf), rel=1e-6)
    assert p["ci_low"] == pytest.approx(0.02 - T_975_DF4 * sem, abs=1e-6)  # 0.01122
    assert p["ci_high"] == pytest.approx(0.02 + T_975_DF4 * sem, abs=1e-6)  # 0.02878
    sentence = effect_sentence("SE", p)
    assert sentence == "SE: +2.0 points, 95% CI [+1.1, +2.9], p=0.003 over 5 seeds"


def test_sentence_never_claims_a_difference_the_interval_does_not_support():
    p = paired_difference([0.91, 0.93, 0.96], [0.90, 0.92, 0.94])  # CI [-0.10, +2.77] points
    s = effect_sentence("ECA", p)
    assert s.startswith("ECA: no detectable difference from the baseline (")
    assert "[-0.1, +2.8]" in s and "p=0.06" in s and "over 3 seeds" in s
    one = paired_difference([0.9], [0.8])
    assert "no difference" in effect_sentence("GC", one) and "CI" not in effect_sentence("GC", one)


def test_identical_differences_give_explicit_limits():
    p = paired_difference([0.5, 0.6, 0.7], [0.4, 0.5, 0.6])
    assert p["p_value"] == 0.0 and p["ci_low"] == pytest.approx(0.1) and p["ci_high"] == pytest.approx(0.1)
    same = paired_difference([0.5, 0.6], [0.5, 0.6])
    assert same["p_value"] == 1.0 and "no detectable" in effect_sentence("X", same)


def test_paired_by_seed_uses_common_seeds_only():
    p = paired_by_seed({0: 0.9, 1: 0.8, 2: 0.7}, {1: 0.7, 2: 0.6, 5: 0.1})
    assert p["seeds"] == [1, 2] and p["mean_diff"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="no seed in common"):
        paired_by_seed({0: 0.9}, {1: 0.8})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="same number"):
        paired_difference([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        summarize([1.0, float("nan")])
    with pytest.raises(ValueError, match="confidence"):
        summarize([1.0, 2.0], confidence=95)
    with pytest.raises(TypeError):
        summarize("abc")
    assert format_p(0.0004) == "p<0.001" and format_p(0.0123) == "p=0.01" and format_p(float("nan")) == "p=n/a"
    with pytest.raises(ValueError, match=r"accuracies must lie in \[0, 1\], got \[0.5, 91.0\]"):
        accuracy_interval([0.5, 91.0])
    with pytest.raises(ValueError, match="count"):
        accuracy_interval([0.5, 0.6], count=0)
    with pytest.raises(ValueError, match=r"p_values must be numbers in \[0, 1\]"):
        holm([0.2, 1.5])
    with pytest.raises(ValueError, match="sd must be a finite number >= 0"):
        minimum_detectable_effect(-1.0, 3)
    with pytest.raises(ValueError, match="n \\(the number of seeds\\) must be an int >= 2"):
        paired_power(0.1, 0.1, 1)
    with pytest.raises(ValueError, match="equally long"):
        mcnemar_exact([True, False], [True])
    with pytest.raises(ValueError, match="True/False"):
        mcnemar_exact([0, 2], [1, 1])


# --------------------------------------------------------------------------------------------- accuracy intervals

def test_accuracy_interval_is_the_t_interval_of_the_logits_by_hand():
    accs = [0.9893, 0.9935, 0.9977]
    r = accuracy_interval(accs)
    logits = [math.log(p / (1 - p)) for p in accs]
    mean = sum(logits) / 3
    sd = math.sqrt(sum((z - mean) ** 2 for z in logits) / 2)
    half = T_975_DF2 * sd / math.sqrt(3)
    expit = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert r["method"] == "logit t" and r["mean"] == pytest.approx(0.9935)
    assert r["ci_low"] == pytest.approx(expit(mean - half), rel=1e-6)
    assert r["ci_high"] == pytest.approx(expit(mean + half), rel=1e-6)
    # the plain t interval runs past 100%; the logit one stays inside and still holds the mean
    assert summarize(accs)["ci_high"] > 1.0
    assert 0 < r["ci_low"] < 0.9935 < r["ci_high"] < 1


def test_accuracy_interval_at_100_percent():
    with_count = accuracy_interval([1.0, 0.99, 0.995], count=360)
    # 1.0 becomes 1 - 0.5 / 360; the others are untouched
    moved = accuracy_interval([1 - 0.5 / 360, 0.99, 0.995])
    assert with_count["method"] == "logit t" and with_count["ci_high"] == pytest.approx(moved["ci_high"])
    assert with_count["ci_high"] < 1
    without = accuracy_interval([1.0, 0.99, 0.995])
    # with 3 seeds, the 2.5% and 97.5% bootstrap quantiles are the smallest and largest value:
    # each resample of three is all-min (or all-max) with probability 1/27 > 2.5%
    assert without["method"] == "bootstrap"
    assert (without["ci_low"], without["ci_high"]) == pytest.approx((0.99, 1.0))
    one = accuracy_interval([0.7])
    assert one["method"] == "none" and math.isnan(one["ci_low"])


def test_bootstrap_interval_stays_in_the_data_and_repeats():
    assert bootstrap_interval([0.90, 0.92, 0.94]) == pytest.approx((0.90, 0.94))
    rng = np.random.default_rng(3)
    x = rng.uniform(0.8, 1.0, 40)
    lo, hi = bootstrap_interval(x)
    assert (lo, hi) == bootstrap_interval(x)  # fixed generator: the same report twice
    assert 0.8 <= x.min() <= lo < x.mean() < hi <= x.max() <= 1.0
    # for 40 values the percentile interval is close to the normal one, mean +- 1.96 s / sqrt(n)
    half = 1.96 * x.std(ddof=1) / math.sqrt(40)
    assert lo == pytest.approx(x.mean() - half, abs=0.25 * half) and hi == pytest.approx(x.mean() + half, abs=0.25 * half)
    assert all(math.isnan(v) for v in bootstrap_interval([0.5]))


# --------------------------------------------------------------------------------------------- P(A > B)

def test_probability_of_outperforming_by_hand():
    r = probability_of_outperforming([0.91, 0.93, 0.96], [0.90, 0.92, 0.94])
    # 3 wins of 3: the exact lower bound solves p^3 = 0.025
    assert r["p"] == 1.0 and r["ci_low"] == pytest.approx(0.025 ** (1 / 3)) and r["ci_high"] == 1.0
    tie = probability_of_outperforming([0.91, 0.92, 0.96, 0.5], [0.90, 0.92, 0.97, 0.6])
    # 1 win, 1 tie, 2 losses: p = 1.5 / 4; lower bound from 1 win of 4, upper from 2 of 4
    assert tie["p"] == pytest.approx(0.375)
    assert tie["ci_low"] == pytest.approx(scipy_stats.beta.ppf(0.025, 1, 4))
    assert tie["ci_high"] == pytest.approx(scipy_stats.beta.ppf(0.975, 3, 2))


# --------------------------------------------------------------------------------------------- per-example test

def test_mcnemar_is_the_exact_binomial_test_on_discordant_examples():
    treatment = [True] * 10 + [False] * 2 + [True] * 30 + [False] * 5
    baseline = [False] * 10 + [True] * 2 + [True] * 30 + [False] * 5
    r = mcnemar_exact(treatment, baseline)
    # 10 vs 2 discordant: p = 2 (C(12,10) + C(12,11) + C(12,12)) / 2^12 = 2 * 79 / 4096
    assert (r["examples"], r["treatment_only"], r["baseline_only"]) == (47, 10, 2)
    assert r["p_value"] == pytest.approx(158 / 4096)
    assert r["p_value"] == pytest.approx(scipy_stats.binomtest(10, 12).pvalue)
    assert mcnemar_exact([1, 0, 1], [1, 0, 1])["p_value"] == 1.0  # nothing discordant


# --------------------------------------------------------------------------------------------- Holm

def test_holm_by_hand():
    # m = 4; sorted 0.005, 0.01, 0.03, 0.04 -> 4 * 0.005, 3 * 0.01, 2 * 0.03, max(0.06, 1 * 0.04)
    adjusted = holm([0.01, 0.04, 0.03, None, 0.005])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06]) and adjusted[4] == pytest.approx(0.02)
    assert math.isnan(adjusted[3])  # missing stays missing and is not counted in m
    assert holm([0.5, 0.6]) == [1.0, 1.0] and holm([0.02]) == [0.02] and holm([]) == []


# --------------------------------------------------------------------------------------------- power

def test_power_from_the_noncentral_t_by_hand():
    # n = 3, s_d = 0.5 points, effect 1 point: noncentrality 1 * sqrt(3) / 0.5, df 2
    nc, crit = 2 * math.sqrt(3), scipy_stats.t.ppf(0.975, 2)
    expected = 1 - scipy_stats.nct.cdf(crit, 2, nc) + scipy_stats.nct.cdf(-crit, 2, nc)
    assert paired_power(1.0, 0.5, 3) == pytest.approx(expected, rel=1e-9)


def test_minimum_detectable_effect():
    mde = minimum_detectable_effect(0.5, 3)
    assert paired_power(mde, 0.5, 3) == pytest.approx(0.8, abs=1e-9)
    # Monte Carlo: paired t-tests on 3 normal differences of mean `mde` reject 80% of the time
    rng = np.random.default_rng(0)
    d = rng.normal(mde, 0.5, size=(40_000, 3))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(3))
    assert np.mean(np.abs(t) > scipy_stats.t.ppf(0.975, 2)) == pytest.approx(0.8, abs=0.01)
    # many seeds: the normal-theory formula (z_0.975 + z_0.8) s / sqrt(n)
    z = scipy_stats.norm.ppf(0.975) + scipy_stats.norm.ppf(0.8)
    assert minimum_detectable_effect(1.0, 2000) == pytest.approx(z / math.sqrt(2000), rel=2e-3)
    assert minimum_detectable_effect(0.0, 3) == 0.0


def test_seeds_needed_is_the_first_count_with_enough_power():
    n = seeds_needed(0.2, 0.5)
    assert paired_power(0.2, 0.5, n) >= 0.8 > paired_power(0.2, 0.5, n - 1)
    assert seeds_needed(-0.2, 0.5) == n  # two-sided: the sign does not matter
    assert seeds_needed(0.0, 0.5) is None and seeds_needed(1e-6, 0.5, max_seeds=1000) is None
    assert seeds_needed(1.0, 0.0) == 2


def test_paired_comparison_bundles_the_statistics():
    c = paired_comparison({0: 0.91, 1: 0.93, 2: 0.96, 7: 0.5}, {0: 0.90, 1: 0.92, 2: 0.94})
    t = paired_by_seed({0: 0.91, 1: 0.93, 2: 0.96}, {0: 0.90, 1: 0.92, 2: 0.94})
    assert c["seeds"] == [0, 1, 2] and c["p_value"] == pytest.approx(t["p_value"])
    assert (c["t_ci_low"], c["t_ci_high"]) == pytest.approx((t["ci_low"], t["ci_high"]))
    assert (c["ci_low"], c["ci_high"]) == pytest.approx((0.01, 0.02))  # bootstrap of d = .01, .01, .02
    assert c["p_better"] == 1.0 and c["mde"] == pytest.approx(minimum_detectable_effect(t["std_diff"], 3))
    assert c["seeds_needed"] == seeds_needed(t["mean_diff"], t["std_diff"])
    # the bootstrap interval excludes 0 but the paired test does not reject: no claim
    assert effect_sentence("se", c).startswith("se: no detectable difference")
    one = paired_comparison({0: 0.9}, {0: 0.8})
    assert math.isnan(one["mde"]) and one["seeds_needed"] is None


def test_sentence_shows_and_uses_the_adjusted_p_value():
    p = paired_difference([b + e for b, e in zip([0.80, 0.81, 0.79, 0.82, 0.80], [0.01, 0.02, 0.03, 0.02, 0.02])],
                          [0.80, 0.81, 0.79, 0.82, 0.80])
    assert effect_sentence("SE", p, p_adjusted=0.012) == \
        "SE: +2.0 points, 95% CI [+1.1, +2.9], p=0.003, adjusted p=0.01, over 5 seeds"
    assert effect_sentence("SE", p, p_adjusted=0.09).startswith("SE: no detectable difference from the baseline (")
