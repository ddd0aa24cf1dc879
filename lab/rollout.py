"""Rollouts for PPO: sample responses from the policy, then the log-probs (and values) of a batch of them.

Every forward pass here uses the shapes and precision of the training passes, so the PPO ratio is exactly 1 and the
KL exactly 0 before the first update (see `lab.ppo`). With LoRA on the top blocks only, a batch carries the shared
bottom blocks' output (`with_trunk`, lab.trunk), and every pass of the step runs only the blocks above it.
"""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch import nn
from lab import models, trunk
from lab.generate import stopping_criteria
from lab.rl import ValueHead, logprobs_from_logits, response_mask
from lab.sampling import sampling_kwargs
from lab.trunk import Trunk

# Sample from the policy itself: a model's generation_config (repetition penalty, typical-p, ...) must not reshape
# the distribution, or the rollouts stop being on-policy and the KL estimate is biased.
UNSHAPED_SAMPLING = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "typical_p": 1.0,
                     "min_p": 0.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0}

# Attention implementation per device type for decoding (absent: the model's own); lab.ppo picks the training one.
DECODE_ATTENTION = {"cpu": "sdpa"}
# KV cache per device type for decoding where no prompt repeats (absent: generate's growing one). A preallocated
# cache writes each token in place instead of concatenating every layer's keys and values again: at the seed's
# settings (8 rows, 46 + 32 tokens, bf16, AVX512-BF16 CPU) a rollout took 2.35 s against 2.58 (medians of 6, ABBA;
# faster in 6 of 6). Its attention runs over the preallocated width, so bf16 rounding, and so the tokens drawn,
# can differ from the growing cache's; every log-prob PPO compares comes from the training passes either way.
DECODE_CACHE = {"cpu": "static"}


class RolloutSettings(Protocol):
    """The fields of lab.ppo.PPOConfig that sampling and the forward passes read."""

    mini_batch_size: int
    temperature: float
    bf16: bool
    generation_batch_size: int
    top_k: int
    top_p: float
    output_min_length: int


@dataclass
class Batch:
    """One batch of rollouts as tensors: left-padded queries followed by right-padded responses."""

    input_ids: torch.Tensor  # (B, Q + R)
    attention_mask: torch.Tensor  # (B, Q + R)
    mask: torch.Tensor  # (B, R): 1 on real response tokens (EOS included)
    trunk: Trunk | None = None  # the shared bottom blocks' output (with_trunk); None: every pass runs all blocks

    @property
    def response_length(self) -> int:
        return self.mask.shape[1]

    @property
    def responses(self) -> torch.Tensor:
        return self.input_ids[:, -self.response_length :]  # (B, R)

    def select(self, idx: torch.Tensor) -> Batch:
        return Batch(self.input_ids[idx], self.attention_mask[idx], self.mask[idx],
                     None if self.trunk is None else self.trunk.select(idx))

    @property
    def position_ids(self) -> torch.Tensor:
        return (self.attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, Q + R): left padding counts real tokens only


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on the model's device when asked (CPUs with AVX512-BF16 run it ~2x faster)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def forward_policy(
    model: nn.Module, value_head: ValueHead | None, batch: Batch, temperature: float, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens (B, R) and, with a value head, the value before each of them (B, R)."""
    r = batch.response_length
    with autocast(batch.input_ids.device, bf16):
        split = trunk.split_prefix(batch.input_ids, batch.attention_mask, r + 1) if trunk.shares_prefix(model) else None
        if split is not None:  # the rows' common opening (the chat template's system prompt) runs once, as one row
            logits, hidden = trunk.top_with_prefix(model, split, batch.trunk, keep=r + 1)
        elif batch.trunk is not None:  # the bottom blocks ran once this step: only the blocks above them run here
            logits, hidden = trunk.top(model, batch.trunk, batch.attention_mask, batch.position_ids, keep=r + 1)
        else:
            out = model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                logits_to_keep=r + 1,  # the lm_head only for positions that predict a response token
                output_hidden_states=value_head is not None, use_cache=False,
            )
            logits, hidden = out.logits, out.hidden_states[-1] if value_head is not None else None
    logprobs = logprobs_from_logits(logits[:, :-1], batch.responses, temperature)  # (B, R)
    if value_head is None:
        return logprobs, None
    hidden = hidden[:, -r - 1 : -1]  # (B, R, H): the final-norm states whose logits predict each token
    return logprobs, value_head(hidden.float())


@torch.no_grad()
def with_trunk(model: nn.Module, batch: Batch, cfg: RolloutSettings) -> Batch:
    """The batch with the output of the bottom blocks that no adapter touches (policy and reference share them, and
    they never change within a step), computed once in chunks of mini_batch_size; unchanged where the model has no
    such blocks (lab.trunk.shared_layers)."""
    layers = trunk.shared_layers(model)
    if layers == 0:
        return batch
    pieces = []
    with autocast(batch.input_ids.device, cfg.bf16):
        for idx in torch.arange(len(batch.input_ids)).split(cfg.mini_batch_size):
            mb = batch.select(idx)
            pieces.append(trunk.bottom(model, layers, mb.input_ids, mb.attention_mask, mb.position_ids).hidden)
    return replace(batch, trunk=Trunk(torch.cat(pieces), layers))


@torch.no_grad()
def batched_forward(
    model: nn.Module, value_head: ValueHead | None, batch: Batch, cfg: RolloutSettings, reference: bool = False,
    order: torch.Tensor | None = None, first: tuple[torch.Tensor, torch.Tensor | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """forward_policy in chunks of mini_batch_size (the training shapes, so old and new log-probs agree exactly),
    taken along `order` (default: the batch's own), results in the batch's order. `first`: the first chunk's
    (log-probs, values), already computed (ppo_step's fused first pass): used detached, not recomputed."""
    head = None if reference else value_head
    rows, device = len(batch.input_ids), batch.input_ids.device
    order = torch.arange(rows, device=device) if order is None else order
    logprobs = torch.empty(rows, batch.response_length, device=device)
    values = None if head is None else torch.empty(rows, batch.response_length, device=device)
    with model.disable_adapter() if reference else contextlib.nullcontext():
        for i, idx in enumerate(order.split(cfg.mini_batch_size)):
            if i == 0 and first is not None:
                lp, v = first[0].detach(), None if first[1] is None else first[1].detach()
            else:
                lp, v = forward_policy(model, head, batch.select(idx), cfg.temperature, cfg.bf16)
            logprobs[idx] = lp
            if values is not None:
                values[idx] = v
    return logprobs, values


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


@torch.no_grad()
def shared_prompt_cache(model: nn.Module, query: dict) -> dict:
    """{cache keyword: the KV cache of every query row but its last token}, each distinct query (ids and mask)
    computed once (k answers per prompt repeat it k times: at 4 the prefill is a quarter of the work), or {} where no
    row repeats or the model's cache cannot be indexed by row. generate then runs the last token and decodes on."""
    rows = torch.cat([query["input_ids"], query["attention_mask"]], dim=1)
    unique, inverse = torch.unique(rows, dim=0, return_inverse=True)
    width = query["input_ids"].shape[1]
    if len(unique) == len(rows) or width < 2:
        return {}
    ids, head = unique[:, : width - 1], unique[:, width : 2 * width - 1]
    out = model(input_ids=ids, attention_mask=head, use_cache=True, logits_to_keep=1,
                position_ids=(head.cumsum(-1) - 1).clamp(min=0))  # generate's positions: left padding not counted
    name = _cache_name()
    cache = out.get(name)
    if cache is None or not hasattr(cache, "batch_select_indices"):
        return {}
    cache.batch_select_indices(inverse)  # (distinct queries, ...) -> (rows, ...)
    return {name: cache}


def _cache_name() -> str:
    """The KV cache's keyword and output field: `cache` from transformers 5.2x (`past_key_values` is deprecated there
    and goes in 5.40), `past_key_values` before."""
    from transformers.generation import utils

    return "cache" if "cache" in getattr(utils, "ALL_CACHE_NAMES", ()) else "past_key_values"


@torch.no_grad()
def generate_responses(
    model: nn.Module, tokenizer: Any, query: dict, lengths: list[int], cfg: RolloutSettings,
    should_stop: Callable[[], bool] = lambda: False,
) -> Batch:
    """Sample responses with a KV cache (top_k=0, top_p=1), cut each at its drawn length or its EOS."""
    chunk = cfg.generation_batch_size or len(lengths)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stop = stopping_criteria(should_stop)
    pieces = []
    # rollout log-probs are never used: every log-prob PPO compares comes from the training passes, so sampling may
    # take faster paths that keep the ratio exact: the adapters folded into the weights (models.merged_adapters),
    # sdpa attention on a CPU (it decodes faster, eager trains faster: benchmarks/bench_ppo.py), inverse-CDF draws
    with models.merged_adapters(model):
        for start in range(0, len(lengths), chunk):
            part = {k: v[start : start + chunk] for k, v in query.items()}
            device = part["input_ids"].device
            with autocast(device, cfg.bf16), models.attention_implementation(model, DECODE_ATTENTION.get(device.type)):
                cache = shared_prompt_cache(model, part)  # k answers a prompt: their prompts prefilled once
                if not cache and DECODE_CACHE.get(device.type):
                    cache = {"cache_implementation": DECODE_CACHE[device.type]}
                out = model.generate(
                    **part, **cache, **UNSHAPED_SAMPLING,
                    **sampling_kwargs(cfg.temperature, cfg.top_k, cfg.top_p),
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
