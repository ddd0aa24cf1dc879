"""Sampling one token a row by inverse CDF, as a logits processor that generate's greedy step then picks.

generate's own sampling draws with `torch.multinomial`, which on a CPU fills an exponential variate for every entry of
the vocabulary, every row, every token: for SmolLM2's 49,152 tokens, 8.8 ms a token at 8 rows, a tenth of a rollout
(benchmarks/bench_ppo.py). Inverse CDF needs one uniform a row: the cumulative probabilities, then a binary search.
It draws from the same distribution (temperature, then top-k, then top-p, HF's own warpers in HF's own order), from
torch's global generator, so a seed still fixes the answers; the tokens drawn differ from multinomial's.
"""

from __future__ import annotations

from typing import Any

import torch


def _warpers(temperature: float, top_k: int | None, top_p: float | None) -> list[Any]:
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    warpers: list[Any] = []
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return warpers


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One index a row of `probs` (B, V), each with its row's probability (rows need not sum to exactly 1)."""
    cdf = probs.float().cumsum(-1)  # (B, V)
    u = torch.rand(probs.shape[0], 1, device=probs.device) * cdf[:, -1:]  # (B, 1), uniform on [0, total)
    # the first index whose cumulative probability passes u: a zero-probability token never is, except where u
    # rounds up to the total; then the row's last token with any probability
    last = (probs > 0).cumsum(-1).argmax(-1)  # (B,): where the count of non-zero tokens first reaches its total
    return torch.minimum(torch.searchsorted(cdf, u, right=True).squeeze(-1), last)  # (B,)


class InverseCdfSampler:
    """A logits processor (generate calls it last): warps the scores, draws a token a row and returns scores that
    are 0 at the drawn token and -inf elsewhere, so generate's greedy argmax keeps it."""

    def __init__(self, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 to sample (got {temperature})")
        self.warpers = _warpers(temperature, top_k, top_p)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        tokens = draw(torch.softmax(scores.float(), dim=-1))  # (B,)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tokens[:, None], 0.0)


def sampling_kwargs(temperature: float, top_k: int | None = None, top_p: float | None = None) -> dict[str, Any]:
    """generate() keywords that sample with InverseCdfSampler: greedy mode (the model's own sampling defaults
    cleared, so generate neither warps twice nor warns) plus the sampler as the last logits processor."""
    from transformers import LogitsProcessorList

    return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None,
            "logits_processor": LogitsProcessorList([InverseCdfSampler(temperature, top_k, top_p)])}
