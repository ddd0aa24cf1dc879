"""The plot builders: each, given a small metrics frame, draws the traces it promises with the frame's values."""

from __future__ import annotations

import pytest

from lab.ui import plots_compare, plots_ppo, plots_reward

PPO_ROWS = [
    {"step": s, "env/reward_mean": 0.1 * s, "env/reward_std": 0.05, "objective/kl": 0.2 * s, "objective/kl_coef": 0.2,
     "ppo/loss/policy": -0.01 * s, "ppo/loss/value": 0.5 / s, "ppo/policy/clipfrac": 0.1, "ppo/val/clipfrac": 0.2,
     "objective/entropy": 30.0 - s, "tokens/response_len_mean": 10.0 + s, "time/rollout": 1.0, "time/score": 0.5,
     "time/forward": 0.25, "time/optimize": 2.0}
    for s in (1, 2, 3)
]
REWARD_ROWS = [{"step": 1, "loss": 0.7, "accuracy": 0.5}, {"step": 2, "loss": 0.6, "accuracy": 0.6},
               {"step": 2, "eval_loss": 0.65, "eval_accuracy": 0.55}, {"step": 3, "loss": 0.5, "accuracy": 0.7}]
COMPARE_ROWS = [{"toxicity_a": 0.1, "toxicity_b": 0.05, "reward_a": 0.0, "reward_b": 0.5},
                {"toxicity_a": 0.3, "toxicity_b": 0.2, "reward_a": 1.0, "reward_b": 0.25}]


def names(fig) -> list[str]:
    return [t.name for t in fig.data]


def test_reward_figure_draws_the_mean_and_its_band():
    fig = plots_ppo.reward_figure(PPO_ROWS)
    assert names(fig) == ["± std", "mean reward"]
    assert list(fig.data[1].x) == [1, 2, 3] and list(fig.data[1].y) == pytest.approx([0.1, 0.2, 0.3])
    assert max(fig.data[0].y) == pytest.approx(0.35)  # the band's top: mean + std at the last step
    shaped = plots_ppo.reward_figure([{**r, "env/relevance": 0.5 + 0.1 * i} for i, r in enumerate(PPO_ROWS)])
    assert names(shaped)[2].startswith("mean relevance") and list(shaped.data[2].y) == pytest.approx([0.5, 0.6, 0.7])
    flagged = plots_ppo.reward_figure([{**r, "env/degenerate": 0.125 * i} for i, r in enumerate(PPO_ROWS)])
    assert names(flagged)[2].startswith("share of degenerate")
    assert list(flagged.data[2].y) == pytest.approx([0, 0.125, 0.25])


def test_kl_figure_draws_the_kl_and_the_target_line():
    fig = plots_ppo.kl_figure(PPO_ROWS, target=6.0)
    assert names(fig) == ["KL(policy ‖ reference)"] and list(fig.data[0].y) == pytest.approx([0.2, 0.4, 0.6])
    assert [s.y0 for s in fig.layout.shapes] == [6.0]
    assert not plots_ppo.kl_figure(PPO_ROWS, target=None).layout.shapes
    capped = plots_ppo.kl_figure(PPO_ROWS, target=None, cap=3.0)  # the cpu preset: no target, a cap
    assert [s.y0 for s in capped.layout.shapes] == [3.0]
    title = plots_ppo.kl_coef_figure(PPO_ROWS, adaptive=False, cap=3.0).layout.title.text
    assert "doubles after a step above KL 3" in title


def test_loss_clipfrac_entropy_length_and_time_figures():
    loss = plots_ppo.loss_figure(PPO_ROWS)
    assert names(loss) == ["policy loss", "value loss"] and loss.data[1].yaxis == "y2"
    assert names(plots_ppo.clipfrac_figure(PPO_ROWS)) == ["policy", "value"]
    assert list(plots_ppo.entropy_figure(PPO_ROWS).data[0].y) == [29.0, 28.0, 27.0]
    assert list(plots_ppo.length_figure(PPO_ROWS).data[0].y) == [11.0, 12.0, 13.0]
    time = plots_ppo.time_figure(PPO_ROWS)
    assert names(time) == ["rollout", "score", "forward", "optimize"] and time.layout.barmode == "stack"
    critic_free = [{k: v for k, v in r.items() if "value" not in k and "val/" not in k} for r in PPO_ROWS]
    assert "no value head" in plots_ppo.loss_figure(critic_free, "rloo").layout.annotations[0].text


def test_all_figures_are_eight_and_say_when_they_will_appear():
    assert len(plots_ppo.all_figures(PPO_ROWS, 6.0)) == 8
    empty = plots_ppo.all_figures([], 6.0)
    assert all("after the first PPO step" in f.layout.annotations[-1].text for f in empty)


def test_length_reward_figure_plots_one_point_per_rollout():
    samples = [{"step": s, "reward": float(s), "length": 10 * s} for s in range(1, 10)]
    fig = plots_ppo.length_reward_figure(samples)
    assert list(fig.data[0].x) == [10.0 * s for s in range(1, 10)] and "r = 1.00" in fig.layout.title.text


def test_reward_curves_draw_train_lines_and_held_out_points():
    loss = plots_reward.loss_figure(REWARD_ROWS)
    assert names(loss) == ["train loss", "held-out loss"]
    assert list(loss.data[0].y) == [0.7, 0.6, 0.5] and list(loss.data[1].y) == [0.65]
    accuracy = plots_reward.accuracy_figure(REWARD_ROWS)
    assert list(accuracy.data[1].x) == [2] and [s.y0 for s in accuracy.layout.shapes] == [0.5]  # the chance line


def test_margin_histogram_splits_right_and_wrong():
    fig = plots_reward.margin_histogram([0.5, 1.0, -0.2])
    assert names(fig) == ["correct (2)", "wrong (1)"] and list(fig.data[1].x) == [-0.2]


def test_compare_figures_draw_both_models_and_the_per_prompt_differences():
    dist = plots_compare.distribution_figure(COMPARE_ROWS, "base", "ppo-1")
    assert names(dist) == ["A: base", "A: base", "B: ppo-1", "B: ppo-1"]
    assert list(dist.data[1].x) == [0.0, 1.0] and list(dist.data[2].x) == [0.05, 0.2]
    paired = plots_compare.paired_figure(COMPARE_ROWS)
    assert list(paired.data[0].y) == pytest.approx([-0.75, 0.5])  # sorted from B's worst to B's best
    assert "appear" in plots_compare.paired_figure([]).layout.annotations[-1].text
    draws = [{**r, "index": i, "draw": j, "reward_b": r["reward_b"] + (0.5 if j else -0.5)}
             for i, r in enumerate(COMPARE_ROWS) for j in (0, 1)]
    assert list(plots_compare.paired_figure(draws).data[0].y) == pytest.approx([-0.75, 0.5])  # a bar per prompt
