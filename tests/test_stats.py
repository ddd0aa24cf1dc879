"""Paired statistics: bootstrap intervals cover what they should, the length effect is removed, verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from lab import stats


def test_bootstrap_interval_covers_a_known_difference():
    rng = np.random.default_rng(0)
    covered = 0
    for trial in range(40):  # a 95% interval should cover the true mean 0.3 in most trials
        diffs = 0.3 + rng.normal(0, 1, size=60)
        ci = stats.bootstrap_mean(diffs, n_boot=500, seed=trial)
        assert ci["lo"] < ci["mean"] < ci["hi"] and ci["n"] == 60
        covered += ci["lo"] <= 0.3 <= ci["hi"]
    assert covered >= 34  # 95% of 40 = 38; allow for the bootstrap's slight under-coverage at n = 60


def test_a_constant_difference_has_a_zero_width_interval():
    ci = stats.bootstrap_mean([0.5] * 10)
    assert ci["mean"] == ci["lo"] == ci["hi"] == pytest.approx(0.5)
    assert stats.verdict(ci) == "B higher"
    assert stats.verdict(stats.bootstrap_mean([-0.5] * 10)) == "B lower"
    assert stats.verdict(stats.bootstrap_mean([-1.0, 1.0] * 10)) == "no clear difference"


def test_length_adjustment_removes_a_gain_that_is_only_length():
    """Reward = 0.01 per character exactly: B writes 50 characters more, so the raw gain is 0.5 and the adjusted 0."""
    rng = np.random.default_rng(1)
    len_a = rng.integers(50, 200, size=40).astype(float)
    len_b = len_a + 50
    reward_a, reward_b = 0.01 * len_a, 0.01 * len_b
    raw = stats.bootstrap_mean(reward_b - reward_a)
    adjusted = stats.length_adjusted(reward_a, reward_b, len_a, len_b, n_boot=300)
    assert raw["mean"] == pytest.approx(0.5)
    assert adjusted["mean"] == pytest.approx(0.0, abs=1e-9)
    assert adjusted["slope_per_char"] == pytest.approx(0.01)


def test_length_adjustment_keeps_a_gain_in_content():
    rng = np.random.default_rng(2)
    len_a = rng.integers(50, 200, size=40).astype(float)
    len_b = len_a.copy()  # same lengths: nothing to remove
    reward_a = rng.normal(0, 0.1, size=40)
    reward_b = reward_a + 0.4
    adjusted = stats.length_adjusted(reward_a, reward_b, len_a, len_b, n_boot=300)
    assert adjusted["mean"] == pytest.approx(0.4) and adjusted["lo"] > 0


def test_paired_summary_of_compare_rows():
    rows = [{"answer_a": "x" * 10, "answer_b": "y" * 20, "reward_a": 0.0, "reward_b": 1.0,
             "toxicity_a": 0.5, "toxicity_b": 0.1} for _ in range(5)]
    rows.append({"answer_a": "x" * 10, "answer_b": "y" * 20, "reward_a": 1.0, "reward_b": 0.0,
                 "toxicity_a": 0.1, "toxicity_b": 0.5})
    out = stats.paired_summary(rows)
    assert out["n"] == 6 and out["length_a"] == 10 and out["length_b"] == 20
    assert out["reward"]["mean"] == pytest.approx(4 / 6) and out["reward"]["b_higher"] == 5
    assert out["toxicity"]["mean"] == pytest.approx((5 * -0.4 + 0.4) / 6) and out["toxicity"]["b_lower"] == 5
    assert stats.paired_summary([]) == {}
    no_reward = stats.paired_summary([{**rows[0], "reward_a": None, "reward_b": None}])
    assert "reward" not in no_reward and "toxicity" in no_reward


def test_pearson():
    assert stats.pearson([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert stats.pearson([1, 2, 3], [5, 5, 5]) is None
    assert stats.pearson([1, 2], [1, 2]) is None


def test_one_rule_for_better_the_reward_models_own_band():
    assert stats.p_better(1.0, 1.0) == 0.5 and stats.p_better(2.0, 0.0) == pytest.approx(0.8808, abs=1e-4)
    assert stats.preferred(1.0, 1.00005) is None  # a near tie: about even, no side taken
    assert stats.preferred(1.0, 1.3) is None  # P(B better) = 57%: still inside 40-60%
    assert stats.preferred(1.0, 1.5) == "b" and stats.preferred(1.5, 1.0) == "a"  # 62%: a side
    assert stats.preferred(None, 1.0) is None
    assert stats.p_better(stats.EVEN_MARGIN, 0.0) == pytest.approx(stats.EVEN_BAND[1])


def test_a_reward_verdict_needs_an_interval_off_zero_and_a_gap_outside_the_band():
    tight_small = {"mean": 0.2, "lo": 0.1, "hi": 0.3}  # surely positive, but "about even" on any one prompt
    assert stats.verdict(tight_small) == "B higher"  # toxicity and the like: the interval alone
    assert stats.verdict(tight_small, per_prompt=True) == "no clear difference"
    assert stats.verdict({"mean": 0.87, "lo": 0.14, "hi": 1.76}, per_prompt=True) == "B higher"
    assert stats.verdict({"mean": -0.9, "lo": -1.2, "hi": -0.5}, per_prompt=True) == "B lower"


def test_a_few_prompts_carrying_the_mean_are_found():
    carried = [4.0, 3.5, 3.0, 3.0] + [-0.1] * 12  # the case: 4 prompts drive a positive mean
    few = stats.carried_by_few(carried)
    assert few["k"] == 4 and few["share"] > 1 and few["mean_without"] < 0
    assert stats.carried_by_few([0.5] * 16) is None  # spread evenly: no few carry it
    assert stats.carried_by_few([1.0, 1.0]) is None  # too few prompts to say
    assert stats.carried_by_few([-3.0, -0.2, -0.1, -0.1, -0.1, -0.1, -0.1, -0.1])["k"] == 2  # works both ways
    rows = [{"answer_a": "x", "answer_b": "y", "toxicity_a": 0.0, "toxicity_b": 0.0, "reward_a": 0.0, "reward_b": d}
            for d in carried]
    reward = stats.paired_summary(rows)["reward"]
    assert reward["b_preferred"] == 4 and reward["even"] == 12 and reward["a_preferred"] == 0 and reward["few"]
