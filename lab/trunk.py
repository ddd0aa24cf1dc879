"""The shared trunk: the decoder blocks below the lowest LoRA layer, run once per PPO step instead of once per pass.

With LoRA on the top blocks only (the cpu preset: `top_layers` 10 of 30), the bottom blocks compute the same hidden
states for the policy and its reference (adapters off), and nothing in them trains, so within one PPO step their
output is the same in every pass. `bottom` computes it once (no grad); `top` runs the rest (the adapted blocks,
the final norm, the lm_head) for the old log-probs, the reference log-probs and every optimisation pass alike.

This re-runs the decoder loop of transformers 5's `LlamaModel.forward` (and Mistral's, which differs only in its
mask) in two pieces; `shared_layers` returns 0 (use the full forward) wherever that is not known to be exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# model_type -> a decoder loop that `bottom` and `top` reproduce (transformers 5's modeling_llama / modeling_mistral)
SUPPORTED = {"llama", "mistral"}


@dataclass
class Trunk:
    """The output of the bottom `layers` decoder blocks for a batch of sequences."""

    hidden: torch.Tensor  # (B, T, H)
    layers: int

    def select(self, idx: torch.Tensor) -> Trunk:
        return Trunk(self.hidden[idx], self.layers)


def _base(model: nn.Module) -> nn.Module:
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _untouched(module: nn.Module) -> bool:
    """No adapter (any peft tuner layer, enabled or not) and no trainable parameter anywhere inside."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return not any(isinstance(m, BaseTunerLayer) for m in module.modules()) and not any(
        p.requires_grad for p in module.parameters())


def _loop_is_exact(base: nn.Module) -> bool:
    """Whether this module's decoder loop may run in pieces: an architecture it reproduces, full-precision weights
    (bitsandbytes layers switch layouts between no-grad and grad passes: models.keep_4bit_trainable), no gradient
    checkpointing (it trades compute for memory per layer; keep its one code path)."""
    inner = getattr(base, "model", None)
    if getattr(base.config, "model_type", None) not in SUPPORTED or not all(
            hasattr(inner, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return False
    if getattr(base, "is_quantized", False) or getattr(base, "is_loaded_in_4bit", False):
        return False
    return not any(getattr(m, "gradient_checkpointing", False) for m in base.modules())


def shared_layers(model: nn.Module) -> int:
    """How many bottom decoder blocks the policy and its reference share and never train: 0 = no split, run the full
    forward (LoRA on the lowest block, gradient checkpointing, a quantised or unknown architecture)."""
    base = _base(model)
    if not _loop_is_exact(base):
        return 0
    inner = base.model
    if not _untouched(inner.embed_tokens):
        return 0
    layers = inner.layers[: base.config.num_hidden_layers]
    n = 0
    while n < len(layers) and _untouched(layers[n]):
        n += 1
    return n


def _mask_and_rotary(inner: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                     position_ids: torch.Tensor, cache: object = None,
                     layer_idx: int = 0) -> tuple[object, tuple[torch.Tensor, torch.Tensor]]:
    """The causal mask (left padding included; after the cached positions where there is a cache) and rotary
    (cos, sin), as the model's own forward builds them."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    sliding = getattr(inner.config, "sliding_window", None) is not None  # Mistral's choice; Llama has no window
    make_mask = create_sliding_window_causal_mask if sliding else create_causal_mask
    at = {} if cache is None else {"layer_idx": layer_idx}  # the cache's first layer here: the blocks' first
    mask = make_mask(config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=cache,
                     position_ids=position_ids, **at)
    return mask, inner.rotary_emb(hidden, position_ids=position_ids)


def _blocks(layers: nn.ModuleList, hidden: torch.Tensor, attention_mask: torch.Tensor,
            position_ids: torch.Tensor, inner: nn.Module, cache: object = None, layer_idx: int = 0) -> torch.Tensor:
    """The blocks in order; with a KV cache each block adds its keys and values to it (the shared prefix's pass) or
    attends after the cached ones (the rows' rest)."""
    mask, rotary = _mask_and_rotary(inner, hidden, attention_mask, position_ids, cache, layer_idx)
    with_cache = {} if cache is None else {"cache": cache, "use_cache": True}
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rotary,
                       **with_cache)
    return hidden


@torch.no_grad()
def bottom(model: nn.Module, layers: int, input_ids: torch.Tensor, attention_mask: torch.Tensor,
           position_ids: torch.Tensor) -> Trunk:
    """The embeddings through the first `layers` decoder blocks."""
    inner = _base(model).model
    hidden = inner.embed_tokens(input_ids)  # (B, T, H)
    return Trunk(_blocks(inner.layers[:layers], hidden, attention_mask, position_ids, inner), layers)


def top(model: nn.Module, trunk: Trunk, attention_mask: torch.Tensor, position_ids: torch.Tensor,
        keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (B, keep, V), final-norm hidden states (B, keep, H)) of the last `keep` positions, from the trunk on."""
    base = _base(model)
    inner = base.model
    hidden = _blocks(inner.layers[trunk.layers : base.config.num_hidden_layers], trunk.hidden, attention_mask,
                     position_ids, inner)
    hidden = inner.norm(hidden[:, -keep:])  # per position: only the kept ones are needed
    return base.lm_head(hidden), hidden


# ---------------------------------------------------------------- the shared prefix

# tokens: a shorter common opening is left in the rows. The split saves (rows - 1) x its length tokens a pass and
# costs one more, narrow pass; it was measured at the chat template's ~30-token system prompt (README, PPO speed),
# not at a few tokens such as the seed's raw prompts' 9, which stay whole
MIN_PREFIX = 16


@dataclass
class PrefixSplit:
    """Rows that open with the same tokens (the chat template's system prompt: ~30 of a chat query's ~45 tokens),
    split into that prefix, run once as one row, and each row's rest, run against the prefix's keys and values.
    Causal attention makes this exact: the prefix attends only to itself, so its states are the same in every row."""

    prefix_ids: torch.Tensor  # (1, P)
    rest_ids: torch.Tensor  # (B, T - P): each row without its prefix, left padding kept (responses stay aligned)
    rest_mask: torch.Tensor  # (B, T - P)
    columns: torch.Tensor  # (B, T - P): where each rest column sits in the full row (to gather the trunk's states)
    start: int  # row 0's first real column: its prefix is columns start .. start + P

    @property
    def length(self) -> int:
        return self.prefix_ids.shape[1]

    def full_mask(self) -> torch.Tensor:
        """The attention mask over prefix + rest, (B, P + T - P): the prefix is real in every row."""
        ones = torch.ones(len(self.rest_mask), self.length, dtype=self.rest_mask.dtype, device=self.rest_mask.device)
        return torch.cat([ones, self.rest_mask], dim=1)

    def rest_positions(self) -> torch.Tensor:
        return self.length + (self.rest_mask.cumsum(-1) - 1).clamp(min=0)  # positions go on after the prefix


def shares_prefix(model: nn.Module) -> bool:
    """Whether passes may run a batch's common prefix once (top_with_prefix): where the decoder loop may run in
    pieces at all (_loop_is_exact); elsewhere every row runs whole."""
    return _loop_is_exact(_base(model))


def split_prefix(input_ids: torch.Tensor, attention_mask: torch.Tensor, keep: int,
                 min_length: int = MIN_PREFIX) -> PrefixSplit | None:
    """The rows' longest common opening (left padding aside) and each row's rest, or None where it is shorter than
    `min_length` or there is one row. The last `keep` columns (the query's last token and the response) always stay
    in the rest: their logits are the ones read."""
    rows, width = input_ids.shape
    if rows < 2:
        return None
    query = attention_mask[:, : width - keep]
    if not bool(((query.cumsum(-1) > 0) == query.bool()).all()):  # not left padding then real tokens: no split
        return None
    starts = (query.cumsum(-1) == 0).sum(-1)  # (B,) left padding per row
    longest = int((width - keep - starts).min())  # real query tokens every row has before the kept columns
    if longest < min_length:
        return None
    offsets = torch.arange(longest, device=input_ids.device)
    aligned = input_ids.gather(1, starts[:, None] + offsets[None])  # (B, longest): each row's opening
    same = (aligned == aligned[:1]).all(0)
    length = int(same.long().cumprod(0).sum())
    if length < min_length:
        return None
    cols = torch.arange(width - length, device=input_ids.device)[None].expand(rows, -1)
    columns = torch.where(cols < starts[:, None], cols, cols + length)  # skip each row's prefix columns
    return PrefixSplit(aligned[:1, :length], input_ids.gather(1, columns), attention_mask.gather(1, columns), columns,
                       int(starts[0]))


def top_with_prefix(model: nn.Module, split: PrefixSplit, trunk: Trunk | None,
                    keep: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`top` (or the whole decoder where `trunk` is None) with the shared prefix run once: (logits (B, keep, V),
    final-norm hidden states (B, keep, H)) of the last `keep` positions, as the unsplit pass gives them."""
    from transformers.cache_utils import DynamicCache

    base = _base(model)
    inner = base.model
    first = trunk.layers if trunk is not None else 0
    layers = inner.layers[first : base.config.num_hidden_layers]
    cache = DynamicCache(config=base.config)
    rows, length = len(split.rest_ids), split.length
    device = split.rest_ids.device
    if trunk is None:
        prefix_hidden, rest_hidden = inner.embed_tokens(split.prefix_ids), inner.embed_tokens(split.rest_ids)
    else:  # the bottom blocks' output of row 0's prefix columns and of each row's rest
        prefix_hidden = trunk.hidden[:1, split.start : split.start + length]
        rest_hidden = trunk.hidden.gather(1, split.columns[..., None].expand(-1, -1, trunk.hidden.shape[-1]))
    positions = torch.arange(length, device=device)[None]
    ones = torch.ones(1, length, dtype=split.rest_mask.dtype, device=device)
    _blocks(layers, prefix_hidden, ones, positions, inner, cache, first)
    cache.batch_repeat_interleave(rows)
    hidden = _blocks(layers, rest_hidden, split.full_mask(), split.rest_positions(), inner, cache, first)
    hidden = inner.norm(hidden[:, -keep:])
    return base.lm_head(hidden), hidden
