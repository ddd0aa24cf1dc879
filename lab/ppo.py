"""PPO for RLHF on torch + transformers + peft (TRL 1.x has none): small pure functions, then one loop.

The loop follows TRL 0.x's `PPOTrainer` (the seed) with the fixes from "The N Implementation Details of RLHF
with PPO" (Huang et al. 2024, https://iclr-blogposts.github.io/2024/blog/the-n-implementation-details-of-rlhf-with-ppo/):
the reference model is the policy with its LoRA adapters disabled, log-probs are recomputed with the sampling
temperature, rollouts sample with top_k=0 and top_p=1, everything after EOS is masked, dropout is off (the model
stays in eval mode), and every forward pass uses the same shapes and precision, so the PPO ratio is exactly 1 and
the KL exactly 0 before the first update.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from lab import memory, models, stats
from lab.config import build, from_job, setting
from lab.generate import encode_chat
from lab.jobs import JobContext
from lab.presets import Limits, Preset

KIND = "ppo"
VALUE_HEAD_FILE = "value_head.safetensors"
KL_PENALTIES = ("kl", "abs", "mse", "k3")
ADVANTAGES = ("gae", "rloo", "grpo")  # GAE with a value head (PPO), or critic-free baselines from k samples a prompt
WINDOW = 5  # steps averaged for the summary's reward_first / reward_last

# Sample from the policy itself: a model's generation_config (repetition penalty, typical-p, ...) must not reshape
# the distribution, or the rollouts stop being on-policy and the KL estimate is biased.
UNSHAPED_SAMPLING = {"do_sample": True, "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "typical_p": 1.0,
                     "min_p": 0.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}

# Attention implementation per device type for the training passes and for decoding (absent: the model's own).
TRAIN_ATTENTION = {"cpu": "eager"}
DECODE_ATTENTION = {"cpu": "sdpa"}

ScoreFn = Callable[[list[str], list[str]], list[float]]


@dataclass
class PPOConfig:
    """PPO settings; names and defaults follow the seed (TRL 0.x `PPOConfig`), presets pick sizes per machine."""

    steps: int = setting(100, "PPO steps; each samples one batch of rollouts")
    learning_rate: float = setting(1.4e-5, "Adam learning rate for the LoRA adapters and the value head")
    batch_size: int = setting(16, "rollouts per PPO step")
    mini_batch_size: int = setting(4, "rollouts per forward/backward pass")
    gradient_accumulation_steps: int = setting(1, "mini-batches per optimiser update")
    ppo_epochs: int = setting(4, "optimisation passes over each batch of rollouts")
    init_kl_coef: float = setting(0.2, "initial weight of the per-token KL penalty")
    adap_kl_ctrl: bool = setting(True, "adapt the KL coefficient towards `target` (Ziegler et al. 2019)")
    target: float = setting(6.0, "target KL (nats per response) of the adaptive controller")
    horizon: float = setting(10000.0, "horizon of the adaptive KL controller, in rollouts")
    kl_penalty: str = setting("kl", "per-token KL estimator: kl (k1 = logp - logp_ref), abs, mse or k3")
    cliprange: float = setting(0.2, "PPO clip range of the probability ratio")
    cliprange_value: float = setting(0.2, "clip range of the value update")
    vf_coef: float = setting(0.1, "weight of the value loss")
    gamma: float = setting(1.0, "discount factor")
    lam: float = setting(0.95, "GAE lambda")
    advantage: str = setting("gae", "advantage estimator: gae (PPO's value head + GAE), rloo (leave-one-out baseline over "
                               "samples_per_prompt answers, Ahmadian et al. 2024) or grpo (group-normalised rewards)")
    samples_per_prompt: int = setting(1, "answers sampled per prompt in one batch (k); rloo and grpo need at least 2")
    whiten_advantages: bool = setting(True, "scale advantages to unit std over the batch (GAE: also zero mean)")
    max_grad_norm: float = setting(1.0, "clip the gradient norm to this; 0 = no clipping")
    whiten_rewards: bool = setting(False, "whiten the per-token rewards before GAE")
    use_score_scaling: bool = setting(False, "divide scores by their running std")
    use_score_norm: bool = setting(False, "with score scaling: also subtract the running mean")
    score_clip: float = setting(0.0, "clip scores to ±this after scaling; 0 = off")
    reward_norm: bool = setting(False, "normalise the reward model's scores to mean 0, std 1 on the starting policy's own "
                                  "answers (the first step's, when policy = reference), so the KL weight means the same "
                                  "for any reward model (N implementation details, RM #3)")
    missing_eos_penalty: float = setting(0.0, "subtract this from the score of a response that never ends (no EOS)")
    output_min_length: int = setting(16, "fewest new tokens per response (EOS is blocked before)")
    output_max_length: int = setting(48, "most new tokens; each response draws its length in [min, max] (LengthSampler)")
    temperature: float = setting(1.0, "sampling temperature; the same temperature divides the logits for log-probs")
    top_k: int = setting(0, "top-k of the rollouts; keep 0 (all tokens) or the KL estimate goes negative")
    top_p: float = setting(1.0, "top-p of the rollouts; keep 1.0 for the same reason")
    max_prompt_length: int = setting(128, "prompt tokens kept (chat template included), cut from the left")
    generation_batch_size: int = setting(0, "prompts generated together; 0 = the whole batch at once")
    chat_template: bool = setting(True, "wrap each prompt in the policy's chat template (its default system prompt "
                                        "included); off: the raw text, like the seed's 'Question: … Answer:' prompts")
    bf16: bool = setting(False, "bfloat16 autocast for generation and every forward pass (all alike, so ratios hold); "
                           "ignored where the hardware has no native bf16")
    seed: int = setting(0, "seed for prompt order, response lengths, sampling and the PPO shuffles")


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
    if cfg.generation_batch_size < 0 or cfg.max_grad_norm < 0 or cfg.score_clip < 0:
        raise ValueError("generation_batch_size, max_grad_norm and score_clip must be 0 (off) or more")
    if limits is not None:
        limits.check(asdict(cfg))
    return cfg


# ---------------------------------------------------------------- the maths (pure functions)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over the positions where mask is 1."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of x over the masked positions (Bessel-corrected like TRL's)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """Zero mean, unit variance over the masked positions; masked-out positions come back as 0."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each token under logits / temperature, in float32."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)  # (B, T, V)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: str = "kl") -> torch.Tensor:
    """Per-token KL estimate on the sampled tokens (http://joschu.net/blog/kl-approx.html)."""
    log_ratio = logprobs - ref_logprobs  # (B, T)
    if kind == "kl":
        return log_ratio
    if kind == "abs":
        return log_ratio.abs()
    if kind == "mse":
        return 0.5 * log_ratio.square()
    if kind == "k3":
        return torch.expm1(-log_ratio) + log_ratio  # unbiased and never negative
    raise ValueError(f"unknown kl_penalty '{kind}' (choose from {', '.join(KL_PENALTIES)})")


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last 1 in each row of a right-padded mask (0 for an empty row)."""
    return (mask.sum(-1).long() - 1).clamp(min=0)  # (B,)


def compute_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor,
    kl_coef: float, kind: str = "kl",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef × KL everywhere, plus the score on the last real token. Returns (rewards, kl)."""
    kl = kl_penalty(logprobs, ref_logprobs, kind) * mask  # (B, T)
    rewards = -kl_coef * kl
    rows = torch.arange(len(scores), device=scores.device)
    rewards[rows, last_token_index(mask)] += scores.to(rewards.dtype)
    return rewards * mask, kl


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over right-padded responses; returns (advantages, returns), both (B, T)."""
    values, rewards = values * mask, rewards * mask  # past the last token: no reward, no bootstrap value
    last_gae = torch.zeros_like(rewards[:, 0])
    advantages = torch.zeros_like(rewards)
    for t in reversed(range(rewards.shape[1])):
        next_value = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last_gae)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last_gae = delta + gamma * lam * last_gae
        advantages[:, t] = last_gae
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def rloo_advantages(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out (Ahmadian et al. 2024, arXiv:2402.14740, eq. 5): each answer's reward minus the mean
    reward of the other k-1 answers to the same prompt. rewards (B,) hold k consecutive answers per prompt."""
    grouped = rewards.view(-1, k)  # (B/k, k)
    baseline = (grouped.sum(-1, keepdim=True) - grouped) / (k - 1)
    return (grouped - baseline).reshape(-1)  # (B,)


def group_normalized_advantages(rewards: torch.Tensor, k: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO's outcome advantage (Shao et al. 2024, arXiv:2402.03300, sec. 4.1.2): (r - group mean) / group std."""
    grouped = rewards.view(-1, k)  # (B/k, k)
    return ((grouped - grouped.mean(-1, keepdim=True)) / (grouped.std(-1, keepdim=True) + eps)).reshape(-1)


def sequence_advantages(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float, kind: str, k: int
) -> torch.Tensor:
    """Critic-free advantages (B, T): the whole answer's reward (score - kl_coef x summed KL, the KL inside the reward
    as in RLOO) against the other answers to its prompt, the same value on every token of the answer."""
    rewards = scores - kl_coef * (kl * mask).sum(-1)  # (B,)
    per_answer = rloo_advantages(rewards, k) if kind == "rloo" else group_normalized_advantages(rewards, k)
    return per_answer[:, None] * mask  # (B, T)


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
    cliprange: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate (Schulman et al. 2017, eq. 7) with clip fraction and approximate KL."""
    log_ratio = logprobs - old_logprobs  # (B, T)
    ratio = torch.exp(log_ratio)
    losses = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.max(losses, clipped), mask)
    stats = {
        "clipfrac": masked_mean((clipped > losses).float(), mask),
        "approxkl": 0.5 * masked_mean(log_ratio.square(), mask),  # the seed's estimator
        "policykl": masked_mean(-log_ratio, mask),
        "ratio": masked_mean(ratio, mask),
    }
    return loss, {k: v.detach() for k, v in stats.items()}


def value_loss(
    vpreds: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
    cliprange_value: float = 0.2,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: the worse of the plain and the clipped squared error, halved."""
    vclipped = old_values + torch.clamp(vpreds - old_values, -cliprange_value, cliprange_value)
    losses, clipped = (vpreds - returns).square(), (vclipped - returns).square()
    loss = 0.5 * masked_mean(torch.max(losses, clipped), mask)
    stats = {"clipfrac": masked_mean((clipped > losses).float(), mask), "vpred": masked_mean(vpreds, mask)}
    return loss, {k: v.detach() for k, v in stats.items()}


def response_mask(responses: torch.Tensor, lengths: Sequence[int], eos_id: int) -> torch.Tensor:
    """1 on each response's tokens up to its sampled length, EOS included, 0 after (B, T)."""
    positions = torch.arange(responses.shape[1], device=responses.device)
    mask = positions[None, :] < torch.as_tensor(list(lengths), device=responses.device)[:, None]
    is_eos = (responses == eos_id) & mask
    # a token is kept when no EOS came strictly before it
    eos_before = torch.cumsum(is_eos.long(), dim=1) - is_eos.long()
    return (mask & (eos_before == 0)).long()


class AdaptiveKLController:
    """Ziegler et al. 2019 (arXiv:1909.08593, sec. 2.2): move the KL coefficient so the KL approaches the target."""

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        self.value, self.target, self.horizon = init_kl_coef, target, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon


class FixedKLController:
    """A constant KL coefficient."""

    def __init__(self, kl_coef: float) -> None:
        self.value = kl_coef

    def update(self, current_kl: float, n_steps: int) -> None:
        pass


class RunningMoments:
    """Running mean and std of scores for score scaling (Chan et al. parallel update, as in TRL)."""

    def __init__(self) -> None:
        self.mean, self.var, self.count = 0.0, 1.0, 1e-24

    def update(self, xs: torch.Tensor) -> None:
        xs = xs.double()
        n, mean, var = xs.numel(), xs.mean().item(), xs.var(unbiased=False).item()
        delta, total = mean - self.mean, self.count + n
        m2 = self.var * self.count + var * n + delta**2 * self.count * n / total
        self.mean, self.var, self.count = self.mean + delta * n / total, m2 / total, total

    @property
    def std(self) -> float:
        return math.sqrt(self.var * self.count / max(self.count - 1, 1))


def process_scores(scores: torch.Tensor, cfg: PPOConfig, moments: RunningMoments) -> torch.Tensor:
    """Optional score scaling / normalisation with running moments, then clipping (the seed's options)."""
    if cfg.use_score_scaling:
        moments.update(scores)
        scale = moments.std + 1e-8
        scores = (scores - moments.mean) / scale if cfg.use_score_norm else scores / scale
    if cfg.score_clip > 0:
        scores = scores.clamp(-cfg.score_clip, cfg.score_clip)
    return scores


# ---------------------------------------------------------------- the model: policy + value head


class ValueHead(nn.Module):
    """A scalar value per position from the policy's last hidden state, initialised at zero."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)  # values start at 0: no early noise in the advantages
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


@dataclass
class Batch:
    """One batch of rollouts as tensors: left-padded queries followed by right-padded responses."""

    input_ids: torch.Tensor  # (B, Q + R)
    attention_mask: torch.Tensor  # (B, Q + R)
    mask: torch.Tensor  # (B, R): 1 on real response tokens (EOS included)

    @property
    def response_length(self) -> int:
        return self.mask.shape[1]

    @property
    def responses(self) -> torch.Tensor:
        return self.input_ids[:, -self.response_length :]  # (B, R)

    def select(self, idx: torch.Tensor) -> Batch:
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.mask[idx])


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on the model's device when asked (CPUs with AVX512-BF16 run it ~2x faster)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def forward_policy(
    model: nn.Module, value_head: ValueHead | None, batch: Batch, temperature: float, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens (B, R) and, with a value head, the value before each of them (B, R)."""
    r = batch.response_length
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)  # left padding: count real tokens only
    with autocast(batch.input_ids.device, bf16):
        out = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids,
            logits_to_keep=r + 1,  # the lm_head only for positions that predict a response token
            output_hidden_states=value_head is not None, use_cache=False,
        )
    logprobs = logprobs_from_logits(out.logits[:, :-1], batch.responses, temperature)  # (B, R)
    if value_head is None:
        return logprobs, None
    hidden = out.hidden_states[-1][:, -r - 1 : -1]  # (B, R, H): the states whose logits predict each token
    return logprobs, value_head(hidden.float())


@torch.no_grad()
def batched_forward(
    model: nn.Module, value_head: ValueHead | None, batch: Batch, cfg: PPOConfig, reference: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """forward_policy in chunks of mini_batch_size (the training shapes, so old and new log-probs agree exactly)."""
    head = None if reference else value_head
    logprobs, values = [], []
    with model.disable_adapter() if reference else contextlib.nullcontext():
        for idx in torch.arange(len(batch.input_ids)).split(cfg.mini_batch_size):
            lp, v = forward_policy(model, head, batch.select(idx), cfg.temperature, cfg.bf16)
            logprobs.append(lp)
            values.append(v)
    return torch.cat(logprobs), None if head is None else torch.cat(values)


# ---------------------------------------------------------------- rollouts


class LengthSampler:
    """Response lengths drawn uniformly from [min, max], both included (TRL's excluded the max)."""

    def __init__(self, min_value: int, max_value: int, rng: random.Random) -> None:
        self.min_value, self.max_value, self.rng = min_value, max_value, rng

    def __call__(self, n: int) -> list[int]:
        return [self.rng.randint(self.min_value, self.max_value) for _ in range(n)]


def prompt_batches(prompts: Sequence[str], batch_size: int, rng: random.Random) -> Iterator[list[str]]:
    """Endless batches of prompts, reshuffled every pass (a prompt set smaller than a batch repeats)."""
    order: list[str] = []
    while True:
        while len(order) < batch_size:
            more = list(prompts)
            rng.shuffle(more)
            order += more
        yield order[:batch_size]
        order = order[batch_size:]


class _StopCriterion:
    """Ends generation early when the job is asked to stop (a transformers StoppingCriteria)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate_responses(
    model: nn.Module, tokenizer: Any, query: dict, lengths: list[int], cfg: PPOConfig,
    should_stop: Callable[[], bool] = lambda: False,
) -> Batch:
    """Sample responses with a KV cache (top_k=0, top_p=1), cut each at its drawn length or its EOS."""
    from transformers import StoppingCriteriaList

    chunk = cfg.generation_batch_size or len(lengths)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stop = StoppingCriteriaList([_StopCriterion(should_stop)])
    pieces = []
    for start in range(0, len(lengths), chunk):
        part = {k: v[start : start + chunk] for k, v in query.items()}
        device = part["input_ids"].device
        # CPU: sdpa decodes faster, eager trains faster (benchmarks/bench_ppo.py); rollout log-probs are never used,
        # every log-prob PPO compares comes from the training passes, so the switch keeps the ratio exact
        with autocast(device, cfg.bf16), models.attention_implementation(model, DECODE_ATTENTION.get(device.type)):
            out = model.generate(
                **part, **UNSHAPED_SAMPLING, top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature,
                max_new_tokens=max(lengths[start : start + chunk]), min_new_tokens=cfg.output_min_length,
                eos_token_id=eos, pad_token_id=pad, stopping_criteria=stop,
            )
        pieces.append(out[:, part["input_ids"].shape[1] :])
    width = max(p.shape[1] for p in pieces)
    responses = torch.cat([nn.functional.pad(p, (0, width - p.shape[1]), value=pad) for p in pieces])  # (B, R)
    mask = response_mask(responses, lengths, eos)
    width = max(int(mask.sum(-1).max()), 1)  # drop columns that are padding in every row
    responses, mask = responses[:, :width], mask[:, :width]
    responses = torch.where(mask.bool(), responses, torch.full_like(responses, pad))
    return Batch(
        input_ids=torch.cat([query["input_ids"], responses], dim=1),
        attention_mask=torch.cat([query["attention_mask"], mask.to(query["attention_mask"].dtype)], dim=1),
        mask=mask,
    )


MAX_SPAN = 8  # tokens: a span that still decodes to U+FFFD after this many is cut anyway (bytes that never form text)


def decode_spans(tokenizer: Any, ids: list[int]) -> list[tuple[str, int]]:
    """(text, tokens) spans of one response for per-token views: a token whose bytes are only part of a character
    (an emoji is often 2-4 byte-level tokens) decodes alone to U+FFFD, so tokens are grouped until the group's
    text is whole. Most spans are one token."""
    spans: list[tuple[str, int]] = []
    start = 0
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[start:end])
        if "\ufffd" in text and end < len(ids) and end - start < MAX_SPAN:
            continue
        spans.append((text, end - start))
        start = end
    return spans


def response_tokens(tokenizer: Any, batch: Batch) -> list[list[tuple[str, int]]]:
    """Each response's real tokens as decoded spans (whole characters; see decode_spans), for per-token KL views."""
    return [decode_spans(tokenizer, row[m.bool()].tolist()) for row, m in zip(batch.responses, batch.mask)]


def decode_responses(tokenizer: Any, batch: Batch) -> list[str]:
    """Response texts without special tokens (EOS and padding dropped)."""
    return [
        tokenizer.decode(row[m.bool()], skip_special_tokens=True) for row, m in zip(batch.responses, batch.mask)
    ]


# ---------------------------------------------------------------- the loop


@dataclass
class PPOState:
    """What carries over between steps."""

    kl_ctl: AdaptiveKLController | FixedKLController
    moments: RunningMoments
    generator: torch.Generator
    step: int = 0
    score_mean: float = 0.0  # reward_norm: the starting policy's score mean and std, fixed after the first step
    score_std: float = 1.0


def new_state(cfg: PPOConfig) -> PPOState:
    kl_ctl = (
        AdaptiveKLController(cfg.init_kl_coef, cfg.target, cfg.horizon)
        if cfg.adap_kl_ctrl
        else FixedKLController(cfg.init_kl_coef)
    )
    return PPOState(kl_ctl, RunningMoments(), torch.Generator().manual_seed(cfg.seed))


def check_gradients(model: nn.Module, first_update: bool, signal: bool) -> None:
    """Refuse to go on when no trainable parameter of the policy received a gradient in an update: the update would
    change nothing, silently (bitsandbytes' CPU inference layout has no backward, see models.keep_4bit_trainable).
    All-zero gradients count as none only in a step's first update with non-zero advantages, where the ratio is 1
    and nothing is clipped; later a clipped ratio legitimately gives zero gradients."""
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    if not grads:
        return
    missing = all(g is None for g in grads)
    zero = first_update and signal and all(g is None or not g.any() for g in grads)
    if missing or zero:
        raise RuntimeError(
            f"no trainable parameter of the policy received a gradient in this PPO update ({len(grads)} trainable "
            "tensors, all " + ("without a gradient" if missing else "with zero gradient") + "): the policy cannot "
            "learn. A 4-bit model's layers may be in a no-backward layout (models.keep_4bit_trainable), or the "
            "adapters are not on the path from input to log-probs"
        )


def ppo_update(
    model: nn.Module, value_head: ValueHead | None, optimizer: torch.optim.Optimizer, batch: Batch,
    old_logprobs: torch.Tensor, old_values: torch.Tensor | None, advantages: torch.Tensor,
    returns: torch.Tensor | None, cfg: PPOConfig,
    generator: torch.Generator, should_stop: Callable[[], bool] = lambda: False,
) -> dict[str, float]:
    """ppo_epochs passes over shuffled mini-batches, accumulating gradients over gradient_accumulation_steps."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    stats: dict[str, list[torch.Tensor]] = {}
    per_update = cfg.mini_batch_size * cfg.gradient_accumulation_steps
    first = True
    for _ in range(cfg.ppo_epochs):
        order = torch.randperm(len(batch.input_ids), generator=generator)
        for start in range(0, len(order), per_update):
            optimizer.zero_grad(set_to_none=True)
            for micro in order[start : start + per_update].split(cfg.mini_batch_size):
                mb = batch.select(micro)
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
) -> tuple[dict[str, float], list[dict[str, Any]]] | None:
    """One PPO step on a batch of prompts; returns (metrics, sample rows), or None when stopped mid-way."""
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
    raw_scores = torch.tensor(score_fn(list(prompts), responses), dtype=torch.float32, device=device)  # (B,)
    if raw_scores.shape != (len(prompts),) or not torch.isfinite(raw_scores).all():
        raise ValueError(f"the reward function must return one finite number per response, got {raw_scores.tolist()}")
    has_eos = ((batch.responses == tokenizer.eos_token_id) & batch.mask.bool()).any(-1)
    scores = raw_scores - cfg.missing_eos_penalty * (~has_eos).float()
    if cfg.reward_norm:
        if state.step == 0:  # before any update the policy is the reference: these are its own answers
            state.score_mean = scores.mean().item()
            state.score_std = scores.std().item() if len(scores) > 1 and scores.std() > 1e-6 else 1.0
        scores = (scores - state.score_mean) / state.score_std
    scores = process_scores(scores, cfg, state.moments)
    timings["time/score"] = time.perf_counter() - t

    # 3. forward: old log-probs (and values, with a critic) of the policy, log-probs of the reference (adapters off)
    on_phase("log-probs of the policy and the reference")
    t = time.perf_counter()
    critic = value_head if cfg.advantage == "gae" else None
    old_logprobs, old_values = batched_forward(model, critic, batch, cfg)
    ref_logprobs, _ = batched_forward(model, None, batch, cfg, reference=True)
    mask = batch.mask.float()

    # 4. advantages. GAE: per-token KL penalty, score on the last real token, GAE over the value head's estimates.
    #    RLOO / GRPO: the answer's score minus its summed KL, against the other answers to the same prompt.
    rewards, kl = compute_rewards(scores, old_logprobs, ref_logprobs, mask, state.kl_ctl.value, cfg.kl_penalty)
    if critic is not None:
        if cfg.whiten_rewards:
            rewards = masked_whiten(rewards, mask, shift_mean=False)
        advantages, returns = compute_gae(rewards, old_values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = masked_whiten(advantages, mask)
    else:
        advantages = sequence_advantages(scores, kl, mask, state.kl_ctl.value, cfg.advantage, cfg.samples_per_prompt)
        if cfg.whiten_advantages:  # zero mean already (leave-one-out / group mean): scale only
            advantages = masked_whiten(advantages, mask, shift_mean=False)
        returns = None
    timings["time/forward"] = time.perf_counter() - t
    if should_stop():
        return None

    # 5. optimise: ppo_epochs over shuffled mini-batches, clipped policy and value losses
    on_phase(f"optimising ({cfg.ppo_epochs} passes over the batch)")
    t = time.perf_counter()
    with torch.enable_grad():  # the model stays in eval mode: dropout off (see step 1)
        train_stats = ppo_update(model, critic, optimizer, batch, old_logprobs, old_values, advantages, returns,
                                 cfg, state.generator, should_stop)
    timings["time/optimize"] = time.perf_counter() - t

    # 6. adapt the KL coefficient to this batch's KL, then report
    seq_kl = kl.sum(-1)  # (B,)
    kl_coef = state.kl_ctl.value
    state.kl_ctl.update(seq_kl.mean().item(), len(prompts))
    state.step += 1
    lengths_now = batch.mask.sum(-1).float()
    metrics = {
        "step": state.step,
        "env/reward_mean": raw_scores.mean().item(),
        "env/reward_std": raw_scores.std().item() if len(raw_scores) > 1 else 0.0,
        "objective/kl": seq_kl.mean().item(),
        "objective/kl_coef": kl_coef,
        "objective/entropy": (-old_logprobs * mask).sum(-1).mean().item(),  # the seed's estimate: -log p summed
        # per token, so shorter answers alone do not lower it: mean −log p of the sampled tokens
        "objective/entropy_per_token": ((-old_logprobs * mask).sum() / mask.sum().clamp(min=1)).item(),
        "objective/non_score_reward": (-kl_coef * kl).sum(-1).mean().item(),
        "env/reward_length_corr": stats.pearson(raw_scores.tolist(), lengths_now.tolist()) or 0.0,
        "ppo/advantages/mean": masked_mean(advantages, mask).item(),
        **train_stats,
        **({} if critic is None else {
            "ppo/returns/mean": masked_mean(returns, mask).item(),
            "ppo/val/error": masked_mean((old_values - returns).square(), mask).item()}),
        "tokens/response_len_mean": lengths_now.mean().item(),
        "tokens/query_len_mean": query["attention_mask"].sum(-1).float().mean().item(),
        "tokens/eos_frac": has_eos.float().mean().item(),
        **timings,
        "time/step": time.perf_counter() - started,
    }
    samples = [  # tokens: decoded spans (whole characters), span_len: tokens per span, token_kl: per token
        {"step": state.step, "prompt": p, "response": r, "reward": round(s, 5), "kl": round(k, 5), "length": n,
         "tokens": [t for t, _ in spans], "span_len": [c for _, c in spans], "token_kl": [round(x, 4) for x in row[:n]]}
        for p, r, s, k, spans, row, n in zip(prompts, responses, raw_scores.tolist(), seq_kl.tolist(),
                                             response_tokens(tokenizer, batch), kl.tolist(),
                                             batch.mask.sum(-1).long().tolist())
    ]
    return metrics, samples


def run_ppo(
    model: nn.Module, value_head: ValueHead, tokenizer: Any, prompts: Sequence[str], score_fn: ScoreFn, cfg: PPOConfig,
    on_step: Callable[[dict[str, float], list[dict[str, Any]]], None] = lambda m, s: None,
    should_stop: Callable[[], bool] = lambda: False, on_phase: Callable[[str], None] = lambda phase: None,
) -> list[dict[str, float]]:
    """The PPO loop: cfg.steps steps, each reported to on_step(metrics, samples); stops early when asked."""
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
    if cfg.bf16:  # frozen weights in bf16 once, not cast by autocast on every call; adapters and value head stay fp32
        models.cast_frozen_weights(model, torch.bfloat16)
    params = [p for p in model.parameters() if p.requires_grad]
    params += list(value_head.parameters()) if cfg.advantage == "gae" else []
    optimizer = torch.optim.Adam(params, lr=cfg.learning_rate)
    state = new_state(cfg)
    history = []
    device = next(value_head.parameters()).device
    with models.attention_implementation(model, TRAIN_ATTENTION.get(device.type)):
        for _ in range(cfg.steps):
            if should_stop():
                break
            # the k answers to one prompt sit side by side and share a length limit, so only their content differs
            batch_prompts = [p for p in next(batches) for _ in range(k)]
            lengths = [n for n in sample_lengths(cfg.batch_size // k) for _ in range(k)]
            result = ppo_step(model, value_head, optimizer, tokenizer, batch_prompts, score_fn, cfg, state, lengths,
                              should_stop, on_phase)
            if result is None:
                break
            history.append(result[0])
            on_step(*result)
    return history


def summary_window(steps: int) -> int:
    """Steps averaged at each end: WINDOW, or a third of a short run (so first and last never share a step); 0 for
    a single step, which has nothing to compare."""
    return min(WINDOW, max(steps // 3, 1)) if steps >= 2 else 0


def summarize(history: list[dict[str, float]]) -> dict[str, Any]:
    """steps, reward_first / reward_last (mean reward over the first / last `window` steps, never overlapping) with
    the standard error of their difference (from the spread of those steps' rewards), kl_last, seconds_per_step."""
    history = [r for r in history if isinstance(r.get("env/reward_mean"), (int, float))]
    window = summary_window(len(history))
    if not window:
        return {"steps": len(history), "window": 0, "reward_first": None, "reward_last": None,
                "reward_rise_se": None, "kl_last": history[-1]["objective/kl"] if history else None,
                "seconds_per_step": history[-1].get("time/step") if history else None}
    first = [r["env/reward_mean"] for r in history[:window]]
    last = [r["env/reward_mean"] for r in history[-window:]]
    timed = [r["time/step"] for r in history if isinstance(r.get("time/step"), (int, float))]

    def var_of_mean(xs: list[float]) -> float:
        return statistics.variance(xs) / len(xs) if len(xs) > 1 else 0.0

    return {
        "steps": len(history),
        "window": window,
        "reward_first": round(statistics.fmean(first), 5),
        "reward_last": round(statistics.fmean(last), 5),
        "reward_rise_se": round(math.sqrt(var_of_mean(first) + var_of_mean(last)), 5),
        "kl_last": round(history[-1]["objective/kl"], 5),
        "seconds_per_step": round(statistics.fmean(timed), 5) if timed else None,
    }


# ---------------------------------------------------------------- loading, saving, the job


def load_trainable_policy(spec: str, quantize_4bit: bool, lora: dict[str, Any]) -> tuple[nn.Module, Any]:
    """The policy to train: 4-bit base + LoRA on CUDA, full precision + LoRA on CPU; and its tokenizer."""
    tokenizer = models.load_tokenizer(spec, padding_side="left")
    base = models.load_causal_lm(spec, quantize_4bit=quantize_4bit)
    lora = dict(lora)
    model = models.add_lora(base, r=lora.pop("r", 16), alpha=lora.pop("alpha", 32), dropout=lora.pop("dropout", 0.05),
                            **lora)
    return model.eval(), tokenizer


def new_value_head(model: nn.Module) -> ValueHead:
    device = next(p for p in model.parameters()).device
    return ValueHead(model.config.hidden_size).to(device)


def save_policy(model: nn.Module, value_head: ValueHead, tokenizer: Any, folder: Path) -> None:
    """LoRA adapters (peft save_pretrained), the value head and the tokenizer in folder."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}, folder / VALUE_HEAD_FILE)


def _policy_run(run_dir: str | Path) -> tuple[dict[str, Any], Path]:
    from lab.runs import open_run

    run = open_run(run_dir)
    if run.kind != KIND:
        raise ValueError(f"run '{run.id}' is a {run.kind or 'unknown'} run, not a PPO run")
    if not (run.model_dir / "adapter_config.json").exists():
        raise ValueError(f"PPO run '{run.id}' has no saved adapters (still running, or it failed)")
    return run.config, run.model_dir


def load_policy(run_dir: str | Path, quantize_4bit: bool | None = None) -> tuple[nn.Module, Any]:
    """The trained policy of a PPO run: its base model with the run's LoRA adapters, and the tokenizer."""
    from peft import PeftModel

    config, folder = _policy_run(run_dir)
    quantize = config.get("quantize_4bit", False) if quantize_4bit is None else quantize_4bit
    base = models.load_causal_lm(config["policy"], quantize_4bit=quantize)
    model = PeftModel.from_pretrained(base, str(folder))
    return model.eval(), models.load_tokenizer(config["policy"], padding_side="left")


def merged_model(run_dir: str | Path) -> tuple[nn.Module, Any]:
    """The trained policy with its adapters merged into full-precision weights (for the Compare stage)."""
    model, tokenizer = load_policy(run_dir, quantize_4bit=False)
    return model.merge_and_unload().eval(), tokenizer


def load_value_head(run_dir: str | Path) -> ValueHead:
    from safetensors.torch import load_file

    _, folder = _policy_run(run_dir)
    weights = load_file(str(folder / VALUE_HEAD_FILE))
    head = ValueHead(weights["summary.weight"].shape[1])
    head.load_state_dict(weights)
    return head


def reward_score_fn(reward_model_path: str | Path) -> ScoreFn:
    """score_fn from a reward run: the prompt and response as HH text, scored with the reward model's tokenizer."""
    from lab.reward import format_for_reward, load_reward_model

    reward_model = load_reward_model(reward_model_path)

    def score(prompts: list[str], responses: list[str]) -> list[float]:
        return reward_model.score([format_for_reward(p, r) for p, r in zip(prompts, responses)])

    return score


def job_config(cfg: PPOConfig, preset: Preset, reward_model: str, prompts: str, policy: str | None = None) -> dict:
    """What a PPO run stores in config.json: the PPO settings plus policy, reward model, prompts and LoRA."""
    return {**asdict(cfg), "policy": policy or preset.policy, "reward_model": str(reward_model), "prompts": prompts,
            "quantize_4bit": preset.quantize_4bit, "lora": dict(preset.lora), "preset": preset.name}


def check_reward_model(path: str, root: Path | None = None) -> str:
    """The reward run's folder (a path, or a run id under root) as an absolute path; ValueError when it is not a
    saved reward model."""
    from lab.reward import model_folder
    from lab.runs import runs_root

    root = Path(root) if root else runs_root()
    candidate = Path(path).expanduser()
    if not candidate.exists() and not candidate.is_absolute() and (root / path).exists():
        candidate = root / path  # a run id from the runs folder
    if not candidate.exists():
        raise ValueError(f"no such reward run: '{path}'")
    model_folder(candidate)  # raises when the run has no saved model
    return str(candidate.resolve())


JOB_KEYS = ("reward_model", "prompts", "policy", "max_prompts")  # what a PPO job takes besides PPOConfig


def prepare(preset: Preset, values: dict[str, Any], allowed_dirs: list[Path] | None = None,
            root: Path | None = None) -> dict[str, Any]:
    """A checked PPO job config from a form's or the command line's values (PPOConfig fields plus JOB_KEYS; None or
    "" = the preset's): settings within the preset's limits, the reward run saved, the prompt source non-empty and
    the policy found, all before any model loads. `root` is where run ids are looked up."""
    from lab.data import load_prompts

    extra = {k: values.get(k) for k in JOB_KEYS}
    if not extra["reward_model"]:
        raise ValueError("pick a reward-model run first (train one on the Reward model tab)")
    cfg = validate(config_from(preset, **{k: v for k, v in values.items() if k not in JOB_KEYS}), preset.limits)
    reward_model = check_reward_model(str(extra["reward_model"]).strip(), root)
    source = (extra["prompts"] or "").strip() or preset.ppo_prompts
    load_prompts(source, limit=cfg.batch_size, allowed_dirs=allowed_dirs)  # fails on an empty set
    policy = (extra["policy"] or "").strip() or preset.policy
    models.check_available(policy)
    config = job_config(cfg, preset, reward_model, source, policy)
    config.update(memory.check_ppo(config))  # refuses, with the numbers, a job that would not fit
    if extra["max_prompts"]:
        config["max_prompts"] = int(extra["max_prompts"])
    return config


def train_ppo(ctx: JobContext, score_fn: ScoreFn | None = None) -> dict[str, Any]:
    """The PPO job: load policy, reward model and prompts, run the loop, save adapters and value head."""
    from lab.data import load_prompts

    cfg = validate(config_from_dict(ctx.config))
    ctx.set_progress(0, "loading prompts")
    # never more prompts than the run can use: big hub sets are read only that far
    limit = ctx.config.get("max_prompts") or cfg.steps * cfg.batch_size
    prompts = load_prompts(ctx.config.get("prompts", "bundled"), limit=limit)
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

    history = run_ppo(model, value_head, tokenizer, prompts, score_fn, cfg, on_step, lambda: ctx.stopping, on_phase)
    ctx.set_progress(len(history) / cfg.steps, "saving the adapters")
    save_policy(model, value_head, tokenizer, ctx.run.model_dir)
    ctx.set_progress(len(history) / cfg.steps, f"{'stopped' if ctx.stopping else 'done'} after {len(history)} steps")
    return {**summarize(history), "advantage": cfg.advantage, "samples_per_prompt": cfg.samples_per_prompt}
