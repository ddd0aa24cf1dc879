"""lab.rl: the PPO, RLOO and GRPO maths on small tensors against hand computations."""

from __future__ import annotations

import pytest
import torch

from lab import rl


def test_masked_mean_and_whiten_ignore_masked_positions():
    x = torch.tensor([[1.0, 2.0, 3.0, 1e6], [4.0, 5.0, -1e6, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    assert rl.masked_mean(x, mask).item() == pytest.approx(3.0)
    assert rl.masked_mean(x, mask, dim=1).tolist() == pytest.approx([2.0, 4.5])
    white = rl.masked_whiten(x, mask)
    assert (white[mask == 0] == 0).all()
    real = white[mask == 1]
    assert real.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert real.var(unbiased=True).item() == pytest.approx(1.0, abs=1e-4)
    kept = rl.masked_whiten(x, mask, shift_mean=False)[mask == 1]
    assert kept.mean().item() == pytest.approx(3.0, abs=1e-5)


def test_compute_gae_matches_a_plain_loop():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    lengths = [6, 4, 1]
    mask = (torch.arange(6)[None, :] < torch.tensor(lengths)[:, None]).float()
    gamma, lam = 0.9, 0.8
    adv, ret = rl.compute_gae(rewards, values, mask, gamma, lam)
    for i, n in enumerate(lengths):
        expected, running = [0.0] * n, 0.0
        for t in reversed(range(n)):
            next_value = values[i, t + 1].item() if t + 1 < n else 0.0
            running = rewards[i, t].item() + gamma * next_value - values[i, t].item() + gamma * lam * running
            expected[t] = running
        assert adv[i, :n].tolist() == pytest.approx(expected, abs=1e-5)
        assert ret[i, :n].tolist() == pytest.approx([e + values[i, t].item() for t, e in enumerate(expected)], abs=1e-5)
        assert (adv[i, n:] == 0).all() and (ret[i, n:] == 0).all()


def test_rewards_put_the_score_on_the_last_real_token_and_the_kl_everywhere():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-1.0, -2.0, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    rewards, kl = rl.compute_rewards(torch.tensor([10.0, 20.0]), logprobs, ref, mask, kl_coef=0.5)
    assert kl.tolist() == [[0.5, 0.0, -1.0], [0.0, 1.0, 0.0]]
    assert rewards.tolist() == [[-0.25, 0.0, 10.5], [0.0, 19.5, 0.0]]
    k3 = rl.kl_penalty(logprobs, ref, "k3")
    assert (k3 >= 0).all() and k3[0, 1] == 0


def test_clipped_losses_match_hand_computed_values():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 2.0]]))  # ratios 1.5, 0.5, 1.1, 2.0
    adv = torch.tensor([[1.0, 1.0, -1.0, 3.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    loss, stats = rl.policy_loss(new, old, adv, mask, cliprange=0.2)
    # max(-A r, -A clip(r)) per token: max(-1.5, -1.2) = -1.2; max(-0.5, -0.8) = -0.5; max(1.1, 1.1) = 1.1
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 1.1) / 3)
    assert stats["clipfrac"].item() == pytest.approx(1 / 3)  # only the first token is clipped
    assert stats["approxkl"].item() == pytest.approx(0.5 * (new[0, :3] ** 2).mean().item())

    vpreds, old_values = torch.tensor([[1.0, 0.0, 0.5]]), torch.tensor([[0.0, 0.0, 0.0]])
    returns = torch.tensor([[2.0, -1.0, 0.0]])
    vloss, vstats = rl.value_loss(vpreds, old_values, returns, torch.ones(1, 3), cliprange_value=0.2)
    # clipped preds 0.2, 0.0, 0.2: max((1-2)^2, (0.2-2)^2) = 3.24; max(1, 1) = 1; max(0.25, 0.04) = 0.25
    assert vloss.item() == pytest.approx(0.5 * (3.24 + 1.0 + 0.25) / 3)
    assert vstats["clipfrac"].item() == pytest.approx(1 / 3)
    assert vstats["vpred"].item() == pytest.approx(0.5)


def test_rloo_baseline_is_the_mean_of_the_other_answers():
    rewards = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])  # two prompts, k = 3 answers each
    # answer 1: 1 - (2 + 6) / 2 = -3; answer 2: 2 - (1 + 6) / 2 = -1.5; answer 3: 6 - 1.5 = 4.5; ...
    assert rl.rloo_advantages(rewards, 3).tolist() == pytest.approx([-3.0, -1.5, 4.5, -1.5, -1.5, 3.0])
    assert rl.rloo_advantages(torch.tensor([1.0, 3.0]), 2).tolist() == [-2.0, 2.0]


def test_grpo_normalises_within_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    # group 1: mean 2, std 1 -> -1, 0, 1; group 2: all equal -> 0 (no signal, no division by zero)
    assert rl.group_normalized_advantages(rewards, 3).tolist() == pytest.approx([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0],
                                                                                 abs=1e-5)


def test_sequence_advantages_put_the_kl_in_the_reward_and_cover_every_token():
    scores = torch.tensor([1.0, 1.0])
    kl = torch.tensor([[0.5, 0.5, 9.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # the 9.0 is past the first answer's end
    adv = rl.sequence_advantages(scores, kl, mask, kl_coef=1.0, kind="rloo", k=2)
    # rewards 1 - 1 = 0 and 1 - 0 = 1: leave-one-out -1 and +1 on each real token
    assert adv.tolist() == [[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0]]


def test_adaptive_kl_controller_moves_towards_the_target():
    ctl = rl.AdaptiveKLController(0.2, target=6.0, horizon=10000)
    ctl.update(12.0, 100)  # far above the target: the error is clipped at +0.2
    assert ctl.value == pytest.approx(0.2 * (1 + 0.2 * 100 / 10000))
    ctl.update(3.0, 100)
    assert ctl.value < 0.2 * (1 + 0.2 * 100 / 10000)
    fixed = rl.FixedKLController(0.1)
    fixed.update(100.0, 100)
    assert fixed.value == 0.1


def test_the_kl_cap_doubles_beta_above_it_and_halves_back_never_below_the_runs_own():
    ctl = rl.KLCap(rl.FixedKLController(0.3), cap=3.0)
    seen = []
    for kl in (0.5, 2.9, 3.5, 4.0, 2.0, 1.4, 1.0, 0.2, 5.0):
        ctl.update(kl, 16)
        seen.append(ctl.value)
    # under the cap: untouched; over it: x2 each step; between half the cap and the cap: held; under half: /2 to 0.3
    assert seen == pytest.approx([0.3, 0.3, 0.6, 1.2, 1.2, 0.6, 0.3, 0.3, 0.6])
    held = rl.KLCap(rl.FixedKLController(0.3), cap=3.0)
    for _ in range(10):  # a run held above the cap: β stops at 16 x its own
        held.update(4.0, 16)
    assert held.value == pytest.approx(0.3 * 16)
    adaptive = rl.KLCap(rl.AdaptiveKLController(0.2, target=6.0, horizon=100), cap=3.0)
    adaptive.update(4.0, 10)  # the inner controller still moves (towards 6: down), the cap doubles on top
    assert adaptive.inner.value == pytest.approx(0.2 * (1 - 0.2 * 10 / 100))  # error 4/6 - 1, clipped at -0.2
    assert adaptive.value == pytest.approx(2 * adaptive.inner.value)


def test_score_scaling_and_clipping():
    scores = torch.tensor([0.0, 10.0, 20.0, 30.0])
    moments = rl.RunningMoments()
    moments.update(scores)
    out = rl.process_scores(scores, moments, scaling=True, norm=True, clip=1.0)
    assert moments.mean == pytest.approx(15.0) and out.abs().max() <= 1.0
    assert out.tolist()[0] < 0 < out.tolist()[-1]


def test_response_mask_stops_after_eos_and_at_the_drawn_length():
    eos = 2
    responses = torch.tensor([[5, eos, 7, 8], [5, 6, 7, 8], [eos, 6, eos, 8]])
    mask = rl.response_mask(responses, [4, 3, 4], eos)
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]]


def test_tokens_after_eos_carry_no_loss():
    torch.manual_seed(0)
    logprobs = torch.randn(2, 5, requires_grad=True)
    vpreds = torch.randn(2, 5, requires_grad=True)
    mask = rl.response_mask(torch.tensor([[4, 2, 9, 9, 9], [4, 4, 4, 4, 4]]), [5, 5], eos_id=2).float()
    adv, ret = torch.randn(2, 5), torch.randn(2, 5)
    loss = (rl.policy_loss(logprobs, logprobs.detach(), adv, mask)[0]
            + rl.value_loss(vpreds, vpreds.detach(), ret, mask)[0])
    loss.backward()
    assert (logprobs.grad[0, 2:] == 0).all() and (vpreds.grad[0, 2:] == 0).all()
    assert (logprobs.grad[0, :2] != 0).all() and (logprobs.grad[1] != 0).all()


def test_temperature_divides_the_logits_for_log_probs():
    logits = torch.tensor([[[2.0, 0.0, -2.0]]])
    tokens = torch.tensor([[0]])
    assert rl.logprobs_from_logits(logits, tokens, 2.0).item() == pytest.approx(
        torch.log_softmax(logits / 2.0, -1)[0, 0, 0].item()
    )


# ---------------------------------------------------------------- learning


def test_estimate_advantages_runs_gae_with_values_and_rloo_without():
    torch.manual_seed(0)
    scores, lp, ref = torch.tensor([1.0, 0.0, 2.0, -1.0]), torch.randn(4, 3), torch.randn(4, 3)
    mask, values = torch.ones(4, 3), torch.randn(4, 3)
    kl, adv, ret = rl.estimate_advantages(scores, lp, ref, values, mask, 0.1, whiten_advantages=False)
    rewards, kl_expected = rl.compute_rewards(scores, lp, ref, mask, 0.1)
    gae, returns = rl.compute_gae(rewards, values, mask)
    assert torch.equal(kl, kl_expected) and torch.allclose(adv, gae) and torch.allclose(ret, returns)
    kl, adv, ret = rl.estimate_advantages(scores, lp, ref, None, mask, 0.1, advantage="rloo", k=2,
                                          whiten_advantages=False)
    assert ret is None and torch.allclose(adv, rl.sequence_advantages(scores, kl, mask, 0.1, "rloo", 2))


def test_mean_and_std_falls_back_to_one_without_spread():
    assert rl.mean_and_std(torch.tensor([1.0, 3.0])) == pytest.approx((2.0, 2 ** 0.5))
    assert rl.mean_and_std(torch.tensor([5.0, 5.0])) == (5.0, 1.0)
    assert rl.mean_and_std(torch.tensor([4.0])) == (4.0, 1.0)
