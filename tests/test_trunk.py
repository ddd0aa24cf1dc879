"""The shared trunk: split forward = full forward, exact ratios through it, LoRA still learns, and the fallbacks."""

from __future__ import annotations

import pytest
import torch

from lab import models, policies, ppo, rl, rollout, trunk
from lab.generate import encode_chat

PROMPTS = ["hello there", "how are you today, my friend?", "tell me a joke", "why is the sky blue?"]


def _policy(folder, top_layers: int = 2):
    torch.manual_seed(0)
    lora = {"r": 4, "alpha": 8, "dropout": 0.05, "top_layers": top_layers,
            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
    model, tokenizer = policies.load_trainable_policy(str(folder), False, lora)
    model.eval()
    return model, policies.new_value_head(model), tokenizer


def _batch(model, tokenizer, cfg, lengths=(6, 3, 5, 6)):
    query = encode_chat(tokenizer, PROMPTS[: len(lengths)], torch.device("cpu"), cfg.max_prompt_length)
    return rollout.generate_responses(model, tokenizer, query, list(lengths), cfg)


def _nudge(model, value_head):
    """Non-zero LoRA B and value head, so the policy, the reference and the values all differ."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1)
        for p in value_head.parameters():
            p.normal_(0, 0.1)


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_split_forward_gives_the_full_forwards_log_probs_and_values(deep_lm_dir, attention):
    model, value_head, tokenizer = _policy(deep_lm_dir)
    _nudge(model, value_head)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=2, output_min_length=3, output_max_length=6)
    with models.attention_implementation(model, attention):
        batch = _batch(model, tokenizer, cfg)
        assert batch.input_ids[:, 0].eq(tokenizer.pad_token_id).any()  # left padding is exercised
        split = rollout.with_trunk(model, batch, cfg)
        assert batch.trunk is None and split.trunk.layers == 2 and split.trunk.hidden.shape[:2] == batch.input_ids.shape
        full_lp, full_v = rollout.batched_forward(model, value_head, batch, cfg)
        split_lp, split_v = rollout.batched_forward(model, value_head, split, cfg)
        full_ref, _ = rollout.batched_forward(model, None, batch, cfg, reference=True)
        split_ref, _ = rollout.batched_forward(model, None, split, cfg, reference=True)
    mask = batch.mask.bool()
    assert not torch.allclose(full_lp[mask], full_ref[mask])  # the adapters matter, so the test has teeth
    torch.testing.assert_close(split_lp[mask], full_lp[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(split_ref[mask], full_ref[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(split_v[mask], full_v[mask], atol=1e-5, rtol=0)


@pytest.mark.parametrize("bf16", [False, True])
def test_through_the_trunk_kl_is_zero_and_the_ratio_is_one_before_any_update(deep_lm_dir, bf16):
    model, value_head, tokenizer = _policy(deep_lm_dir)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=2, output_min_length=3, output_max_length=6, bf16=bf16)
    batch = rollout.with_trunk(model, _batch(model, tokenizer, cfg), cfg)
    old_logprobs, _ = rollout.batched_forward(model, value_head, batch, cfg)
    ref_logprobs, _ = rollout.batched_forward(model, None, batch, cfg, reference=True)
    assert torch.equal(old_logprobs, ref_logprobs)
    _, kl = rl.compute_rewards(torch.zeros(4), old_logprobs, ref_logprobs, batch.mask.float(), 0.2)
    assert kl.sum().item() == 0.0
    idx = torch.tensor([3, 0])
    with torch.enable_grad():
        new_logprobs, _ = rollout.forward_policy(model, value_head, batch.select(idx), cfg.temperature, cfg.bf16)
    assert torch.equal(new_logprobs.detach(), old_logprobs[idx])


def test_lora_gets_gradients_and_the_trunk_none(deep_lm_dir):
    model, value_head, tokenizer = _policy(deep_lm_dir)
    _nudge(model, value_head)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=4, output_min_length=3, output_max_length=6)
    batch = rollout.with_trunk(model, _batch(model, tokenizer, cfg), cfg)
    assert not batch.trunk.hidden.requires_grad
    logprobs, values = rollout.forward_policy(model, value_head, batch, cfg.temperature, cfg.bf16)
    (logprobs.sum() + values.sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert all(p.grad is not None for p in value_head.parameters())


def test_ppo_trains_through_the_trunk(deep_lm_dir, monkeypatch):
    model, value_head, tokenizer = _policy(deep_lm_dir)
    calls = []
    bottom = trunk.bottom
    monkeypatch.setattr(trunk, "bottom", lambda *a, **k: calls.append(1) or bottom(*a, **k))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = ppo.PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=2, output_min_length=3,
                        output_max_length=5, learning_rate=1e-2)
    history = ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [float(len(x)) for x in r], cfg)
    assert len(calls) == 2 * 2  # once a step (in 2 chunks of mini_batch_size), not once per pass
    assert history[0]["objective/kl"] == 0.0 and history[1]["objective/kl"] != 0.0
    assert all(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_the_full_forward_is_used_where_the_split_does_not_apply(deep_lm_dir, tiny_lm_dir):
    assert trunk.shared_layers(_policy(deep_lm_dir, top_layers=2)[0]) == 2
    assert trunk.shared_layers(_policy(deep_lm_dir, top_layers=0)[0]) == 0  # LoRA on every block
    assert trunk.shared_layers(_policy(tiny_lm_dir, top_layers=0)[0]) == 0
    checkpointed = models.enable_checkpointing(_policy(deep_lm_dir)[0])
    assert trunk.shared_layers(checkpointed) == 0
    unknown = _policy(deep_lm_dir)[0]
    unknown.get_base_model().config.model_type = "gpt2"
    assert trunk.shared_layers(unknown) == 0
    quantised = _policy(deep_lm_dir)[0]
    quantised.get_base_model().is_loaded_in_4bit = True
    assert trunk.shared_layers(quantised) == 0
    model, _, tokenizer = _policy(deep_lm_dir, top_layers=0)
    cfg = ppo.PPOConfig(batch_size=2, mini_batch_size=2, output_min_length=2, output_max_length=3)
    batch = _batch(model, tokenizer, cfg, lengths=(3, 2))
    assert rollout.with_trunk(model, batch, cfg) is batch


# ---------------------------------------------------------------- the shared prefix


def test_split_prefix_finds_the_common_opening_behind_left_padding():
    pad = 0
    ids = torch.tensor([[pad, pad, 5, 6, 7, 8, 9, 1, 2],
                        [5, 6, 7, 8, 9, 3, 4, 1, 2],
                        [pad, 5, 6, 7, 8, 4, 4, 4, 2]])
    mask = (ids != pad).long()
    mask[0, 7:] = 1
    split = trunk.split_prefix(ids, mask, keep=2, min_length=3)
    assert split.prefix_ids.tolist() == [[5, 6, 7, 8]] and split.start == 2
    # each row without its opening, left padding kept, so the kept columns (here the last 2) stay aligned
    assert split.rest_ids.tolist() == [[pad, pad, 9, 1, 2], [9, 3, 4, 1, 2], [pad, 4, 4, 4, 2]]
    assert split.rest_mask.tolist() == [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 1]]
    assert split.rest_positions()[:, -1].tolist() == [6, 8, 7]  # as in the full row: real tokens before, minus one
    assert trunk.split_prefix(ids, mask, keep=2, min_length=5) is None  # the opening is shorter than asked
    assert trunk.split_prefix(ids[:1], mask[:1], keep=2, min_length=1) is None  # one row: nothing to share
    # the kept columns are never part of the prefix, even where every row has them in common
    same = torch.tensor([[5, 6, 7, 8, 9]] * 2)
    assert trunk.split_prefix(same, torch.ones_like(same), keep=3, min_length=1).prefix_ids.tolist() == [[5, 6]]


@pytest.mark.parametrize("top_layers", [2, 0])
def test_running_the_shared_prefix_once_changes_no_log_prob_value_or_gradient(deep_lm_dir, monkeypatch, top_layers):
    """Chat queries open with the template's system prompt: run once as one row (with the trunk, or from the
    embeddings where LoRA is on every block), the passes give the same log-probs, values and LoRA gradients."""
    model, value_head, tokenizer = _policy(deep_lm_dir, top_layers=top_layers)
    _nudge(model, value_head)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=4, output_min_length=3, output_max_length=6)
    batch = rollout.with_trunk(model, _batch(model, tokenizer, cfg), cfg)
    assert batch.input_ids[:, 0].eq(tokenizer.pad_token_id).any()  # left padding is exercised
    split = trunk.split_prefix(batch.input_ids, batch.attention_mask, batch.response_length + 1)
    assert trunk.shares_prefix(model) and split is not None and split.length >= trunk.MIN_PREFIX
    results = []
    for shared in (True, False):
        monkeypatch.setattr(trunk, "shares_prefix", lambda m, shared=shared: shared)
        model.zero_grad()
        with torch.enable_grad():
            logprobs, values = rollout.forward_policy(model, value_head, batch, cfg.temperature, False)
            (logprobs * batch.mask).sum().backward()
        grads = [p.grad.clone() for n, p in model.named_parameters() if "lora_" in n and p.grad is not None]
        results.append((logprobs.detach(), values.detach(), grads))
    (lp, v, g), (lp_full, v_full, g_full) = results
    mask = batch.mask.bool()
    torch.testing.assert_close(lp[mask], lp_full[mask], atol=1e-5, rtol=0)
    torch.testing.assert_close(v[mask], v_full[mask], atol=1e-5, rtol=0)
    assert len(g) == len(g_full) > 0 and any(x.abs().sum() > 0 for x in g_full)
    for a, b in zip(g, g_full):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_the_prefix_is_not_shared_where_the_pass_is_not_known_to_be_exact(deep_lm_dir):
    assert trunk.shares_prefix(_policy(deep_lm_dir)[0])
    assert not trunk.shares_prefix(models.enable_checkpointing(_policy(deep_lm_dir)[0]))
    unknown = _policy(deep_lm_dir)[0]
    unknown.get_base_model().config.model_type = "gpt2"
    assert not trunk.shares_prefix(unknown)
    quantised = _policy(deep_lm_dir)[0]
    quantised.get_base_model().is_loaded_in_4bit = True
    assert not trunk.shares_prefix(quantised)
