"""The RL maths of PPO, RLOO and GRPO as small pure functions on tensors (shapes in comments), plus the value head
and the KL controllers. No model loading, no loop: `lab.ppo` calls these step by step.

Sources: TRL 0.x's `PPOTrainer` (the seed), "The N Implementation Details of RLHF with PPO" (Huang et al. 2024),
CleanRL's `ppo.py`.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

KL_PENALTIES = ("kl", "abs", "mse", "k3")


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


class KLCap:
    """A ceiling on the KL over the inner controller's β: after a step whose KL passes `cap`, β doubles; once KL is
    back under half the cap, it halves again, never below the inner controller's value. The doubling rule is the PPO
    paper's adaptive KL penalty (Schulman et al. 2017, arXiv:1707.06347, sec. 4), made one-sided: it only ever adds
    to the β the run chose, so a run that stays under the cap trains exactly as without it. β stops at `max_scale`
    times the inner value: advantages are normalised per batch, so once the KL term outweighs the score, doubling
    further changes only the logged number (unbounded, a run held at 3-4 nats took β from 0.3 to 39,000)."""

    def __init__(self, inner: AdaptiveKLController | FixedKLController, cap: float, max_scale: float = 16.0) -> None:
        self.inner, self.cap, self.max_scale, self.scale = inner, cap, max_scale, 1.0

    @property
    def value(self) -> float:
        return self.inner.value * self.scale

    def update(self, current_kl: float, n_steps: int) -> None:
        self.inner.update(current_kl, n_steps)
        if current_kl > self.cap:
            self.scale = min(self.max_scale, self.scale * 2.0)
        elif current_kl < self.cap / 2:
            self.scale = max(1.0, self.scale / 2)


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



def process_scores(scores: torch.Tensor, moments: RunningMoments, scaling: bool = False, norm: bool = False,
                   clip: float = 0.0) -> torch.Tensor:
    """Optional score scaling (`scaling`) / normalisation (`norm`) by running moments already updated with these
    scores, then clipping to ±`clip` (the seed's use_score_scaling, use_score_norm and score_clip)."""
    if scaling:
        scale = moments.std + 1e-8
        scores = (scores - moments.mean) / scale if norm else scores / scale
    if clip > 0:
        scores = scores.clamp(-clip, clip)
    return scores


class ValueHead(nn.Module):
    """A scalar value per position from the policy's last hidden state, initialised at zero."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.weight)  # values start at 0: no early noise in the advantages
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


def mean_and_std(scores: torch.Tensor) -> tuple[float, float]:
    """Mean and std of the scores (std 1 when there is one score or no spread), for reward_norm."""
    spread = len(scores) > 1 and scores.std() > 1e-6
    return scores.mean().item(), scores.std().item() if spread else 1.0


def estimate_advantages(
    scores: torch.Tensor, old_logprobs: torch.Tensor, ref_logprobs: torch.Tensor, old_values: torch.Tensor | None,
    mask: torch.Tensor, kl_coef: float, kl_kind: str = "kl", advantage: str = "gae", k: int = 1, gamma: float = 1.0,
    lam: float = 0.95, whiten_rewards: bool = False, whiten_advantages: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(per-token KL, advantages, returns or None), all (B, T). With values (GAE): per-token KL penalty, the score on
    the last real token, GAE over the value head's estimates. Without (RLOO / GRPO, `k` answers a prompt): the
    answer's score minus its summed KL, against the other answers to the same prompt."""
    rewards, kl = compute_rewards(scores, old_logprobs, ref_logprobs, mask, kl_coef, kl_kind)
    if old_values is None:
        advantages = sequence_advantages(scores, kl, mask, kl_coef, advantage, k)
        if whiten_advantages:  # zero mean already (leave-one-out / group mean): scale only
            advantages = masked_whiten(advantages, mask, shift_mean=False)
        return kl, advantages, None
    if whiten_rewards:
        rewards = masked_whiten(rewards, mask, shift_mean=False)
    advantages, returns = compute_gae(rewards, old_values, mask, gamma, lam)
    if whiten_advantages:
        advantages = masked_whiten(advantages, mask)
    return kl, advantages, returns


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
