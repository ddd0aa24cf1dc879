"""PPO-ptx on the preferred answers: besides the PPO loss, the policy learns to write the answers people chose.

InstructGPT (Ouyang et al. 2022, arXiv:2203.02155, eq. 2) adds gamma x the log-likelihood of pretraining text to
the PPO objective so the policy does not drift away from fluent text. Here the text is the chosen side of the
reward model's own training pairs: one mini-batch of them per optimiser step, their mean negative log-likelihood
(nats a token, answer tokens only) weighted by `PPOConfig.imitation_coef`. Only the proxy's training share is used:
never the held-out pairs and never the judge's share, so neither check grades answers the policy was shown.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lab import trunk
from lab.data import Pair, is_helpful_subset, is_written_decline_subset
from lab.reward_data import run_pairs
from lab.rollout import autocast

MAX_ANSWER_TOKENS = 96  # the bundled answers are 1-3 sentences (median ~45 tokens); longer hh answers are cut


@dataclass(frozen=True)
class Demonstration:
    messages: list[dict[str, str]]  # the dialogue up to the answer, as chat turns
    answer: str


def proxy_pairs(reward_dir: Path) -> list[Pair]:
    """The pairs a reward run's proxy trained on, before augmentation (lab.reward_data.run_pairs)."""
    return run_pairs(reward_dir, ", so its chosen answers cannot be imitated: set imitation_coef to 0")[0]


def imitable(pair: Pair) -> bool:
    """Whether a pair's chosen answer is one to write like. Where pairs are labelled, as for evasion pairs
    (lab.augment): ordinary requests (`helpful`, hh-rlhf's `helpful-*`) and the demo set's written declines; not
    hh-rlhf's `harmless-base`, whose "chosen" answer is only the less harmful of two samples and often complies.
    Unlabelled pairs: all."""
    return pair.subset is None or is_helpful_subset(pair.subset) or is_written_decline_subset(pair.subset)


def demonstrations(pairs: list[Pair]) -> list[Demonstration]:
    """Each distinct (dialogue, chosen answer) of the imitable pairs once, as chat turns; pairs without a dialogue or
    answer are skipped."""
    out: dict[tuple[str, str], Demonstration] = {}
    skipped = {p.subset for p in pairs if not imitable(p)}
    for pair in filter(imitable, pairs):
        answer = pair.chosen.strip()
        turns = pair.turns
        if not answer or not turns:
            continue
        messages = [{"role": "user" if role == "Human" else "assistant", "content": text} for role, text in turns]
        out.setdefault((pair.prompt, answer), Demonstration(messages, answer))
    if not out:
        why = (f" (only {', '.join(sorted(map(str, skipped)))} pairs, whose chosen answers are not written to be "
               f"imitated: mix in helpful pairs, e.g. FILE+bundled:helpful)") if skipped else ""
        raise ValueError(f"the reward run's training pairs hold no chosen answer to imitate{why}; "
                         f"or set imitation_coef to 0")
    return list(out.values())


class Imitation:
    """Mini-batches of demonstrations, tokenised once, drawn in a seeded order; `loss(model)` is one mini-batch's
    mean negative log-likelihood of the answer tokens (with the end-of-turn token), graph kept for backward."""

    def __init__(self, demos: list[Demonstration], tokenizer: Any, batch_size: int, max_prompt_length: int,
                 bf16: bool, seed: int) -> None:
        self.rows = [self._encode(d, tokenizer, max_prompt_length) for d in demos]
        self.batch_size, self.bf16 = batch_size, bf16
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.rng = random.Random(seed)
        self.order: list[int] = []
        self._cache: dict[int, torch.Tensor] = {}  # demonstration -> its bottom-block states (lab.trunk)
        self._layers = 0

    @staticmethod
    def _encode(demo: Demonstration, tokenizer: Any, max_prompt_length: int) -> tuple[list[int], list[int]]:
        if getattr(tokenizer, "chat_template", None):
            context = tokenizer.apply_chat_template(demo.messages, tokenize=False, add_generation_prompt=True)
        else:
            context = "\n\n".join(m["content"] for m in demo.messages) + "\n\n"
        context_ids = tokenizer(context, add_special_tokens=False).input_ids[-max_prompt_length:]
        answer_ids = tokenizer(demo.answer, add_special_tokens=False).input_ids[:MAX_ANSWER_TOKENS]
        if tokenizer.eos_token_id is not None and len(answer_ids) < MAX_ANSWER_TOKENS:
            answer_ids = answer_ids + [tokenizer.eos_token_id]  # the answer ends: the policy learns to stop
        return context_ids, answer_ids

    def _next(self) -> list[int]:
        picked = []
        for _ in range(min(self.batch_size, len(self.rows))):
            if not self.order:
                self.order = list(range(len(self.rows)))
                self.rng.shuffle(self.order)
            picked.append(self.order.pop())
        return picked

    def _left_padded(self, seqs: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask), every sequence ending in the last column."""
        width = max(map(len, seqs))
        ids = torch.full((len(seqs), width), self.pad, dtype=torch.long, device=device)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq) :] = torch.tensor(seq, device=device)
            mask[row, width - len(seq) :] = 1
        return ids, mask

    def loss(self, model: nn.Module) -> torch.Tensor:
        """Left-padded (every answer ends in the last column), so the lm_head runs on the answer columns only; where
        the policy's bottom blocks are frozen and shared (lab.trunk), their output is computed once per
        demonstration and kept, and only the adapted blocks run here (~0.6 s a step on 2 cores, cpu preset)."""
        picked = self._next()
        rows = [self.rows[i] for i in picked]
        device = next(p for p in model.parameters()).device
        ids, mask = self._left_padded([c + a for c, a in rows], device)
        answer_length = max(len(a) for _, a in rows)
        labels = torch.full((len(rows), answer_length), -100, dtype=torch.long, device=device)
        for i, (_, answer) in enumerate(rows):
            labels[i, answer_length - len(answer) :] = torch.tensor(answer, device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        keep = answer_length + 1  # the positions that predict an answer token
        layers = trunk.shared_layers(model)
        with autocast(device, self.bf16):
            if layers:
                hidden = self._bottoms(model, layers, picked, ids.shape[1], device)
                logits, _ = trunk.top(model, trunk.Trunk(hidden, layers), mask, positions, keep=keep)
            else:
                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep,
                               use_cache=False).logits
        return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=-100)

    @torch.no_grad()
    def _bottoms(self, model: nn.Module, layers: int, picked: list[int], length: int,
                 device: torch.device) -> torch.Tensor:
        """(B, length, H): each picked demonstration's bottom-block states, left-padded with zeros (masked out).
        Computed the first time a demonstration is drawn (they never change), in one left-padded pass."""
        if self._layers != layers:
            self._cache, self._layers = {}, layers
        missing = [i for i in dict.fromkeys(picked) if i not in self._cache]
        if missing:  # each row's real part is kept
            seqs = [self.rows[i][0] + self.rows[i][1] for i in missing]
            ids, mask = self._left_padded(seqs, device)
            hidden = trunk.bottom(model, layers, ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)).hidden
            for row, (i, seq) in enumerate(zip(missing, seqs)):
                self._cache[i] = hidden[row, ids.shape[1] - len(seq) :].clone()
        states = [self._cache[i] for i in picked]
        out = states[0].new_zeros(len(picked), length, states[0].shape[-1])
        for row, state in enumerate(states):
            out[row, length - len(state) :] = state
        return out


def for_run(reward_dir: Path, tokenizer: Any, batch_size: int, max_prompt_length: int, bf16: bool,
            seed: int) -> Imitation:
    """The Imitation of a reward run's proxy training pairs."""
    return Imitation(demonstrations(proxy_pairs(reward_dir)), tokenizer, batch_size, max_prompt_length, bf16, seed)
