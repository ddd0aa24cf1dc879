"""Rollout sampling's fast paths: inverse-CDF draws match the distribution, merged adapters match the unmerged
policy and put every weight back, and a seed still fixes the rollout."""

from __future__ import annotations

import pytest
import torch

from lab import models, policies, ppo, rollout, sampling
from lab.generate import encode_chat

PROMPTS = ["hello there", "how are you today, my friend?", "tell me a joke", "why is the sky blue?"]


def test_draw_follows_the_probabilities_and_never_draws_a_zero():
    torch.manual_seed(0)
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0]]).repeat(20_000, 1)  # (N, 5)
    counts = torch.bincount(sampling.draw(probs), minlength=5).float() / len(probs)
    assert counts[1] == 0 and counts[4] == 0
    torch.testing.assert_close(counts, probs[0], atol=0.015, rtol=0)  # 3 sigma of 20,000 draws at p 0.5 is 0.011


def test_draw_handles_rows_that_do_not_sum_to_one_and_the_top_of_the_range(monkeypatch):
    probs = torch.tensor([[0.0, 2.0, 2.0, 0.0]])
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.full(shape, 1.0 - 1e-9))
    assert sampling.draw(probs).item() == 2  # the last non-zero token, never the zero after it or out of range
    monkeypatch.setattr(torch, "rand", lambda *shape, **kw: torch.zeros(shape))
    assert sampling.draw(probs).item() == 1  # u = 0 skips the leading zero-probability token


def test_the_sampler_applies_temperature_top_k_and_top_p():
    torch.manual_seed(0)
    scores = torch.log(torch.tensor([[0.6, 0.25, 0.1, 0.05]])).repeat(4000, 1)
    ids = torch.zeros(4000, 1, dtype=torch.long)
    top1 = sampling.InverseCdfSampler(temperature=1.0, top_k=1)(ids, scores.clone())
    assert torch.isinf(top1).sum(-1).eq(3).all() and top1[:, 0].eq(0).all()  # one token kept, scores 0 / -inf
    picked = sampling.InverseCdfSampler(temperature=1.0, top_p=0.8)(ids, scores.clone()).argmax(-1)
    assert set(picked.tolist()) == {0, 1}  # nucleus 0.8: the two likeliest only
    cold = sampling.InverseCdfSampler(temperature=0.25)(ids, scores.clone()).argmax(-1)
    assert (cold == 0).float().mean() > 0.95  # p^4 renormalised: 0.6 -> 0.97
    with pytest.raises(ValueError, match="temperature"):
        sampling.InverseCdfSampler(temperature=0.0)


def _policy(folder):
    torch.manual_seed(0)
    lora = {"r": 4, "alpha": 8, "dropout": 0.05, "top_layers": 2,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    model, tokenizer = policies.load_trainable_policy(str(folder), False, lora)
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)  # adapters that change the output, so merging has something to fold
    return model, tokenizer


def test_merged_adapters_give_the_policys_logits_and_put_every_weight_back(deep_lm_dir):
    model, tokenizer = _policy(deep_lm_dir)
    enc = encode_chat(tokenizer, PROMPTS, torch.device("cpu"), 64)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    with torch.no_grad():
        policy = model(**enc).logits
        with model.disable_adapter():
            reference = model(**enc).logits
        with models.merged_adapters(model) as merged:
            folded = model(**enc).logits
    assert merged
    assert not torch.allclose(policy, reference, atol=1e-3)  # the adapters matter, so the test has teeth
    torch.testing.assert_close(folded, policy, atol=1e-4, rtol=0)
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)  # bit for bit, trainable flags too
    assert all(after[name].requires_grad == ("lora_" in name) for name in after)
    with torch.no_grad():
        torch.testing.assert_close(model(**enc).logits, policy, atol=0, rtol=0)  # adapters on again


def test_merged_adapters_leave_a_disabled_or_unadapted_model_alone(deep_lm_dir):
    model, _ = _policy(deep_lm_dir)
    with model.disable_adapter(), models.merged_adapters(model) as merged:
        assert not merged  # folding an adapter the caller switched off would sample from the wrong model
    with models.merged_adapters(torch.nn.Linear(2, 2)) as merged:
        assert not merged


def test_a_rollout_is_fixed_by_the_seed_and_respects_lengths_and_min_length(deep_lm_dir, monkeypatch):
    model, tokenizer = _policy(deep_lm_dir)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=2, output_min_length=3, output_max_length=6, temperature=0.7)
    query = encode_chat(tokenizer, PROMPTS, torch.device("cpu"), cfg.max_prompt_length)
    caches = []  # distinct prompts decode into a preallocated (static) KV cache on a CPU
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: caches.append(kw.get("cache_implementation")) or generate(**kw))
    runs = []
    for _ in range(2):
        torch.manual_seed(3)
        runs.append(rollout.generate_responses(model, tokenizer, query, [6, 3, 5, 6], cfg))
    assert torch.equal(runs[0].input_ids, runs[1].input_ids)
    lengths = runs[0].mask.sum(-1).tolist()
    assert all(3 <= n <= cap for n, cap in zip(lengths, [6, 3, 5, 6]))
    torch.manual_seed(4)
    other = rollout.generate_responses(model, tokenizer, query, [6, 3, 5, 6], cfg)
    assert not torch.equal(other.input_ids, runs[0].input_ids)  # it samples: another seed, other answers
    assert caches == ["static"] * 3
    torch.manual_seed(3)
    repeated = {k: v[[0, 0, 1, 1]] for k, v in query.items()}  # k answers a prompt: the shared prefill's cache instead
    rollout.generate_responses(model, tokenizer, repeated, [6, 3, 5, 6], cfg)
    assert caches[-1] is None


def test_temperature_only_sampling_skips_softmax_and_draws_from_the_tempered_distribution():
    """Rollouts (top_k 0, top_p 1) take exp((s - max) / T) in place: the same distribution as softmax(s / T), and a
    token at -inf (min_new_tokens holding EOS back) is never drawn."""
    torch.manual_seed(0)
    logp = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    scores = torch.cat([logp, torch.tensor([float("-inf")])]).repeat(40_000, 1)
    sampler = sampling.InverseCdfSampler(temperature=0.7, top_k=0, top_p=1.0)
    assert sampler.temperature_only
    out = sampler(torch.zeros(len(scores), 1, dtype=torch.long), scores.clone())
    assert torch.isinf(out).sum(-1).eq(4).all() and out.max(-1).values.eq(0).all()  # one token a row kept
    counts = torch.bincount(out.argmax(-1), minlength=5).float() / len(out)
    expected = torch.softmax(torch.cat([logp / 0.7, torch.tensor([float("-inf")])]), -1)
    assert counts[4] == 0
    torch.testing.assert_close(counts, expected, atol=0.01, rtol=0)
