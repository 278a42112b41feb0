"""Statistics of the effect table, checked against arithmetic written out by hand."""
import math

import pytest

from attnlab.measure.stats import (effect_sentence, format_p, paired_by_seed, paired_difference,
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
