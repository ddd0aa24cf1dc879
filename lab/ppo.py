"""PPO for RLHF on torch + transformers + peft (TRL 1.x has none): small pure functions, then one loop.

The loop follows TRL 0.x's `PPOTrainer` (the seed) with the fixes from "The N Implementation Details of RLHF
with PPO" (Huang et al. 2024, https://iclr-blogposts.github.io/2024/blog/the-n-implementation-details-of-rlhf-with-ppo/):
the reference model is the policy with its LoRA adapters disabled, log-probs are recomputed with the sampling
temperature, rollouts sample with top_k=0 and top_p=1, everything after EOS is masked, dropout is off (the model
stays in eval mode), and every forward pass uses the same shapes and precision, so the PPO ratio is exactly 1 and
the KL exactly 0 before the first update.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from lab import diagnostics, evaluate, memory, models, relevance
from lab.config import build, from_job, setting
from lab.data import expects_decline, load_prompt_rows, load_prompts
from lab.generate import encode_chat
from lab.imitation import Imitation, demonstrations, for_run, proxy_pairs
from lab.jobs import JobContext
from lab.policies import load_trainable_policy, new_value_head, save_policy
from lab.presets import Limits, Preset, get_preset
from lab.relevance import RelevanceFn
from lab.reward_model import ScoreFn, find_reward_model, model_folder, reward_run_config, reward_score_fn
from lab.rl import (KL_PENALTIES, AdaptiveKLController, FixedKLController, KLCap, RunningMoments, ValueHead,
                    check_gradients, estimate_advantages, masked_mean, mean_and_std, policy_loss, process_scores,
                    value_loss)
from lab.ppo_metrics import Rollout, sample_rows, step_metrics, summarize
from lab.rollout import (DECODE_ATTENTION, Batch, LengthSampler, batched_forward, decode_responses, forward_policy,
                         generate_responses, prompt_batches, with_trunk)
from lab.sources import DECLINE_PART_LABEL, own_parts_in, prompts_with_own_requests

KIND = "ppo"
ADVANTAGES = ("gae", "rloo", "grpo")  # GAE with a value head (PPO), or critic-free baselines from k samples a prompt

# Attention implementation per device type for the training passes (absent: the model's own); lab.rollout has
# the one for decoding.
TRAIN_ATTENTION = {"cpu": "eager"}


@dataclass
class PPOConfig:
    """PPO settings; names and defaults follow the seed (TRL 0.x `PPOConfig`), presets pick sizes per machine. Each
    field's label is the form's plain words; the field's name stays beside it, as the CLI and the papers call it."""

    # how much training
    steps: int = setting(100, "PPO steps; each samples one batch of rollouts", label="training steps")
    learning_rate: float = setting(1.4e-5, "Adam learning rate for the LoRA adapters and the value head",
                                   label="learning rate")
    batch_size: int = setting(16, "rollouts per PPO step", label="rollouts per step")
    mini_batch_size: int = setting(4, "rollouts per forward/backward pass", label="rollouts per gradient pass")
    gradient_accumulation_steps: int = setting(1, "mini-batches per update", label="gradient passes per update")
    ppo_epochs: int = setting(4, "optimisation passes over each batch of rollouts", label="passes over each batch")
    # the KL penalty and its adaptive controller
    init_kl_coef: float = setting(0.2, "initial weight of the per-token KL penalty", label="KL weight β")
    adap_kl_ctrl: bool = setting(True, "adapt the KL coefficient towards `target` (Ziegler et al. 2019)",
                                 label="adapt β towards the KL target")
    target: float = setting(6.0, "target KL (nats per response) of the adaptive controller", label="KL target")
    horizon: float = setting(10000.0, "the adaptive KL controller's horizon (rollouts)", label="KL adaptation horizon")
    kl_cap: float = setting(0.0, "the most KL (nats per response) a step may reach before β acts: after a step over it "
                            "β doubles, and once KL is back under half of it β halves again, never below its own "
                            "value (Schulman et al. 2017's adaptive penalty, one-sided); 0 = off", label="KL cap")
    kl_penalty: str = setting("kl", "per-token KL estimator: kl (k1 = logp - logp_ref), abs, mse or k3",
                              label="KL estimator", choices=KL_PENALTIES)
    # the clipped losses
    cliprange: float = setting(0.2, "PPO clip range of the probability ratio", label="clip range ε")
    cliprange_value: float = setting(0.2, "clip range of the value update", label="value clip range")
    vf_coef: float = setting(0.1, "weight of the value loss", label="value-loss weight")
    gamma: float = setting(1.0, "discount factor", label="discount γ")
    lam: float = setting(0.95, "GAE lambda", label="GAE λ")
    # advantages
    advantage: str = setting(
        "gae", "how each answer is judged better or worse than expected. gae: a value head (the critic) learns to "
        "predict the reward, the classic PPO. rloo: several answers per prompt (samples_per_prompt), each compared "
        "with the mean of the others, no critic (Ahmadian et al. 2024). grpo: like rloo, also divided by the group's "
        "spread (DeepSeek's GRPO).", label="Advantage estimator", widget="radio", choices=ADVANTAGES)
    samples_per_prompt: int = setting(1, "answers sampled per prompt in one batch (k); rloo and grpo need at least 2",
                                      label="answers per prompt, RLOO/GRPO")
    whiten_advantages: bool = setting(True, "scale advantages to unit std over the batch (GAE: also zero mean)",
                                      label="normalise advantages per batch")
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this; 0 = no clipping", label="gradient-norm clip")
    # shaping the reward model's scores
    whiten_rewards: bool = setting(False, "whiten the per-token rewards before GAE", label="normalise rewards per batch")
    use_score_scaling: bool = setting(False, "divide scores by their running std",
                                      label="scale scores by their running spread")
    use_score_norm: bool = setting(False, "with score scaling: also subtract the running mean",
                                   label="also centre the scores")
    score_clip: float = setting(0.0, "clip scores to ±this after scaling; 0 = off", label="score clip")
    reward_norm: bool = setting(False, "normalise the reward model's scores to mean 0, std 1 on the starting policy's own "
                                  "answers (the first step's, when policy = reference), so the KL weight means the same "
                                  "for any reward model (N implementation details, RM #3)",
                                label="normalise the reward model's scores")
    missing_eos_penalty: float = setting(0.0, "subtract this from the score of a response that never ends (no EOS)",
                                         label="penalty for an answer that never ends")
    plausibility_coef: float = setting(0.0, "subtract this times the reference model's mean negative log-likelihood of "
                                       "the response (nats a token) from its score: pays answers the base model finds "
                                       "plausible, against the slips sampling brings in; 0 = off",
                                       label="weight of the base model's plausibility")
    relevance_coef: float = setting(0.0, "add this times the answer's relevance to its request (lab.relevance: cosine "
                                    "of two sentence embeddings, about 0.2 for an answer about something else, 0.8 "
                                    "for one on topic) to its score: pays answers that take the request up; 0 = off",
                                    label="weight of the answer's relevance")
    relevance_on_harmful: bool = setting(False, "pay relevance on requests the prompt source labels as ones to "
                                         "decline too (the demo set's `harmful` prompts, hh-rlhf's harmless-base "
                                         "and red-team-*); off (the default): not on those, since there it pays "
                                         "for complying (a decline scores ~0.1, compliance ~0.8). Edgy requests "
                                         "(the demo set's `harmless` roasts and rants) and ordinary ones keep it",
                                         label="relevance on harmful requests")
    relevance_echo_discount: bool = setting(False, "take out of each answer's relevance the share of its word 3-grams "
                                            "that restate the request (lab.relevance.echo): relevance pays an answer "
                                            "that repeats the request back", label="discount restated requests")
    degenerate_penalty: float = setting(0.0, "subtract this from the score of an answer the lab's text rules call "
                                        "degenerate (lab.diagnostics: a loop, a repeated phrase, word salad, an "
                                        "empty answer, a bare count, another script), the answers readers call word "
                                        "salad that the reward model may still pay; the share flagged is logged as "
                                        "env/degenerate either way; 0 = off", label="penalty for a degenerate answer")
    reward_model_coef: float = setting(1.0, "weight of the reward model's (normalised) score in each answer's score; "
                                       "0 = the reward model is ignored and only the other terms (relevance, "
                                       "plausibility) are optimised: an ablation that shows what the reward model "
                                       "adds", label="weight of the reward model")
    imitation_coef: float = setting(0.0, "PPO-ptx (Ouyang et al. 2022): add this times the mean negative "
                                    "log-likelihood of the chosen answers of the reward model's own training pairs "
                                    "(never its held-out or judge pairs) to each step's first update; 0 = off",
                                    label="imitation weight (chosen answers)")
    imitation_batch_size: int = setting(4, "chosen answers imitated each step",
                                        label="chosen answers per update")
    relevance_model: str = setting("", "the sentence encoder relevance is measured with: empty = the preset's "
                                   "(embedded:all-minilm-l6-v2 on cpu, sentence-transformers/all-MiniLM-L6-v2 on "
                                   "a100), a local folder or a hub id", label="relevance encoder")
    # the rollouts: answer lengths and sampling (keep them unshaped)
    output_min_length: int = setting(16, "fewest new tokens (EOS is blocked before)", label="shortest answer, tokens")
    output_max_length: int = setting(48, "most new tokens; each response draws its length in [min, max] (LengthSampler)",
                                     label="longest answer, tokens")
    temperature: float = setting(1.0, "sampling temperature; the same temperature divides the logits for log-probs",
                                 label="sampling temperature")
    top_k: int = setting(0, "top-k of the rollouts; keep 0 (every token can be sampled): otherwise the batch's mean KL "
                            "goes negative, a sign of a mismatch between sampling and scoring (one answer's KL can be "
                            "negative anyway)", label="sample from the top k tokens")
    top_p: float = setting(1.0, "top-p of the rollouts; keep 1.0, for the same reason as top_k",
                           label="sample from the top p of probability")
    # prompts, batching, precision and seed
    max_prompt_length: int = setting(128, "prompt tokens kept (chat template included), cut from the left",
                                     label="prompt tokens kept")
    generation_batch_size: int = setting(0, "0 = the whole batch of prompts at once", label="prompts generated together")
    chat_template: bool = setting(True, "wrap each prompt in the policy's chat template (its default system prompt "
                                        "included); off: the raw text, like the seed's 'Question: … Answer:' prompts",
                                  label="wrap prompts in the chat template")
    bf16: bool = setting(False, "bfloat16 autocast for generation and every forward pass (all alike, so ratios hold); "
                           "ignored where the hardware has no native bf16", label="bfloat16 arithmetic")
    seed: int = setting(0, "seed for prompt order, response lengths, sampling and the PPO shuffles", label="random seed")


# ---------------------------------------------------------------- config


def config_from(preset: Preset, **overrides: Any) -> PPOConfig:
    """The dataclass defaults, then the preset's `ppo` dict, then every override that is given."""
    return build(PPOConfig, preset.ppo, overrides, "PPO")


def config_from_dict(values: dict[str, Any]) -> PPOConfig:
    """The PPOConfig part of a job config (which also holds policy, reward_model, prompts, ...)."""
    return from_job(PPOConfig, values)


def validate(cfg: PPOConfig, limits: Limits | None = None) -> PPOConfig:
    """Check ranges before anything loads; ValueError says which value and what is allowed."""
    for name in ("steps", "batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs",
                 "output_min_length", "output_max_length", "max_prompt_length"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} = {getattr(cfg, name)} must be at least 1")
    backward = cfg.mini_batch_size * cfg.gradient_accumulation_steps
    if cfg.batch_size % backward:
        raise ValueError(
            f"batch_size {cfg.batch_size} is not divisible by mini_batch_size × gradient_accumulation_steps = "
            f"{cfg.mini_batch_size} × {cfg.gradient_accumulation_steps} = {backward}"
        )
    if cfg.output_min_length > cfg.output_max_length:
        raise ValueError(
            f"output_min_length {cfg.output_min_length} is above output_max_length {cfg.output_max_length}"
        )
    if not 0 < cfg.learning_rate < 1:
        raise ValueError(f"learning_rate {cfg.learning_rate} must be between 0 and 1 (the seed uses 1.4e-5)")
    if cfg.temperature <= 0:
        raise ValueError(f"temperature {cfg.temperature} must be above 0")
    if cfg.advantage not in ADVANTAGES:
        raise ValueError(f"advantage '{cfg.advantage}' is not one of {', '.join(ADVANTAGES)}")
    if cfg.samples_per_prompt < 1 or cfg.batch_size % cfg.samples_per_prompt:
        raise ValueError(f"batch_size {cfg.batch_size} must be a multiple of samples_per_prompt "
                         f"{cfg.samples_per_prompt} (the answers of one prompt share a batch)")
    if cfg.advantage != "gae" and cfg.samples_per_prompt < 2:
        raise ValueError(f"advantage '{cfg.advantage}' compares answers to the same prompt: set samples_per_prompt "
                         f"to 2 or more (4 is typical)")
    if cfg.kl_penalty not in KL_PENALTIES:
        raise ValueError(f"kl_penalty '{cfg.kl_penalty}' is not one of {', '.join(KL_PENALTIES)}")
    if cfg.top_k < 0 or not 0 < cfg.top_p <= 1:
        raise ValueError("top_k must be 0 or more and top_p in (0, 1]")
    if cfg.target <= 0 or cfg.horizon <= 0:
        raise ValueError("the KL target and horizon must be above 0")
    if cfg.generation_batch_size < 0 or cfg.max_grad_norm < 0 or cfg.score_clip < 0 or cfg.kl_cap < 0:
        raise ValueError("generation_batch_size, max_grad_norm, score_clip and kl_cap must be 0 (off) or more")
    if cfg.reward_model_coef < 0:
        raise ValueError(f"reward_model_coef {cfg.reward_model_coef} must be 0 or more: a negative weight pays the "
                         f"answers the reward model ranks lowest")
    if cfg.reward_model_coef == 0 and cfg.relevance_coef == 0 and cfg.plausibility_coef == 0:
        raise ValueError("reward_model_coef 0 with relevance_coef 0 and plausibility_coef 0 leaves nothing to "
                         "optimise: give one of them a weight")
    if cfg.relevance_coef < 0:
        raise ValueError(f"relevance_coef {cfg.relevance_coef} must be 0 (off) or more: a negative weight pays "
                         f"answers for being about something else")
    if cfg.degenerate_penalty < 0:
        raise ValueError(f"degenerate_penalty {cfg.degenerate_penalty} must be 0 (off) or more: a negative penalty "
                         f"pays loops and word salad")
    if cfg.imitation_coef < 0 or cfg.imitation_batch_size < 1:
        raise ValueError(f"imitation_coef {cfg.imitation_coef} must be 0 (off) or more and imitation_batch_size "
                         f"{cfg.imitation_batch_size} at least 1")
    if limits is not None:
        limits.check(asdict(cfg))
    return cfg


# ---------------------------------------------------------------- the loop


@dataclass
class PPOState:
    """What carries over between steps."""

    kl_ctl: AdaptiveKLController | FixedKLController | KLCap
    moments: RunningMoments
    generator: torch.Generator
    step: int = 0
    score_mean: float = 0.0  # reward_norm: the starting policy's score mean and std, fixed after the first step
    score_std: float = 1.0
    relevance: RelevanceFn | None = None  # relevance_coef: lab.relevance's scorer, loaded once


def new_state(cfg: PPOConfig) -> PPOState:
    kl_ctl = (
        AdaptiveKLController(cfg.init_kl_coef, cfg.target, cfg.horizon)
        if cfg.adap_kl_ctrl
        else FixedKLController(cfg.init_kl_coef)
    )
    if cfg.kl_cap > 0:
        kl_ctl = KLCap(kl_ctl, cfg.kl_cap)
    return PPOState(kl_ctl, RunningMoments(), torch.Generator().manual_seed(cfg.seed))


def fuses_first_pass(cfg: PPOConfig, batch_size: int) -> bool:
    """Whether step 3 runs step 5's first pass: the first mini-batch of epoch 1's order is forwarded once, with its
    graph, for both its old log-probs and that pass (same weights, same rows, dropout off), so the old log-probs
    cost one forward of the adapted blocks less per step (the cpu preset's one mini-batch of 16: 12.5 -> 10.9 s with
    the shared prompt cache, benchmarks/bench_ppo.py --cpu-preset). The ratio is exactly 1 either way."""
    return cfg.ppo_epochs > 0 and batch_size > 0


def ppo_update(
    model: nn.Module, value_head: ValueHead | None, optimizer: torch.optim.Optimizer, batch: Batch,
    old_logprobs: torch.Tensor, old_values: torch.Tensor | None, advantages: torch.Tensor,
    returns: torch.Tensor | None, cfg: PPOConfig,
    generator: torch.Generator, should_stop: Callable[[], bool] = lambda: False,
    first_pass: tuple[torch.Tensor, torch.Tensor | None] | None = None, first_order: torch.Tensor | None = None,
    imitation: Imitation | None = None,
) -> dict[str, float]:
    """ppo_epochs passes over shuffled mini-batches, accumulating gradients over gradient_accumulation_steps;
    with `imitation`, the step's first update also takes imitation_coef x one mini-batch of chosen answers' nll
    (PPO-ptx; once a step, not every update: one such pass costs ~0.6 s on 2 cores, an update of the cpu preset ~0.8).
    `first_order`: epoch 1's order, drawn by the caller from `generator` (so the stream of orders is the same);
    `first_pass`: (log-probs, values) of that order's first mini-batch, with their graph (ppo_step's step 3): the
    first pass uses them instead of a forward of its own."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats: dict[str, list[torch.Tensor]] = {}
    per_update = cfg.mini_batch_size * cfg.gradient_accumulation_steps
    first = True
    for epoch in range(cfg.ppo_epochs):
        if epoch == 0 and first_order is not None:
            order = first_order
        else:
            order = torch.randperm(len(batch.input_ids), generator=generator)
        for start in range(0, len(order), per_update):
            optimizer.zero_grad(set_to_none=True)
            for micro in order[start : start + per_update].split(cfg.mini_batch_size):
                mb = batch.select(micro)
                if first_pass is not None:  # forwarded in step 3: these rows, these weights, its graph kept
                    (logprobs, vpreds), first_pass = first_pass, None
                else:
                    logprobs, vpreds = forward_policy(model, value_head, mb, cfg.temperature, cfg.bf16)
                pg_loss, pg_stats = policy_loss(logprobs, old_logprobs[micro], advantages[micro], mb.mask,
                                                cfg.cliprange)
                rows = {"ppo/loss/policy": pg_loss.detach(), **{f"ppo/policy/{k}": v for k, v in pg_stats.items()}}
                loss = pg_loss
                if value_head is not None:  # GAE's critic; RLOO / GRPO have none
                    vf_loss, vf_stats = value_loss(vpreds, old_values[micro], returns[micro], mb.mask,
                                                   cfg.cliprange_value)
                    loss = pg_loss + cfg.vf_coef * vf_loss
                    rows.update({"ppo/loss/value": vf_loss.detach(), "ppo/val/clipfrac": vf_stats["clipfrac"],
                                 "ppo/val/vpred": vf_stats["vpred"]})
                rows["ppo/loss/total"] = loss.detach()
                (loss / cfg.gradient_accumulation_steps).backward()
                for key, value in rows.items():
                    stats.setdefault(key, []).append(value)
            if imitation is not None and start == 0 and epoch == 0:  # PPO-ptx: once a step, in its first update
                nll = imitation.loss(model)
                (cfg.imitation_coef * nll).backward()
                stats.setdefault("ppo/loss/imitation", []).append(nll.detach())
            check_gradients(model, first_update=first, signal=bool(advantages[order[start : start + per_update]].any()))
            first = False
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            if should_stop():  # leave mid-epoch: what was learned so far is kept
                break
        if should_stop():
            break
    optimizer.zero_grad(set_to_none=True)
    return {key: torch.stack(values).mean().item() for key, values in stats.items()}


def ppo_step(
    model: nn.Module, value_head: ValueHead, optimizer: torch.optim.Optimizer, tokenizer: Any, prompts: list[str],
    score_fn: ScoreFn, cfg: PPOConfig, state: PPOState, lengths: list[int],
    should_stop: Callable[[], bool] = lambda: False, on_phase: Callable[[str], None] = lambda phase: None,
    imitation: Imitation | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]] | None:
    """One PPO step on a batch of prompts; returns (metrics, sample rows), or None when stopped mid-way. Every change
    to `state` is a line here: the score statistics (step 2) and the KL coefficient and step count (step 6)."""
    device = next(value_head.parameters()).device
    model.eval()  # dropout off in every pass (rollout and training), so the ratio is exactly 1 before an update
    timings: dict[str, float] = {}
    started = time.perf_counter()

    # 1. rollout: sample responses from the LoRA policy
    on_phase(f"generating {len(prompts)} answers")
    query = encode_chat(tokenizer, prompts, device, cfg.max_prompt_length, template=cfg.chat_template)
    batch = generate_responses(model, tokenizer, query, lengths, cfg, should_stop)
    timings["time/rollout"] = time.perf_counter() - started
    if should_stop():
        return None

    # 2. score: decode, then the reward model re-tokenizes query + response with its own tokenizer
    on_phase("scoring the answers with the reward model")
    t = time.perf_counter()
    responses = decode_responses(tokenizer, batch)
    raw_scores, has_eos = score_batch(score_fn, prompts, responses, batch, tokenizer.eos_token_id)
    scores = raw_scores - cfg.missing_eos_penalty * (~has_eos).float()
    if cfg.reward_norm and state.step == 0:  # before any update the policy is the reference: these are its own answers
        state.score_mean, state.score_std = mean_and_std(scores)
    if cfg.reward_norm:
        scores = (scores - state.score_mean) / state.score_std
    if cfg.use_score_scaling:
        state.moments.update(scores)
    scores = process_scores(scores, state.moments, cfg.use_score_scaling, cfg.use_score_norm, cfg.score_clip)
    scores = cfg.reward_model_coef * scores  # 1 (the default) leaves them exactly as they are
    # the text rules only (no nll: the reference's log-probs here are at the sampling temperature, not Compare's)
    degenerate = torch.tensor([diagnostics.degeneration(r, p)["degenerate"] for p, r in zip(prompts, responses)],
                              dtype=scores.dtype, device=scores.device)
    scores = scores - cfg.degenerate_penalty * degenerate
    timings["time/score"] = time.perf_counter() - t

    # 3. forward: old log-probs (and values, with a critic) of the policy, log-probs of the reference (adapters off)
    on_phase("log-probs of the policy and the reference")
    t = time.perf_counter()
    critic = value_head if cfg.advantage == "gae" else None
    # blocks below the lowest LoRA layer run once here, for this pass, the reference and every pass of step 5 alike
    batch = with_trunk(model, batch, cfg)
    # epoch 1's order, drawn here from step 5's generator (the stream of orders is unchanged); old and reference
    # log-probs run in its mini-batches, the first of them with its graph: step 5's first pass (fuses_first_pass)
    order = torch.randperm(len(prompts), generator=state.generator) if cfg.ppo_epochs > 0 else None
    first_pass = None
    if fuses_first_pass(cfg, len(prompts)):
        with torch.enable_grad():
            first_pass = forward_policy(model, critic, batch.select(order[: cfg.mini_batch_size]), cfg.temperature,
                                        cfg.bf16)
    old_logprobs, old_values = batched_forward(model, critic, batch, cfg, order=order, first=first_pass)
    ref_logprobs, _ = batched_forward(model, None, batch, cfg, reference=True, order=order)
    ref_nll = -masked_mean(ref_logprobs, batch.mask.float(), dim=-1)  # (B,) nats a token, as Compare's nll
    if cfg.plausibility_coef:
        scores = scores - cfg.plausibility_coef * ref_nll
    relevance_scores = None
    if cfg.relevance_coef:
        rel = state.relevance(prompts, responses)
        if cfg.relevance_echo_discount:
            rel = [r * (1 - relevance.echo(p, a)) for r, p, a in zip(rel, prompts, responses)]
        relevance_scores = torch.tensor(rel, dtype=scores.dtype, device=scores.device)
        scores = scores + cfg.relevance_coef * relevance_scores

    # 4. advantages (and returns, with a critic) from the scores and the per-token KL
    kl, advantages, returns = estimate_advantages(
        scores, old_logprobs, ref_logprobs, old_values, batch.mask.float(), state.kl_ctl.value, cfg.kl_penalty,
        cfg.advantage, cfg.samples_per_prompt, cfg.gamma, cfg.lam, cfg.whiten_rewards, cfg.whiten_advantages)
    timings["time/forward"] = time.perf_counter() - t
    if should_stop():
        return None

    # 5. optimise: ppo_epochs over shuffled mini-batches, clipped policy and value losses
    on_phase(f"optimising ({cfg.ppo_epochs} passes over the batch)")
    t = time.perf_counter()
    with torch.enable_grad():  # the model stays in eval mode: dropout off (see step 1)
        train_stats = ppo_update(model, critic, optimizer, batch, old_logprobs, old_values, advantages, returns,
                                 cfg, state.generator, should_stop, first_pass, order, imitation)
    timings["time/optimize"] = time.perf_counter() - t

    # 6. adapt the KL coefficient to this batch's KL, then report
    kl_coef = state.kl_ctl.value
    state.kl_ctl.update(kl.sum(-1).mean().item(), len(prompts))
    state.step += 1
    rollout = Rollout(prompts, responses, query, batch, raw_scores, has_eos, old_logprobs, old_values, kl,
                      advantages, returns)
    metrics = {"step": state.step, **step_metrics(rollout, kl_coef), "env/ref_nll": ref_nll.mean().item(),
               "env/degenerate": degenerate.mean().item(),
               **({"env/relevance": relevance_scores.mean().item()} if relevance_scores is not None else {}),
               **train_stats, **timings,
               "time/step": time.perf_counter() - started}
    return metrics, sample_rows(rollout, tokenizer, state.step)


def score_batch(score_fn: ScoreFn, prompts: list[str], responses: list[str], batch: Batch,
                eos_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the reward function's score per response (B,), whether each response ended with EOS (B,))."""
    device = batch.input_ids.device
    raw_scores = torch.tensor(score_fn(list(prompts), responses), dtype=torch.float32, device=device)  # (B,)
    if raw_scores.shape != (len(prompts),) or not torch.isfinite(raw_scores).all():
        raise ValueError(f"the reward function must return one finite number per response, got {raw_scores.tolist()}")
    return raw_scores, ((batch.responses == eos_id) & batch.mask.bool()).any(-1)


def run_ppo(
    model: nn.Module, value_head: ValueHead, tokenizer: Any, prompts: Sequence[str], score_fn: ScoreFn, cfg: PPOConfig,
    on_step: Callable[[dict[str, float], list[dict[str, Any]]], None] = lambda m, s: None,
    should_stop: Callable[[], bool] = lambda: False, on_phase: Callable[[str], None] = lambda phase: None,
    evaluate_at: Callable[[int], Any] = lambda step: None, relevance_fn: RelevanceFn | None = None,
    imitation: Imitation | None = None, labels: dict[str, str | None] | None = None,
) -> list[dict[str, float]]:
    """The PPO loop: cfg.steps steps, each reported to on_step(metrics, samples); stops early when asked.
    `labels`: each prompt's subset label (lab.data.load_prompt_rows), for `relevance_on_harmful` off.
    `evaluate_at(step)` runs before the first step (0) and after each one (lab.evaluate decides when it is due);
    `imitation` (PPO-ptx, with imitation_coef > 0): the chosen answers each update also learns from."""
    if not prompts:
        raise ValueError("the prompt set is empty")
    validate(cfg)
    # decided once, so rollout, old, reference and training log-probs all use the same precision
    cfg = replace(cfg, bf16=cfg.bf16 and models.bf16_native(next(value_head.parameters()).device))
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    k = cfg.samples_per_prompt
    batches = prompt_batches(prompts, cfg.batch_size // k, rng)
    sample_lengths = LengthSampler(cfg.output_min_length, cfg.output_max_length, rng)
    if cfg.imitation_coef > 0 and imitation is None:
        raise ValueError("imitation_coef > 0 needs the chosen answers to imitate (lab.imitation.for_run)")
    if imitation is not None:
        imitation.bf16 = cfg.bf16  # the precision every other pass uses
    if cfg.bf16:  # frozen weights in bf16 once, not cast by autocast on every call; adapters and value head stay fp32
        models.cast_frozen_weights(model, torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(value_head.parameters()) if cfg.advantage == "gae" else []
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    state = new_state(cfg)
    if cfg.relevance_coef:
        state.relevance = relevance_fn or relevance.scorer(cfg.relevance_model or relevance.DEFAULT_MODEL)
        if not cfg.relevance_on_harmful:
            state.relevance = relevance.except_on(state.relevance, harmful_requests(labels or {}))
    history = []
    device = next(value_head.parameters()).device
    with models.attention_implementation(model, DECODE_ATTENTION.get(device.type)):
        evaluate_at(0)
    with models.attention_implementation(model, TRAIN_ATTENTION.get(device.type)):
        for _ in range(cfg.steps):
            if should_stop():
                break
            # the k answers to one prompt sit side by side and share a length limit, so only their content differs
            batch_prompts = [p for p in next(batches) for _ in range(k)]
            lengths = [n for n in sample_lengths(cfg.batch_size // k) for _ in range(k)]
            result = ppo_step(model, value_head, optimizer, tokenizer, batch_prompts, score_fn, cfg, state, lengths,
                              should_stop, on_phase, imitation if cfg.imitation_coef > 0 else None)
            if result is None:
                break
            history.append(result[0])
            on_step(*result)
            if not should_stop():
                with models.attention_implementation(model, DECODE_ATTENTION.get(device.type)):
                    evaluate_at(state.step)
    return history


# ---------------------------------------------------------------- loading, saving, the job


def job_config(cfg: PPOConfig, preset: Preset, reward_model: str, prompts: str, policy: str | None = None) -> dict:
    """What a PPO run stores in config.json: the PPO settings plus policy, reward model, prompts and LoRA."""
    return {**asdict(cfg), "policy": policy or preset.policy, "reward_model": str(reward_model), "prompts": prompts,
            "quantize_4bit": preset.quantize_4bit, "lora": dict(preset.lora), "preset": preset.name}


JOB_KEYS = ("reward_model", "prompts", "policy", "max_prompts")  # what a PPO job takes besides PPOConfig


def prepare(preset: Preset, values: dict[str, Any], allowed_dirs: list[Path] | None = None,
            root: Path | None = None) -> dict[str, Any]:
    """A checked PPO job config from a form's or the command line's values (PPOConfig fields plus JOB_KEYS; None or
    "" = the preset's): settings within the preset's limits, the reward run saved, the prompt source non-empty and
    the policy found, all before any model loads. `root` is where run ids are looked up."""
    extra = {k: values.get(k) for k in JOB_KEYS}
    if not extra["reward_model"]:
        raise ValueError("pick a reward-model run first (train one on the Reward model tab)")
    ppo_values = {k: v for k, v in values.items() if k not in JOB_KEYS and k not in evaluate.field_names()}
    cfg = validate(config_from(preset, **ppo_values), preset.limits)
    reward_model = find_reward_model(str(extra["reward_model"]).strip(), root)
    model_folder(reward_model)  # raises when the run has no saved model
    if cfg.imitation_coef > 0:  # the chosen answers to imitate exist and are usable, before any model loads
        demonstrations(proxy_pairs(Path(reward_model)))
    source = (extra["prompts"] or "").strip() or default_prompts(preset, reward_model, root, allowed_dirs)
    load_prompts(source, limit=cfg.batch_size, allowed_dirs=allowed_dirs)  # fails on an empty set
    policy = (extra["policy"] or "").strip() or preset.policy
    models.check_available(policy)
    if cfg.relevance_coef:
        models.check_available(cfg.relevance_model or preset.relevance)
    config = job_config(cfg, preset, reward_model, source, policy)
    config.update(memory.check_ppo(config))  # refuses, with the numbers, a job that would not fit
    if extra["max_prompts"]:
        config["max_prompts"] = int(extra["max_prompts"])
    config["evaluate"] = evaluate.prepare(preset, values, allowed_dirs)
    return config


OWN_REQUESTS_READ = ("Measured on the hh mix (stop 52's reward models, seeds 4–6, the demo prompts joined with its hh "
                     "file's requests labelled so): hh-rlhf's harmful requests read ahead of base in 3 of 3 seeds, "
                     "258–198 (210–219 without them, Fisher p 0.03), the demo set's held-out prompts 252–202 (242–219 "
                     "without; README, Stop 54)")


JOINED_NOTE = ("the preset's prompts and the requests of the reward model's own pairs, the default where its data holds "
               f"pairs of your own. {OWN_REQUESTS_READ}.")


def own_requests(reward_model: str, prompts: str, root: Path | None = None, allowed_dirs: list[Path] | None = None,
                 files_only: bool = False) -> tuple[list[str], str | None]:
    """The pair sets of the user's own (files, hub ids) that the reward run at `reward_model` trained on and PPO's
    `prompts` leave out, and the prompt source that adds them (`bundled+hh.jsonl.gz`); ([], None) when none is
    left out (or none can be read here). PPO on the demo prompts alone never meets the kind of request those pairs
    judge."""
    return prompts_with_own_requests(prompts, _reward_data(reward_model, root), allowed_dirs, files_only)


def own_parts_named(reward_model: str, prompts: str, root: Path | None = None) -> list[str]:
    """The reward run's own pair sets (files, hub ids) that `prompts` names as parts; [] where it names none or
    cannot be read as sources."""
    split = own_parts_in(prompts, _reward_data(reward_model, root))
    return split[0] if split else []


def _reward_data(reward_model: str, root: Path | None) -> str:
    return str(reward_run_config(reward_model, root).get("data") or "")


def default_prompts(preset: Preset, reward_model: str, root: Path | None = None,
                    allowed_dirs: list[Path] | None = None) -> str:
    """PPO's prompts when none are given: the preset's, joined with the reward run's own pair files' requests where
    the preset says so (`own_requests_in_ppo`, the cpu preset) and the files are still there to read: PPO then meets
    the requests its reward model learned to judge (the hh mix: hh-rlhf's harmful requests 258–198 with them, 210–219
    without; README, Stop 54). Hub ids are offered (the PPO tab's button), not joined unasked."""
    if not preset.own_requests_in_ppo:
        return preset.ppo_prompts
    return own_requests(reward_model, preset.ppo_prompts, root, allowed_dirs, files_only=True)[1] or preset.ppo_prompts


def own_requests_label_note(suggestion: str) -> str:
    """Why the offered prompt source labels a part, or how to label one (`own_requests`)."""
    if f"={DECLINE_PART_LABEL}" in suggestion:
        return (f"'={DECLINE_PART_LABEL}' labels them as requests to decline (the reward data balances them with the "
                "demo set's helpful pairs, the mix the lab offers for a one-sided set), so PPO leaves relevance out "
                "on them.")
    return (f"If they are requests to decline and their rows carry no `subset`, append '={DECLINE_PART_LABEL}' so PPO "
            "leaves relevance out on them.")


def own_requests_note(missing: list[str], suggestion: str) -> str:
    """What the CLI prints when PPO's prompts leave out the reward run's own pair sets (`own_requests`)."""
    return (f"the reward model learned from pairs in {', '.join(missing)}, whose requests the prompts leave out: PPO "
            f"never meets the kind of request those pairs judge. --prompts '{suggestion}' adds them. "
            f"{own_requests_label_note(suggestion)} {OWN_REQUESTS_READ}.")


def harmful_requests(labels: dict[str, str | None]) -> frozenset[str]:
    """The prompts labelled as requests to decline (lab.data.expects_decline), where relevance pays for complying."""
    return frozenset(p for p, label in labels.items() if expects_decline(label))


def train_ppo(ctx: JobContext, score_fn: ScoreFn | None = None) -> dict[str, Any]:
    """The PPO job: load policy, reward model and prompts, run the loop, save adapters and value head."""
    cfg = validate(config_from_dict(ctx.config))
    ctx.set_progress(0, "loading prompts")
    # never more prompts than the run can use: big hub sets are read only that far
    limit = ctx.config.get("max_prompts") or cfg.steps * cfg.batch_size
    rows = load_prompt_rows(ctx.config.get("prompts", "bundled"), limit=limit, labels=True)
    prompts, labels = [p for p, _ in rows], dict(rows)
    if score_fn is None:
        ctx.set_progress(0, "loading the reward model")
        score_fn = reward_score_fn(ctx.config["reward_model"])
    ctx.set_progress(0, "loading the policy")
    torch.manual_seed(cfg.seed)
    model, tokenizer = load_trainable_policy(ctx.config["policy"], ctx.config.get("quantize_4bit", False),
                                             ctx.config.get("lora", {}))
    if ctx.config.get("gradient_checkpointing"):  # set by prepare when the memory estimate needs it (lab.memory)
        models.enable_checkpointing(model)
    value_head = new_value_head(model)

    def on_step(metrics: dict[str, float], samples: list[dict[str, Any]]) -> None:
        ctx.log(metrics)
        ctx.log_samples(samples)
        ctx.set_progress(metrics["step"] / cfg.steps, f"step {metrics['step']}/{cfg.steps}, "
                                                      f"reward {metrics['env/reward_mean']:.3f}")

    def on_phase(phase: str) -> None:  # what the current step is doing, for the banner
        ctx.set_progress(ctx.progress, f"step {round(ctx.progress * cfg.steps) + 1}/{cfg.steps}: {phase}")

    evaluator = evaluate.evaluator_for_job(ctx, model, tokenizer, score_fn, cfg.steps)
    relevance_fn = None
    if cfg.relevance_coef:
        ctx.set_progress(0, "loading the relevance encoder")
        preset = get_preset(ctx.config.get("preset") or None)
        relevance_fn = relevance.scorer(cfg.relevance_model or preset.relevance)
    imitation = None
    if cfg.imitation_coef > 0:
        ctx.set_progress(0, "reading the chosen answers to imitate")
        imitation = for_run(Path(ctx.config["reward_model"]), tokenizer, cfg.imitation_batch_size,
                            cfg.max_prompt_length, cfg.bf16, cfg.seed)
    history = run_ppo(model, value_head, tokenizer, prompts, score_fn, cfg, on_step, lambda: ctx.stopping, on_phase,
                      evaluator or (lambda step: None), relevance_fn, imitation, labels)
    ctx.set_progress(len(history) / cfg.steps, "saving the adapters")
    save_policy(model, value_head, tokenizer, ctx.run.model_dir)
    ctx.set_progress(len(history) / cfg.steps, f"{'stopped' if ctx.stopping else 'done'} after {len(history)} steps")
    out = {**summarize(history), "advantage": cfg.advantage, "samples_per_prompt": cfg.samples_per_prompt}
    if cfg.relevance_coef and not cfg.relevance_on_harmful:  # how many requests went without it: 0 = the source
        out["relevance_left_out"] = [len(harmful_requests(labels)), len(prompts)]  # labels none, so all had it
    if evaluator is not None and evaluator.rows:
        out.update(evaluate.summary_keys(evaluator.rows))
    return out
