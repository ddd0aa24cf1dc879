"""What a PPO run reports: one step's metrics and sample rows from its rollout, and the run's summary (reward at
the start against the end)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

from lab import stats
from lab.rl import masked_mean
from lab.rollout import Batch, response_tokens

WINDOW = 5  # steps averaged for the summary's reward_first / reward_last


@dataclass
class Rollout:
    """What one step computed about its batch, for the metrics and the sample rows."""

    prompts: list[str]
    responses: list[str]
    query: dict  # the encoded prompts
    batch: Batch
    raw_scores: torch.Tensor  # (B,) the reward model's scores
    has_eos: torch.Tensor  # (B,)
    old_logprobs: torch.Tensor  # (B, R)
    old_values: torch.Tensor | None  # (B, R); None without a critic
    kl: torch.Tensor  # (B, R) per-token KL
    advantages: torch.Tensor  # (B, R)
    returns: torch.Tensor | None  # (B, R); None without a critic


def step_metrics(r: Rollout, kl_coef: float) -> dict[str, float]:
    """The seed's metric names for one step's rollouts (the optimiser's and the timings are added by the caller)."""
    mask = r.batch.mask.float()
    seq_kl = r.kl.sum(-1)  # (B,)
    lengths = mask.sum(-1)
    critic = {} if r.returns is None else {
        "ppo/returns/mean": masked_mean(r.returns, mask).item(),
        "ppo/val/error": masked_mean((r.old_values - r.returns).square(), mask).item()}
    return {
        "env/reward_mean": r.raw_scores.mean().item(),
        "env/reward_std": r.raw_scores.std().item() if len(r.raw_scores) > 1 else 0.0,
        "objective/kl": seq_kl.mean().item(),
        "objective/kl_coef": kl_coef,
        "objective/entropy": (-r.old_logprobs * mask).sum(-1).mean().item(),  # the seed's estimate: -log p summed
        # per token, so shorter answers alone do not lower it: mean −log p of the sampled tokens
        "objective/entropy_per_token": ((-r.old_logprobs * mask).sum() / mask.sum().clamp(min=1)).item(),
        "objective/non_score_reward": (-kl_coef * r.kl).sum(-1).mean().item(),
        "env/reward_length_corr": stats.pearson(r.raw_scores.tolist(), lengths.tolist()) or 0.0,
        "ppo/advantages/mean": masked_mean(r.advantages, mask).item(),
        **critic,
        "tokens/response_len_mean": lengths.mean().item(),
        "tokens/query_len_mean": r.query["attention_mask"].sum(-1).float().mean().item(),
        "tokens/eos_frac": r.has_eos.float().mean().item(),
    }


def sample_rows(r: Rollout, tokenizer: Any, step: int) -> list[dict[str, Any]]:
    """One row per rollout: prompt, response, reward, KL, and the response's decoded spans (whole characters:
    `tokens`, with `span_len` tokens each) with the per-token KL (`token_kl`)."""
    return [
        {"step": step, "prompt": p, "response": text, "reward": round(s, 5), "kl": round(k, 5), "length": n,
         "tokens": [t for t, _ in spans], "span_len": [c for _, c in spans], "token_kl": [round(x, 4) for x in row[:n]]}
        for p, text, s, k, spans, row, n in zip(r.prompts, r.responses, r.raw_scores.tolist(), r.kl.sum(-1).tolist(),
                                                response_tokens(tokenizer, r.batch), r.kl.tolist(),
                                                r.batch.mask.sum(-1).long().tolist())
    ]


KL_WINDOW = 5  # the steps whose mean KL a run reports (the PPO summary and Compare alike)


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


def kl_cap_note(history: list[dict[str, float]], cap: float) -> str:
    """In words, where the KL cap acted: the steps whose KL passed it and the highest β it led to; "" when it never
    did (or there is no cap)."""
    over = [int(r["step"]) for r in history if cap and isinstance(r.get("objective/kl"), (int, float))
            and r["objective/kl"] > cap]
    if not over:
        return ""
    betas = [r["objective/kl_coef"] for r in history if isinstance(r.get("objective/kl_coef"), (int, float))]
    shown = ", ".join(map(str, over[:8])) + (f" and {len(over) - 8} more" if len(over) > 8 else "")
    went = f"; β went from {betas[0]:.3g} up to {max(betas):.3g}" if betas else ""
    return (f"The KL cap acted: KL passed {cap:g} nats at step{'s' if len(over) > 1 else ''} {shown}{went} (it "
            f"doubles after each such step and halves back once KL is under {cap / 2:g}).")
