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


def shared_layers(model: nn.Module) -> int:
    """How many bottom decoder blocks the policy and its reference share and never train: 0 = no split, run the full
    forward (LoRA on the lowest block, gradient checkpointing, a quantised or unknown architecture)."""
    base = _base(model)
    inner = getattr(base, "model", None)
    if getattr(base.config, "model_type", None) not in SUPPORTED or not all(
            hasattr(inner, name) for name in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return 0
    if getattr(base, "is_quantized", False) or getattr(base, "is_loaded_in_4bit", False):
        return 0  # bitsandbytes layers switch layouts between no-grad and grad passes (models.keep_4bit_trainable)
    if any(getattr(m, "gradient_checkpointing", False) for m in base.modules()):
        return 0  # checkpointing trades compute for memory per layer; keep its one code path
    if not _untouched(inner.embed_tokens):
        return 0
    layers = inner.layers[: base.config.num_hidden_layers]
    n = 0
    while n < len(layers) and _untouched(layers[n]):
        n += 1
    return n


def _mask_and_rotary(inner: nn.Module, hidden: torch.Tensor, attention_mask: torch.Tensor,
                     position_ids: torch.Tensor) -> tuple[object, tuple[torch.Tensor, torch.Tensor]]:
    """The causal mask (left padding included) and rotary (cos, sin), as the model's own forward builds them."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    sliding = getattr(inner.config, "sliding_window", None) is not None  # Mistral's choice; Llama has no window
    make_mask = create_sliding_window_causal_mask if sliding else create_causal_mask
    mask = make_mask(config=inner.config, inputs_embeds=hidden, attention_mask=attention_mask, cache=None,
                     position_ids=position_ids)
    return mask, inner.rotary_emb(hidden, position_ids=position_ids)


def _blocks(layers: nn.ModuleList, hidden: torch.Tensor, attention_mask: torch.Tensor,
            position_ids: torch.Tensor, inner: nn.Module) -> torch.Tensor:
    mask, rotary = _mask_and_rotary(inner, hidden, attention_mask, position_ids)
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rotary)
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
