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


def draw(weights: torch.Tensor) -> torch.Tensor:
    """One index a row of `weights` (B, V), each with its row's share of the row's total (probabilities, or any
    non-negative weights: rows need not sum to 1, so softmax's division is not needed)."""
    cdf = weights.float().cumsum(-1)  # (B, V)
    u = torch.rand(weights.shape[0], 1, device=weights.device) * cdf[:, -1:]  # (B, 1), uniform on [0, total)
    # the first index whose cumulative weight passes u: a zero-weight token never is, except where u rounds up to the
    # total (searchsorted then points past the end); those rows take their last token with any weight
    idx = torch.searchsorted(cdf, u, right=True).clamp_(max=weights.shape[-1] - 1)  # (B, 1)
    missed = weights.gather(1, idx) <= 0
    if bool(missed.any()):  # rare: the count of non-zero weights first reaches its total at the last such token
        idx = torch.where(missed, (weights > 0).cumsum(-1).argmax(-1, keepdim=True), idx)
    return idx.squeeze(-1)  # (B,)


class InverseCdfSampler:
    """A logits processor (generate calls it last): warps the scores, draws a token a row and returns scores that
    are 0 at the drawn token and -inf elsewhere, so generate's greedy argmax keeps it."""

    def __init__(self, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0 to sample (got {temperature})")
        self.warpers = _warpers(temperature, top_k, top_p)
        self.temperature = temperature
        self.temperature_only = not top_k and (top_p is None or top_p >= 1.0)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.temperature_only:  # rollouts (top_k 0, top_p 1): exp((s - max) / T) in place, no softmax division
            weights = scores.float().sub_(scores.max(-1, keepdim=True).values).div_(self.temperature).exp_()
        else:
            for warp in self.warpers:
                scores = warp(input_ids, scores)
            weights = torch.softmax(scores.float(), dim=-1)
        tokens = draw(weights)  # (B,)
        return weights.fill_(float("-inf")).scatter_(1, tokens[:, None], 0.0)


def sampling_kwargs(temperature: float, top_k: int | None = None, top_p: float | None = None) -> dict[str, Any]:
    """generate() keywords that sample with InverseCdfSampler: greedy mode (the model's own sampling defaults
    cleared, so generate neither warps twice nor warns) plus the sampler as the last logits processor."""
    from transformers import LogitsProcessorList

    return {"do_sample": False, "temperature": None, "top_k": None, "top_p": None,
            "logits_processor": LogitsProcessorList([InverseCdfSampler(temperature, top_k, top_p)])}
