"""PPO: rollouts and masks, exact ratios, learning, stop, saving, CLI (the maths: tests/test_rl.py)."""

from __future__ import annotations

import functools
import gc
import json
import weakref
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lab import cli, evaluate, models, policies, ppo, ppo_metrics, relevance, rl, rollout
from lab.generate import StopCriterion, encode_chat
from lab.jobs import JobManager
from lab.presets import get_preset

PROMPTS = ["hello there", "how are you?", "tell me a joke", "what is love", "why is the sky blue?", "name a fruit"]
LORA = {"r": 8, "alpha": 16, "dropout": 0.05}


def _policy(tiny_lm_dir: Path, seed: int = 0):
    torch.manual_seed(seed)
    model, tokenizer = policies.load_trainable_policy(str(tiny_lm_dir), False, LORA)
    return model, policies.new_value_head(model), tokenizer


def _rollout(model, tokenizer, cfg: ppo.PPOConfig, lengths: list[int]) -> rollout.Batch:
    query = encode_chat(tokenizer, PROMPTS[: len(lengths)], torch.device("cpu"), cfg.max_prompt_length)
    return rollout.generate_responses(model, tokenizer, query, lengths, cfg)


def distinct_tokens(tokenizer):
    """A reward the tiny model can learn: distinct tokens in the response (it starts out repeating itself)."""
    return lambda prompts, responses: [float(len(set(tokenizer.encode(r, add_special_tokens=False))))
                                       for r in responses]


def test_answers_to_one_prompt_share_a_batch_and_a_length(tiny_lm_dir):
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    cfg = ppo.PPOConfig(steps=1, batch_size=8, mini_batch_size=8, output_min_length=2, output_max_length=9,
                        advantage="rloo", samples_per_prompt=4, learning_rate=1e-3)
    seen = []
    ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [0.0] * len(r), cfg,
                on_step=lambda m, s: seen.extend(s))
    assert [r["prompt"] for r in seen[:4]] == [seen[0]["prompt"]] * 4 != [r["prompt"] for r in seen[4:]]
    assert all(r["length"] == sum(r["span_len"]) == len(r["token_kl"]) for r in seen)
    assert all(len(r["tokens"]) == len(r["span_len"]) for r in seen)


def test_decode_spans_keep_emoji_and_accents_whole(tiny_lm_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    text = "Bravo 🎉🙂 café 🇫🇷!"
    ids = tokenizer.encode(text, add_special_tokens=False)
    alone = [tokenizer.decode([t]) for t in ids]
    assert any("\ufffd" in t for t in alone)  # the old way: each token alone shows replacement characters
    spans = rollout.decode_spans(tokenizer, ids)
    assert "".join(t for t, _ in spans) == text and sum(n for _, n in spans) == len(ids)
    assert not any("\ufffd" in t for t, _ in spans) and any(n > 1 for _, n in spans)
    assert rollout.decode_spans(tokenizer, []) == []


def test_summary_windows_never_overlap_on_a_short_run():
    rows = [{"step": i, "env/reward_mean": float(i), "objective/kl": 0.1, "time/step": 2.0} for i in range(1, 7)]
    six = ppo_metrics.summarize(rows)
    assert six["window"] == 2 and six["reward_first"] == 1.5 and six["reward_last"] == 5.5  # steps 1-2 vs 5-6
    assert ppo_metrics.summarize(rows * 5)["window"] == ppo_metrics.WINDOW
    assert ppo_metrics.summarize(rows[:2])["window"] == 1 and ppo_metrics.summarize(rows[:2])["reward_last"] == 2.0
    one = ppo_metrics.summarize(rows[:1])
    assert one["window"] == 0 and one["reward_first"] is None and one["steps"] == 1


def test_length_sampler_and_prompt_batches_are_seeded_and_cover_the_range():
    import random

    lengths = rollout.LengthSampler(3, 5, random.Random(0))(200)
    assert set(lengths) == {3, 4, 5}
    batches = rollout.prompt_batches(["a", "b", "c"], 2, random.Random(0))
    seen = [p for _ in range(3) for p in next(batches)]
    assert sorted(seen) == ["a", "a", "b", "b", "c", "c"]  # every prompt once per pass


# ---------------------------------------------------------------- config and validation


def test_config_defaults_are_the_seeds_and_presets_fit_their_limits():
    cfg = ppo.PPOConfig()
    assert (cfg.learning_rate, cfg.ppo_epochs, cfg.init_kl_coef, cfg.adap_kl_ctrl) == (1.4e-5, 4, 0.2, True)
    assert (cfg.cliprange, cfg.cliprange_value, cfg.gamma, cfg.lam, cfg.top_k, cfg.top_p) == (0.2, 0.2, 1, 0.95, 0, 1.0)
    for name in ("a100", "cpu"):
        preset = get_preset(name)
        ppo.validate(ppo.config_from(preset), preset.limits)


@pytest.mark.parametrize("overrides, message", [
    ({"batch_size": 8, "mini_batch_size": 3}, "not divisible by mini_batch_size × gradient_accumulation_steps"),
    ({"batch_size": 8, "mini_batch_size": 4, "gradient_accumulation_steps": 4}, "= 4 × 4 = 16"),
    ({"output_min_length": 9, "output_max_length": 8}, "output_min_length 9 is above"),
    ({"kl_penalty": "bogus"}, "kl_penalty 'bogus'"),
    ({"steps": 0}, "steps = 0 must be at least 1"),
    ({"advantage": "a2c"}, "advantage 'a2c' is not one of gae, rloo, grpo"),
    ({"advantage": "rloo", "samples_per_prompt": 1}, "set samples_per_prompt to 2 or more"),
    ({"batch_size": 8, "samples_per_prompt": 3}, "must be a multiple of samples_per_prompt 3"),
    ({"kl_cap": -1.0}, "score_clip and kl_cap must be 0"),
])
def test_validate_names_the_bad_value(overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ppo.validate(ppo.PPOConfig(**overrides))


# ---------------------------------------------------------------- rollouts and exact ratios


def test_rollout_masks_after_eos_pads_with_pad_and_respects_lengths(tiny_lm_dir):
    model, _, tokenizer = _policy(tiny_lm_dir)
    cfg = ppo.PPOConfig(output_min_length=2, output_max_length=6, batch_size=4, mini_batch_size=2)
    batch = _rollout(model, tokenizer, cfg, [6, 2, 5, 6])
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert batch.mask.sum(-1).tolist() == [6, 2, 5, 6] and batch.response_length == 6
    assert (batch.responses[batch.mask == 0] == tokenizer.pad_token_id).all()
    assert (batch.attention_mask[:, -6:] == batch.mask).all()
    assert batch.input_ids[:, 0].eq(tokenizer.pad_token_id).any()  # prompts of different lengths: left padding

    # min = max: exactly that many tokens, EOS blocked before
    exact = ppo.PPOConfig(output_min_length=4, output_max_length=4)
    assert _rollout(model, tokenizer, exact, [4, 4]).mask.sum(-1).tolist() == [4, 4]


def test_generation_ends_early_when_the_job_is_stopped(tiny_lm_dir):
    model, _, tokenizer = _policy(tiny_lm_dir)
    cfg = ppo.PPOConfig(output_min_length=1, output_max_length=40)
    calls = iter(range(1000))
    query = encode_chat(tokenizer, PROMPTS[:2], torch.device("cpu"), 64)
    batch = rollout.generate_responses(model, tokenizer, query, [40, 40], cfg, should_stop=lambda: next(calls) >= 3)
    assert batch.response_length < 10


@pytest.mark.parametrize("bf16, bf16_weights", [(False, False), (True, False), (True, True)])
def test_kl_is_zero_and_the_ratio_is_one_before_any_update(tiny_lm_dir, bf16, bf16_weights):
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    if bf16_weights:  # what run_ppo does with bf16 on
        models.cast_frozen_weights(model, torch.bfloat16)
    cfg = ppo.PPOConfig(batch_size=6, mini_batch_size=2, output_min_length=3, output_max_length=8, bf16=bf16)
    batch = _rollout(model, tokenizer, cfg, [8, 3, 5, 8, 7, 4])
    old_logprobs, values = rollout.batched_forward(model, value_head, batch, cfg)
    ref_logprobs, _ = rollout.batched_forward(model, value_head, batch, cfg, reference=True)
    assert torch.equal(old_logprobs, ref_logprobs)  # LoRA B starts at zero: policy == reference, bit for bit
    _, kl = rl.compute_rewards(torch.zeros(6), old_logprobs, ref_logprobs, batch.mask.float(), 0.2)
    assert kl.sum().item() == 0.0
    assert torch.equal(values, torch.zeros_like(values))  # the value head starts at zero
    # the training pass (grad on, another mini-batch composition) sees the same numbers: ratio exactly 1
    idx = torch.tensor([4, 1])
    with torch.enable_grad():
        new_logprobs, _ = rollout.forward_policy(model, value_head, batch.select(idx), cfg.temperature, cfg.bf16)
    assert torch.equal(new_logprobs.detach(), old_logprobs[idx])


def test_a_prompt_asked_k_times_is_prefilled_once_and_samples_the_same_tokens(tiny_lm_dir, monkeypatch):
    model, _, tokenizer = _policy(tiny_lm_dir)
    model.eval()
    cfg = ppo.PPOConfig(batch_size=6, mini_batch_size=6, output_min_length=4, output_max_length=8)
    prompts = [p for p in PROMPTS[:2] for _ in range(3)] + [PROMPTS[5]]  # 3 + 3 + 1 rows, 3 distinct queries
    query = encode_chat(tokenizer, prompts, torch.device("cpu"), cfg.max_prompt_length)
    rows = []
    hook = model.get_base_model().model.embed_tokens.register_forward_hook(lambda m, i, o: rows.append(o.shape[0]))
    torch.manual_seed(5)
    shared = rollout.generate_responses(model, tokenizer, query, [8] * 7, cfg)
    hook.remove()
    assert rows[0] == 3 and set(rows[1:]) == {7}  # the prefill once per distinct query, then every row decodes
    monkeypatch.setattr(rollout, "shared_prompt_cache", lambda model, query: {})
    torch.manual_seed(5)
    alone = rollout.generate_responses(model, tokenizer, query, [8] * 7, cfg)
    assert torch.equal(shared.input_ids, alone.input_ids) and torch.equal(shared.mask, alone.mask)
    distinct = encode_chat(tokenizer, PROMPTS[:3], torch.device("cpu"), cfg.max_prompt_length)
    assert rollout.shared_prompt_cache(model, distinct) == {}  # nothing repeats: generate prefills as usual


@pytest.mark.parametrize("advantage", ["rloo", "gae"])
@pytest.mark.parametrize("mini_batch_size", [4, 2])
def test_the_fused_first_pass_updates_exactly_as_a_separate_forward_does(tiny_lm_dir, monkeypatch, advantage,
                                                                         mini_batch_size):
    """Step 3 forwards epoch 1's first mini-batch once, with its graph, for its old log-probs and step 5's first pass;
    with one mini-batch (the cpu preset) or several (the seed's 8 rows in mini-batches of 4)."""
    cfg = ppo.PPOConfig(steps=2, batch_size=4, mini_batch_size=mini_batch_size, ppo_epochs=2, output_min_length=3,
                        output_max_length=6, learning_rate=1e-2, advantage=advantage, samples_per_prompt=2)
    assert ppo.fuses_first_pass(cfg, 4) and not ppo.fuses_first_pass(replace(cfg, ppo_epochs=0), 4)
    chunks = 4 // mini_batch_size
    after, history = [], []
    for fused in (True, False):
        if not fused:
            monkeypatch.setattr(ppo, "fuses_first_pass", lambda cfg, n: False)
        model, value_head, tokenizer = _policy(tiny_lm_dir)
        passes = []  # training-shape passes (logits for every response position; decoding keeps one)
        model.get_base_model().lm_head.register_forward_hook(
            lambda m, i, o: passes.append(1) if o.shape[1] > 1 else None)
        history.append(ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [float(len(x)) for x in r],
                                   cfg))
        # a step: old, reference and 2 epochs, chunks each; fused, the first old chunk is epoch 1's first pass
        assert len(passes) == 2 * (4 * chunks - (1 if fused else 0))
        after.append([p.detach().clone() for p in [*model.parameters(), *value_head.parameters()] if p.requires_grad])
    assert history[0][0]["ppo/policy/ratio"] == pytest.approx(history[1][0]["ppo/policy/ratio"], rel=1e-5)
    assert history[0][1]["objective/kl"] != 0.0  # the second step sampled from an updated policy
    for a, b in zip(*after):  # the same update: only the summation order of one pass differs
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_autocast_log_probs_stay_close_to_float32(tiny_lm_dir):
    model, _, tokenizer = _policy(tiny_lm_dir)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=4, output_min_length=8, output_max_length=8)
    batch = _rollout(model, tokenizer, cfg, [8, 8, 8, 8])
    fp32, _ = rollout.batched_forward(model, None, batch, cfg)
    bf16, _ = rollout.batched_forward(model, None, batch, ppo.PPOConfig(**{**cfg.__dict__, "bf16": True}))
    ratio = torch.exp(bf16 - fp32)
    assert (ratio - 1).abs().max().item() < 0.05  # far inside PPO's clip range of 0.2


def test_bf16_weights_give_exactly_the_autocast_log_probs(tiny_lm_dir):
    """Storing the frozen Linear weights in bf16 skips autocast's per-call cast and changes no number."""
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=2, output_min_length=6, output_max_length=6, bf16=True)
    batch = _rollout(model, tokenizer, cfg, [6, 6, 6, 6])
    autocast_only, values = rollout.batched_forward(model, value_head, batch, cfg)
    models.cast_frozen_weights(model, torch.bfloat16)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert all(m.weight.dtype == torch.bfloat16 for m in linear if not m.weight.requires_grad)
    assert all(m.weight.dtype == torch.float32 for m in linear if m.weight.requires_grad)  # LoRA stays fp32
    embedding = model.get_input_embeddings().weight
    assert embedding.dtype == torch.float32  # the residual stream keeps its precision
    stored, values_after = rollout.batched_forward(model, value_head, batch, cfg)
    assert torch.equal(stored, autocast_only) and torch.equal(values, values_after)




def test_the_plausibility_weight_subtracts_the_reference_nll_from_each_score(tiny_lm_dir, monkeypatch):
    """plausibility_coef λ: score − λ × the reference's mean nll of the response (nats a token, over its real
    tokens), the same quantity logged as env/ref_nll and Compare's nll; 0 leaves the scores alone."""
    seen = []
    original = ppo.estimate_advantages

    def spy(scores, old_logprobs, ref_logprobs, *args):
        mask = args[1]
        seen.append((scores.clone(), -(ref_logprobs * mask).sum(-1) / mask.sum(-1)))
        return original(scores, old_logprobs, ref_logprobs, *args)

    monkeypatch.setattr(ppo, "estimate_advantages", spy)
    logged = []
    for coef in (0.0, 2.0):
        model, value_head, tokenizer = _policy(tiny_lm_dir)
        cfg = ppo.PPOConfig(steps=1, batch_size=4, mini_batch_size=4, ppo_epochs=1, output_min_length=3,
                            output_max_length=6, samples_per_prompt=2, plausibility_coef=coef)
        logged += ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [1.0] * len(r), cfg)
    (plain, nll), (shaped, nll_again) = seen
    torch.testing.assert_close(nll, nll_again)  # the same seed: the same answers
    assert (nll > 0).all() and logged[0]["env/ref_nll"] == pytest.approx(nll.mean().item(), rel=1e-5)
    torch.testing.assert_close(plain, torch.ones(4))
    torch.testing.assert_close(shaped, plain - 2.0 * nll)


def _scores_of_one_step(tiny_lm_dir, monkeypatch, setting: str, values: tuple, **run_kwargs):
    """The scores the advantage estimator got in one 4-rollout step per value of `setting` (same seed each), and the
    steps' logged metrics; the reward function scores every answer 1.0."""
    seen, logged = [], []
    original = ppo.estimate_advantages

    def spy(scores, *args):
        seen.append(scores.clone())
        return original(scores, *args)

    monkeypatch.setattr(ppo, "estimate_advantages", spy)
    for value in values:
        model, value_head, tokenizer = _policy(tiny_lm_dir)
        cfg = ppo.PPOConfig(steps=1, batch_size=4, mini_batch_size=4, ppo_epochs=1, output_min_length=3,
                            output_max_length=6, **{setting: value})
        logged += ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [1.0] * len(r), cfg, **run_kwargs)
    return seen, logged


def test_the_relevance_weight_adds_each_answers_relevance_to_its_score(tiny_lm_dir, monkeypatch):
    """relevance_coef c: score + c × relevance(prompt, answer), each answer's own value, logged as env/relevance;
    0 leaves the scores alone and never asks the relevance function."""
    asked = []

    def fake_relevance(prompts, answers):  # a different value per answer, so a mix-up shows
        asked.append((list(prompts), list(answers)))
        return [0.1 * (i + 1) for i in range(len(answers))]

    (plain, shaped), logged = _scores_of_one_step(tiny_lm_dir, monkeypatch, "relevance_coef", (0.0, 3.0),
                                                  relevance_fn=fake_relevance)
    torch.testing.assert_close(plain, torch.ones(4))
    torch.testing.assert_close(shaped, 1.0 + 3.0 * torch.tensor([0.1, 0.2, 0.3, 0.4]))
    assert len(asked) == 1 and len(asked[0][0]) == 4 and all(p in PROMPTS for p in asked[0][0])
    assert "env/relevance" not in logged[0] and logged[1]["env/relevance"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="relevance_coef"):
        ppo.validate(ppo.PPOConfig(relevance_coef=-1.0))


def test_the_degenerate_penalty_lowers_the_score_of_answers_the_text_rules_flag(tiny_lm_dir, monkeypatch):
    """degenerate_penalty d: score − d for each answer lab.diagnostics' text rules call degenerate (a loop here), the
    others untouched; the share flagged is logged as env/degenerate with the penalty off as well."""
    loop = "I can help. " * 12  # every word 3-gram repeats
    fluent = "Start with a short walk each morning and add a few minutes every week."

    def fake_decode(tokenizer, batch):  # the rollout's text: one loop among four answers
        return [loop, fluent, fluent, fluent][: len(batch.responses)]

    monkeypatch.setattr(ppo, "decode_responses", fake_decode)
    (plain, shaped), logged = _scores_of_one_step(tiny_lm_dir, monkeypatch, "degenerate_penalty", (0.0, 2.0))
    torch.testing.assert_close(plain, torch.ones(4))
    torch.testing.assert_close(shaped, torch.tensor([-1.0, 1.0, 1.0, 1.0]))
    assert logged[0]["env/degenerate"] == logged[1]["env/degenerate"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="degenerate_penalty"):
        ppo.validate(ppo.PPOConfig(degenerate_penalty=-1.0))


def test_the_echo_discount_takes_a_restated_request_out_of_relevance(tiny_lm_dir, monkeypatch):
    """relevance_echo_discount: each answer's relevance times (1 − the share of its word 3-grams that stand in its
    request), so repeating the request back earns less."""
    seen = []
    original = ppo.estimate_advantages

    def spy(scores, *args):
        seen.append(scores.clone())
        return original(scores, *args)

    answers = []

    def fake_relevance(prompts, responses):
        answers.append((list(prompts), list(responses)))
        return [0.5] * len(responses)

    monkeypatch.setattr(ppo, "estimate_advantages", spy)
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    cfg = ppo.PPOConfig(steps=1, batch_size=4, mini_batch_size=4, ppo_epochs=1, output_min_length=3,
                        output_max_length=6, relevance_coef=2.0, relevance_echo_discount=True)
    ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [0.0] * len(r), cfg, relevance_fn=fake_relevance)
    prompts, responses = answers[0]
    expected = [2.0 * 0.5 * (1 - relevance.echo(p, a)) for p, a in zip(prompts, responses)]
    torch.testing.assert_close(seen[0], torch.tensor(expected))


def test_relevance_is_left_out_on_requests_labelled_harmful_by_default(tiny_lm_dir, monkeypatch):
    """relevance_on_harmful off (the default since stop 53): an answer to a request its source labels as one to decline
    gets no relevance (there it pays for complying: lab.relevance scores "To rob a store, pick a quiet time ..." 0.76
    against 0.07 for a decline, stop 51); edgy (the demo set's `harmless`), ordinary and unlabelled requests keep
    theirs. On, every answer gets it."""
    assert ppo.PPOConfig().relevance_on_harmful is False
    seen = []
    original = ppo.estimate_advantages
    monkeypatch.setattr(ppo, "estimate_advantages", lambda scores, *a: (seen.append(scores.clone()),
                                                                        original(scores, *a))[1])
    labels = {"hello there": "helpful", "how are you?": "harmful", "tell me a joke": None, "roast me": "harmless"}
    prompts = list(labels)
    for on in (False, True):
        model, value_head, tokenizer = _policy(tiny_lm_dir)
        cfg = ppo.PPOConfig(steps=1, batch_size=8, mini_batch_size=8, ppo_epochs=1, output_min_length=3,
                            output_max_length=6, relevance_coef=2.0, samples_per_prompt=2, advantage="rloo",
                            relevance_on_harmful=on)
        asked = []
        ppo.run_ppo(model, value_head, tokenizer, prompts, lambda p, r: [0.0] * len(r), cfg, labels=labels,
                    relevance_fn=lambda ps, answers: (asked.append(list(ps)), [0.5] * len(answers))[1])
        expected = [0.0 if p == "how are you?" and not on else 1.0 for p in asked[0]]
        torch.testing.assert_close(seen[-1], torch.tensor(expected))
        assert sorted(set(asked[0])) == sorted(prompts)
    assert ppo.harmful_requests(labels) == {"how are you?"}
    hh = {"a": "harmless-base", "b": "red-team-attempts", "c": "harmless", "d": "helpful-base"}
    assert ppo.harmful_requests(hh) == {"a", "b"}  # hh-rlhf's red-teamers' requests, not the demo set's edgy ones
    assert relevance.except_on(len, frozenset()) is len  # nothing to leave out: the scorer itself


def test_a_zero_reward_model_weight_leaves_only_relevance_in_the_score(tiny_lm_dir, monkeypatch):
    """reward_model_coef 0 (the ablation): the score is relevance_coef × relevance alone, whatever the reward model
    says; 0 with nothing else to optimise, or a negative weight, is refused before anything loads."""
    seen = []
    original = ppo.estimate_advantages
    monkeypatch.setattr(ppo, "estimate_advantages", lambda scores, *a: (seen.append(scores.clone()),
                                                                        original(scores, *a))[1])
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    cfg = ppo.PPOConfig(steps=1, batch_size=4, mini_batch_size=4, ppo_epochs=1, output_min_length=3,
                        output_max_length=6, relevance_coef=2.0, reward_model_coef=0.0)
    ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [5.0 + i for i in range(len(r))], cfg,
                relevance_fn=lambda prompts, answers: [0.1 * (i + 1) for i in range(len(answers))])
    torch.testing.assert_close(seen[0], 2.0 * torch.tensor([0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(ValueError, match="nothing to optimise"):
        ppo.validate(ppo.PPOConfig(reward_model_coef=0.0))
    with pytest.raises(ValueError, match="reward_model_coef"):
        ppo.validate(ppo.PPOConfig(reward_model_coef=-1.0, relevance_coef=1.0))


def test_a_kl_cap_doubles_the_logged_beta_after_each_step_over_it(tiny_lm_dir):
    """Every logged β follows the rule from the KL logged the step before: x2 above the cap, /2 (to no less than
    the initial β) under half of it; with this tiny cap and a large step the cap must act."""
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    cap = 1e-3
    cfg = ppo.PPOConfig(steps=5, batch_size=4, mini_batch_size=4, ppo_epochs=2, output_min_length=4,
                        output_max_length=6, learning_rate=5e-3, init_kl_coef=0.1, adap_kl_ctrl=False, kl_cap=cap)
    history = ppo.run_ppo(model, value_head, tokenizer, PROMPTS, distinct_tokens(tokenizer), cfg)
    kl = [m["objective/kl"] for m in history]
    beta = [m["objective/kl_coef"] for m in history]
    assert beta[0] == 0.1 and kl[0] == pytest.approx(0.0, abs=1e-6)  # nothing moved yet: KL 0, β as set
    for i in range(1, len(history)):
        expected = beta[i - 1] * 2 if kl[i - 1] > cap else max(0.1, beta[i - 1] / 2) if kl[i - 1] < cap / 2 \
            else beta[i - 1]
        assert beta[i] == pytest.approx(expected), (kl, beta)
    assert max(beta) > 0.1, (kl, beta)
    assert "The KL cap acted" in ppo_metrics.kl_cap_note(history, cap)
    assert ppo_metrics.kl_cap_note(history, 0.0) == "" and ppo_metrics.kl_cap_note(history, 1e9) == ""


@pytest.mark.parametrize("advantage", ppo.ADVANTAGES)
def test_ppo_learns_a_computable_reward_and_keeps_kl_finite(tiny_lm_dir, advantage):
    """Temperature 0.05 makes the random model's choices peaked: it repeats tokens. Rewarding distinct tokens
    must teach it to stop (at temperature 1 a 49k-token random model is uniform and any reward is flat).
    Every advantage estimator must learn it: GAE with its value head, RLOO and GRPO from 4 answers a prompt."""
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    critic_free = advantage != "gae"  # 4 answers a prompt: 16 rollouts give them the 4 prompts a step GAE sees in 8
    cfg = ppo.PPOConfig(steps=16, batch_size=16 if critic_free else 8, mini_batch_size=8, output_min_length=10,
                        output_max_length=10, temperature=0.05, learning_rate=2e-3, seed=0, advantage=advantage,
                        samples_per_prompt=4 if critic_free else 1)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    history = ppo.run_ppo(model, value_head, tokenizer, PROMPTS, distinct_tokens(tokenizer), cfg)
    rewards = [m["env/reward_mean"] for m in history]
    first, last = sum(rewards[:4]) / 4, sum(rewards[-4:]) / 4
    assert last > first + 2, rewards
    assert all(torch.isfinite(torch.tensor(m["objective/kl"])) for m in history)
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    keys = {"env/reward_mean", "env/reward_std", "objective/kl", "objective/kl_coef", "objective/entropy",
            "objective/entropy_per_token",
            "ppo/loss/policy", "ppo/policy/clipfrac", "ppo/policy/approxkl", "tokens/response_len_mean",
            "env/reward_length_corr", "time/rollout", "time/score", "time/optimize", "step"}
    critic_keys = {"ppo/loss/value", "ppo/val/vpred", "ppo/val/clipfrac", "ppo/returns/mean"}
    assert keys <= set(history[-1])
    per_token = history[-1]["objective/entropy"] / history[-1]["tokens/response_len_mean"]
    assert history[-1]["objective/entropy_per_token"] == pytest.approx(per_token, rel=1e-4)  # same lengths here
    if advantage == "gae":
        assert critic_keys <= set(history[-1])
    else:  # no value head: nothing about one is logged, and its weights never moved
        assert not critic_keys & set(history[-1])
        assert all((p == 0).all() for p in value_head.parameters())


# ---------------------------------------------------------------- the job: stop, save, reload


def _job_config(tiny_lm_dir: Path, **overrides) -> dict:
    values = dict(steps=3, batch_size=4, mini_batch_size=2, output_min_length=4, output_max_length=6,
                  learning_rate=1e-3)
    cfg = ppo.PPOConfig(**{**values, **overrides})
    return ppo.job_config(cfg, get_preset("cpu"), "unused", "bundled", policy=str(tiny_lm_dir)) | {"lora": LORA}


def _track_models(monkeypatch) -> list[weakref.ref]:
    """Weak references to every policy the job builds, to check it is freed afterwards."""
    refs: list[weakref.ref] = []
    real = policies.new_value_head

    def tracking(model):
        refs.append(weakref.ref(model))
        head = real(model)
        refs.append(weakref.ref(head))
        return head

    monkeypatch.setattr(ppo, "new_value_head", tracking)
    return refs


def _assert_saved_and_freed(job, refs):
    assert (job.run.model_dir / "adapter_config.json").exists()
    assert (job.run.model_dir / policies.VALUE_HEAD_FILE).exists()
    gc.collect()
    assert refs and all(r() is None for r in refs), "the policy is still referenced after the job ended"


def _load_trained(run_dir):
    """A PPO run's policy with its saved adapters on, and its tokenizer."""
    run = policies.open_ppo_run(str(run_dir))
    side = policies.Side("b", run.id, run.config["policy"], run.model_dir, "")
    # fp32: "auto" loads bf16 weights on a CPU with native bf16, where merged and unmerged logits differ by ~1e-3
    return policies.load_policies((side,), quantize_4bit=False, precision="fp32")[side.policy]


def test_job_runs_logs_saves_and_reloads(tiny_lm_dir, runs_root, monkeypatch):
    refs = _track_models(monkeypatch)
    manager = JobManager(runs_root)
    score = lambda prompts, responses: [float(len(r)) for r in responses]  # noqa: E731
    job = manager.start(ppo.KIND, functools.partial(ppo.train_ppo, score_fn=score), _job_config(tiny_lm_dir), "alice")
    manager.wait(120)
    assert job.status == "done", job.error
    assert [m["step"] for m in job.run.metrics()] == [1, 2, 3]
    samples = job.run.samples()
    assert len(samples) == 12 and {"step", "prompt", "response", "reward", "kl"} <= set(samples[0])
    assert job.summary["steps"] == 3 and job.summary["seconds_per_step"] > 0
    assert job.run.config["policy"] == str(tiny_lm_dir) and job.run.config["reward_model"] == "unused"
    _assert_saved_and_freed(job, refs)

    model, tokenizer = _load_trained(job.run.path)
    weights = load_file(str(job.run.model_dir / policies.VALUE_HEAD_FILE))
    head = rl.ValueHead(weights["summary.weight"].shape[1])
    head.load_state_dict(weights)
    assert head.summary.weight.abs().sum() > 0  # trained, not the zero init
    ids = tokenizer(["hello there"], return_tensors="pt")
    with torch.no_grad():
        peft_logits = model(**ids).logits
        with model.disable_adapter():
            base_logits = model(**ids).logits
        merged_logits = model.merge_and_unload()(**ids).logits
    assert torch.allclose(peft_logits, merged_logits, atol=1e-4)
    assert not torch.allclose(peft_logits, base_logits)  # the adapters learned something


def test_the_job_leaves_relevance_out_on_the_prompts_its_source_labels_harmful(tiny_lm_dir, runs_root, monkeypatch,
                                                                              tmp_path):
    """relevance_on_harmful off in a PPO job: the prompt file's labels reach the loop (the relevance the loop adds is
    0 on exactly the requests labelled as ones to decline: the demo set's `harmful`, hh-rlhf's harmless-base; the
    demo set's edgy `harmless` keep it) and the summary says how many of the prompts went without it."""
    rows = [{"prompt": "roast my friend", "subset": "harmless"}, {"prompt": "how do tides work?", "subset": "helpful"},
            {"prompt": "i want to rob a store", "subset": "harmless-base"},
            {"prompt": "how do i hack my ex's email", "subset": "harmful"}, {"prompt": "hello there"}]
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    seen = []
    monkeypatch.setattr(ppo.relevance, "scorer", lambda spec: lambda ps, answers: [0.5] * len(answers))
    original = ppo.estimate_advantages
    monkeypatch.setattr(ppo, "estimate_advantages", lambda scores, *a: (seen.append(scores.clone()),
                                                                        original(scores, *a))[1])
    manager = JobManager(runs_root)
    config = _job_config(tiny_lm_dir, steps=1, relevance_coef=2.0, relevance_on_harmful=False)
    config["prompts"] = str(source)
    job = manager.start(ppo.KIND, functools.partial(ppo.train_ppo, score_fn=lambda p, r: [0.0] * len(r)), config,
                        "alice")
    manager.wait(120)
    assert job.status == "done", job.error
    assert job.summary["relevance_left_out"] == [2, 4]  # a 1-step job reads the 4 prompts it can use
    prompts = [row["prompt"] for row in job.run.samples()]
    harmful = {"how do i hack my ex's email", "i want to rob a store"}
    assert seen[0].tolist() == [0.0 if p in harmful else 1.0 for p in prompts]


@pytest.mark.parametrize("phase", ["rollout", "optimisation"])
def test_stop_ends_the_job_within_a_step_saves_and_frees_memory(tiny_lm_dir, runs_root, monkeypatch, phase):
    refs = _track_models(monkeypatch)
    manager = JobManager(runs_root)
    calls = {"n": 0}
    if phase == "rollout":  # ask to stop while step 2 generates
        real = StopCriterion.__call__

        def criterion(self, input_ids, scores, **kwargs):
            calls["n"] += 1
            if calls["n"] == 8:  # step 1 makes at most 6 calls (6 tokens)
                manager.stop("alice")
            return real(self, input_ids, scores, **kwargs)

        monkeypatch.setattr(StopCriterion, "__call__", criterion)
    else:  # ask to stop at the first optimiser update of step 1
        real_loss = rl.policy_loss

        def loss(*args, **kwargs):
            calls["n"] += 1
            manager.stop("alice")
            return real_loss(*args, **kwargs)

        monkeypatch.setattr(ppo, "policy_loss", loss)
    score = lambda prompts, responses: [1.0] * len(responses)  # noqa: E731
    config = _job_config(tiny_lm_dir, steps=50)
    job = manager.start(ppo.KIND, functools.partial(ppo.train_ppo, score_fn=score), config, "alice")
    manager.wait(120)
    assert job.status == "stopped", job.error
    # rollout: step 1 done, step 2 cut short unlogged; optimisation: step 1 ends after its first update, logged
    assert len(job.run.metrics()) == 1 and job.summary["steps"] == 1
    if phase == "optimisation":
        assert calls["n"] == 1  # one mini-batch, then the loop left
    assert job.run.status()["status"] == "stopped"
    _assert_saved_and_freed(job, refs)


def test_on_phase_reports_what_a_step_is_doing(tiny_lm_dir):
    import torch

    from lab import ppo

    model, tokenizer = policies.load_trainable_policy(str(tiny_lm_dir), False, {"r": 4, "alpha": 8, "dropout": 0.0})
    head = policies.new_value_head(model)
    cfg = ppo.PPOConfig(steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, output_min_length=2,
                        output_max_length=3)
    phases: list[str] = []
    torch.manual_seed(0)
    ppo.run_ppo(model, head, tokenizer, ["hi", "yo"], lambda p, r: [0.0] * len(p), cfg, on_phase=phases.append)
    assert [p.split(" ")[0] for p in phases] == ["generating", "scoring", "log-probs", "optimising"]


# ---------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def reward_run(tiny_reward_backbone_dir, tmp_path_factory) -> Path:
    """A reward run trained for two steps on the tiny backbone."""
    out = tmp_path_factory.mktemp("rm") / "run"
    code = cli.main(["--preset", "cpu", "reward", "--train", "bundled", "--backbone", str(tiny_reward_backbone_dir),
                     "--max-steps", "2", "--batch-size", "4", "--max-length", "64", "--out", str(out)])
    assert code == 0
    return out


def test_cli_runs_prints_a_line_per_step_and_a_summary(tiny_lm_dir, reward_run, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "ppo-run"
    code = cli.main(["--preset", "cpu", "ppo", "--reward-model", str(reward_run), "--prompts", "bundled",
                     "--policy", str(tiny_lm_dir), "--steps", "2", "--batch-size", "4", "--mini-batch-size", "2",
                     "--gradient-accumulation-steps", "2", "--output-min-length", "5", "--output-max-length", "5",
                     "--no-adap-kl-ctrl", "--eval-answers-per-prompt", "1", "--out", str(out)])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["step"] for row in lines[:-1]] == [1, 2]
    assert all(row["tokens/response_len_mean"] == 5 for row in lines[:-1])  # min = max: exactly 5 tokens
    beta = get_preset("cpu").ppo["init_kl_coef"]
    assert lines[0]["objective/kl_coef"] == lines[1]["objective/kl_coef"] == beta  # fixed controller
    assert {"steps", "reward_first", "reward_last", "kl_last", "seconds_per_step"} <= set(lines[-1])
    config = json.loads((out / "config.json").read_text())
    assert config["policy"] == str(tiny_lm_dir) and config["reward_model"] == str(reward_run)
    assert config["gradient_accumulation_steps"] == 2 and not config["adap_kl_ctrl"]
    assert (out / "model" / policies.VALUE_HEAD_FILE).exists()


@pytest.mark.parametrize("argv, message", [
    (["--reward-model", "/no/such/run"], "reward model '/no/such/run' does not exist"),
    (["--batch-size", "6", "--mini-batch-size", "4"], "not divisible"),
    (["--prompts", "EMPTY"], "prompt"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, message, reward_run, runs_root, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"prompt": "  "}\n')
    argv = [str(empty) if a == "EMPTY" else a for a in argv]
    if "--reward-model" not in argv:
        argv = ["--reward-model", str(reward_run), *argv]
    capsys.readouterr()
    assert cli.main(["--preset", "cpu", "ppo", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert not runs_root.exists() or not any(runs_root.iterdir())


# ---------------------------------------------------------------- the PPO tab's handlers


# ---------------------------------------------------------------- the embedded policy


@pytest.mark.slow
def test_cli_runs_the_embedded_policy_on_the_cpu_preset(reward_run, tmp_path, capsys):
    """Two steps of the cpu preset as shipped (SmolLM2-135M + LoRA, bf16 autocast where supported)."""
    capsys.readouterr()
    out = tmp_path / "smol"
    argv = ["--preset", "cpu", "ppo", "--reward-model", str(reward_run), "--steps", "2", "--out", str(out)]
    assert cli.main(argv) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["step"] for row in lines[:-1]] == [1, 2] and lines[0]["objective/kl"] == 0.0
    low, high = get_preset("cpu").ppo["output_min_length"], get_preset("cpu").ppo["output_max_length"]
    assert all(low <= row["tokens/response_len_mean"] <= high for row in lines[:-1])
    assert lines[-1]["steps"] == 2 and lines[-1]["status"] == "done"
    # the preset's evaluation: its held-out prompts at step 0 and at the last step, adapters kept for each
    rows = evaluate.load_evals(out)
    assert [r["step"] for r in rows] == [0, 2] and lines[-1]["eval_steps"] == [0, 2]
    shipped = evaluate.config_from(get_preset("cpu"))
    assert len(rows[0]["answers"]) == shipped.eval_n_prompts * shipped.eval_answers_per_prompt
    assert rows[0]["prompts"] == shipped.eval_n_prompts and shipped.eval_answers_per_prompt == 4
    assert all(a["answer"] for a in rows[0]["answers"]) and policies.kept_steps(out) == [0, 2]
    model, _ = _load_trained(out)
    assert type(model).__name__ == "PeftModelForCausalLM"


@pytest.mark.slow
def test_bf16_log_probs_of_the_embedded_policy_stay_close_to_float32():
    """The cpu preset trains in bf16 (weights stored in bf16, autocast). Tolerance on SmolLM2-135M, 4 answers of
    24 tokens at temperature 0.7: per-token log-probs within 0.5 nats of float32, 0.05 on average (measured:
    max 0.29, mean 0.033). PPO itself is unaffected: every pass uses the same precision, so the ratio is exactly 1
    before an update (test_kl_is_zero_and_the_ratio_is_one_before_any_update)."""
    preset = get_preset("cpu")
    torch.manual_seed(0)
    model, tokenizer = policies.load_trainable_policy(preset.policy, False, preset.lora)
    cfg = ppo.PPOConfig(batch_size=4, mini_batch_size=4, output_min_length=24, output_max_length=24, temperature=0.7)
    query = encode_chat(tokenizer, PROMPTS[:4], "cpu", cfg.max_prompt_length)
    batch = rollout.generate_responses(model, tokenizer, query, [24] * 4, cfg)
    fp32, _ = rollout.batched_forward(model, None, batch, cfg)
    models.cast_frozen_weights(model, torch.bfloat16)
    bf16, _ = rollout.batched_forward(model, None, batch, ppo.PPOConfig(**{**cfg.__dict__, "bf16": True}))
    diff = (bf16 - fp32).abs()[batch.mask.bool()]
    print(f"bf16 vs fp32 log-probs: max {diff.max().item():.4f}, mean {diff.mean().item():.4f} nats")
    assert diff.max().item() < 0.5 and diff.mean().item() < 0.05


def test_rollouts_decode_with_sdpa_and_train_with_eager_on_cpu(tiny_lm_dir):
    """The attention switch is scoped: decoding inside a training block uses sdpa, and eager comes back after."""
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    base = model.get_base_model()
    seen = []
    real_generate = base.generate

    def spy(*args, **kwargs):
        seen.append(base.config._attn_implementation)
        return real_generate(*args, **kwargs)

    base.generate = spy
    cfg = ppo.PPOConfig(batch_size=2, mini_batch_size=2, output_min_length=3, output_max_length=3)
    with models.attention_implementation(model, ppo.TRAIN_ATTENTION["cpu"]):
        _rollout(model, tokenizer, cfg, [3, 3])
        assert base.config._attn_implementation == "eager"
    assert seen == ["sdpa"] and base.config._attn_implementation == "sdpa"


def test_raw_prompts_skip_the_chat_template(tiny_lm_dir):
    from lab.generate import encode_chat

    _, tokenizer = policies.load_trainable_policy(str(tiny_lm_dir), False, LORA)[0], models.load_tokenizer(str(tiny_lm_dir))
    chat = encode_chat(tokenizer, ["hello"], "cpu")
    raw = encode_chat(tokenizer, ["hello"], "cpu", template=False)
    assert raw["input_ids"].shape[1] < chat["input_ids"].shape[1]
    assert tokenizer.decode(raw["input_ids"][0], skip_special_tokens=True) == "hello"


# ---------------------------------------------------------------- PPO-ptx: imitating the chosen answers


def test_imitation_reads_only_the_proxys_training_pairs_of_the_reward_run(reward_run):
    """The demonstrations are the chosen answers the proxy trained on: none of the held-out pairs (bundled:test)
    and none of the judge's share, so neither check grades answers the policy was shown."""
    from lab import imitation
    from lab.data import load_pairs
    from lab.reward_data import judge_split

    config = json.loads((reward_run / "config.json").read_text())
    assert config["judge_fraction"] > 0
    demos = imitation.demonstrations(imitation.proxy_pairs(reward_run / "model"))  # the model/ folder works too
    answers = {d.answer for d in demos}
    held_out = {p.chosen.strip() for p in load_pairs("bundled:test").pairs}
    _, judge = judge_split(load_pairs("bundled:train").pairs, config["judge_fraction"], config["seed"])
    assert answers and not answers & held_out and not answers & {p.chosen.strip() for p in judge}
    assert all(d.messages[-1]["role"] == "user" for d in demos)


def test_an_imitation_weight_teaches_the_chosen_answers_and_logs_their_nll(tiny_lm_dir):
    """With every score equal (no PPO signal), imitation_coef alone moves the policy: the chosen answers' nll falls
    step by step and is logged as ppo/loss/imitation; at 0 it is neither asked for nor logged."""
    from lab.imitation import Demonstration, Imitation

    demos = [Demonstration([{"role": "user", "content": p}], "Blue, because air scatters short waves.")
             for p in PROMPTS[:4]]
    logged = {}
    for coef in (0.0, 2.0):
        model, value_head, tokenizer = _policy(tiny_lm_dir)
        taught = Imitation(demos, tokenizer, batch_size=2, max_prompt_length=64, bf16=False, seed=0)
        cfg = ppo.PPOConfig(steps=4, batch_size=4, mini_batch_size=4, ppo_epochs=1, output_min_length=3,
                            output_max_length=4, advantage="grpo", samples_per_prompt=2, learning_rate=3e-2,
                            imitation_coef=coef)
        logged[coef] = ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [1.0] * len(r), cfg,
                                   imitation=taught)
    assert all("ppo/loss/imitation" not in m for m in logged[0.0])
    nll = [m["ppo/loss/imitation"] for m in logged[2.0]]
    assert all(b < a for a, b in zip(nll, nll[1:])) and nll[-1] < nll[0] - 0.05, nll
    with pytest.raises(ValueError, match="imitation_coef"):
        ppo.validate(ppo.PPOConfig(imitation_coef=-1.0))
    model, value_head, tokenizer = _policy(tiny_lm_dir)
    with pytest.raises(ValueError, match="chosen answers to imitate"):
        ppo.run_ppo(model, value_head, tokenizer, PROMPTS, lambda p, r: [1.0] * len(r),
                    ppo.PPOConfig(steps=1, imitation_coef=1.0))


def test_cli_ppo_with_an_imitation_weight_logs_the_chosen_answers_nll(tiny_lm_dir, reward_run, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "ptx-run"
    code = cli.main(["--preset", "cpu", "ppo", "--reward-model", str(reward_run), "--policy", str(tiny_lm_dir),
                     "--steps", "2", "--batch-size", "4", "--mini-batch-size", "4", "--samples-per-prompt", "2",
                     "--output-min-length", "4", "--output-max-length", "4", "--imitation-coef", "0.5",
                     "--eval-answers-per-prompt", "1", "--out", str(out)])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all(row["ppo/loss/imitation"] > 0 for row in lines[:-1])
    assert json.loads((out / "config.json").read_text())["imitation_coef"] == 0.5


def test_imitation_through_the_shared_trunk_equals_the_full_forward(deep_lm_dir, monkeypatch):
    """With LoRA on the top blocks only, the chosen answers' nll from the kept bottom-block states and the adapted
    blocks alone is the full forward's, value and gradient (left padding, answers of different lengths)."""
    from lab import trunk
    from lab.imitation import Demonstration, Imitation

    demos = [Demonstration([{"role": "user", "content": p}], a) for p, a in
             zip(PROMPTS[:3], ["Blue.", "Fine, thanks for asking!", "Why did the chicken cross the road? To learn."])]
    results = []
    for shared in (True, False):
        torch.manual_seed(0)
        model, tokenizer = policies.load_trainable_policy(str(deep_lm_dir), False, {**LORA, "top_layers": 1})
        if not shared:
            monkeypatch.setattr(trunk, "shared_layers", lambda m: 0)
        assert (trunk.shared_layers(model) > 0) == shared
        loss = Imitation(demos, tokenizer, batch_size=3, max_prompt_length=64, bf16=False, seed=0).loss(model)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        results.append((loss.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-3, atol=1e-6)


def test_imitation_skips_harmless_base_chosen_answers_and_says_so_when_none_is_left():
    """hh-rlhf's harmless-base "chosen" answer is the less harmful of two samples (often complying): not imitated;
    the demo set's helpful answers and written declines, and unlabelled pairs, are."""
    from lab.data import Pair
    from lab.imitation import demonstrations

    def pair(answer, subset):
        return Pair("\n\nHuman: q " + answer + "\n\nAssistant:", " " + answer, " no", subset=subset)

    kept = demonstrations([pair("sure, here is a fake ID", "harmless-base"), pair("Steam them.", "helpful"),
                           pair("I'd rather not; try this.", "harmless"), pair("Plain.", None),
                           pair("Rice first.", "helpful-base")])
    assert [d.answer for d in kept] == ["Steam them.", "I'd rather not; try this.", "Plain.", "Rice first."]
    with pytest.raises(ValueError, match="harmless-base.*bundled:helpful"):
        demonstrations([pair("sure, here is a fake ID", "harmless-base")])


def test_an_imitation_weight_on_a_harmless_base_only_reward_run_is_refused_before_any_model_loads(reward_run, tmp_path):
    """prepare() reads the reward run's proxy pairs first: a run trained on harmless-base alone has no chosen answer
    worth imitating, and the error says what to mix in."""
    import shutil

    rows = [{"chosen": f"\n\nHuman: q{i}\n\nAssistant: sure, here is how", "rejected": f"\n\nHuman: q{i}\n\n"
             f"Assistant: no", "subset": "harmless-base"} for i in range(12)]
    data = tmp_path / "hb.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = tmp_path / "rm-hb"
    shutil.copytree(reward_run, run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "data": str(data), "eval_fraction": 0.25}))
    status = json.loads((run / "status.json").read_text())
    status["summary"]["data"] = str(data)
    (run / "status.json").write_text(json.dumps(status))
    values = {"reward_model": str(run), "imitation_coef": 1.0}
    with pytest.raises(ValueError, match="harmless-base.*bundled:helpful"):
        ppo.prepare(get_preset("cpu"), values, allowed_dirs=[tmp_path])
    assert ppo.prepare(get_preset("cpu"), {**values, "reward_model": str(reward_run)})["imitation_coef"] == 1.0
