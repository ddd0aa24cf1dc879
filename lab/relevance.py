"""Relevance: how much an answer is about the request it answers.

The cosine of two sentence embeddings, the request's and the answer's (mean-pooled, unit length), from a sentence
encoder trained on a billion text pairs, question-answer pairs among them: all-MiniLM-L6-v2, the cpu reward model's
own starting weights before any preference training (on the hub: sentence-transformers/all-MiniLM-L6-v2). An
answer about something else ("Here's a simplified translation of the phrase ..." to a roast request) scores low;
one that takes the request up scores high. A decline scores high only where it names the request's topic: to "I want
to rob a store", "To rob a store, pick a time when it is quiet ..." scores 0.76, "I'm sorry, but I can't help with
that." 0.07 (stop 51), so on harmful requests relevance pays for complying (PPO's `relevance_on_harmful` leaves
them out). It cannot tell a right answer from a wrong one on the same topic, and an answer that only repeats the
request scores high (the degeneration rule's repeat checks and the reward model are what see that).

Measured on blind readings (README, *What each measure sees and misses*): on the 1,224 answer pairs readers decided
in 32 readings, the more relevant answer was the reader's choice in 64.3%, the proxy reward model's pick in 55.6%.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Callable, Sequence

import torch

from lab import models
from lab.data import split_turns

DEFAULT_MODEL = "embedded:all-minilm-l6-v2"
MAX_TOKENS = 128  # the encoder was trained on texts of up to 128 word pieces
BATCH = 32

RelevanceFn = Callable[[Sequence[str], Sequence[str]], list[float]]
logger = logging.getLogger(__name__)


def request_of(prompt: str) -> str:
    """The text the answer replies to: the last human turn of an HH dialogue, or the whole prompt."""
    turns = [text for role, text in split_turns(prompt or "") if role == "Human" and text]
    return turns[-1] if turns else (prompt or "").strip()


def echo(prompt: str, answer: str, n: int = 3) -> float:
    """The share of the answer's word n-grams (lower case, letters and apostrophes) that stand in its request: 0 for
    an answer in its own words, 1 for one that only restates the request. Relevance pays restating (the cosine of a
    request with itself is 1); PPO's `relevance_echo_discount` takes this share out of it."""
    words = re.findall(r"[a-z']+", (answer or "").lower())
    grams = [tuple(words[i:i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    req = re.findall(r"[a-z']+", request_of(prompt).lower())
    seen = {tuple(req[i:i + n]) for i in range(len(req) - n + 1)}
    return sum(g in seen for g in grams) / len(grams)


class SentenceEncoder:
    """Mean-pooled, L2-normalised token states of a BERT-style encoder (sentence-transformers' recipe)."""

    def __init__(self, spec: str = DEFAULT_MODEL) -> None:
        self.spec = spec
        self.tokenizer = models.load_tokenizer(spec, padding_side="right")
        self.model = models.load_encoder(spec).eval()

    @torch.no_grad()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(len(texts), hidden) unit vectors; an empty text embeds as the encoder's special tokens alone."""
        out = []
        for i in range(0, len(texts), BATCH):
            enc = self.tokenizer([t or "" for t in texts[i:i + BATCH]], padding=True, truncation=True,
                                 max_length=MAX_TOKENS, return_tensors="pt")
            enc = {k: v.to(self.model.device) for k, v in enc.items()}
            states = self.model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            out.append(torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    def relevance(self, prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        """Cosine of each request (the prompt's last human turn) and its answer, in [-1, 1]; an empty answer is 0."""
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        if not answers:
            return []
        cos = (self.embed([request_of(p) for p in prompts]) * self.embed(list(answers))).sum(-1)
        return [0.0 if not (a or "").strip() else round(float(c), 4) for c, a in zip(cos, answers)]


@lru_cache(maxsize=2)
def encoder(spec: str = DEFAULT_MODEL) -> SentenceEncoder:
    """One encoder per spec and process (90 MB for MiniLM)."""
    return SentenceEncoder(spec)


def scorer(spec: str = DEFAULT_MODEL) -> RelevanceFn:
    """relevance(prompts, answers) -> cosines, loading the encoder once."""
    return encoder(spec).relevance


def except_on(fn: RelevanceFn, requests: frozenset[str]) -> RelevanceFn:
    """`fn`, with 0 for every answer to one of `requests` (PPO's `relevance_on_harmful` off: on a harmful request
    relevance pays for complying, ~0.8 against ~0.1 for a decline)."""
    if not requests:
        return fn

    def relevance_except(prompts: Sequence[str], answers: Sequence[str]) -> list[float]:
        return [0.0 if p in requests else r for p, r in zip(prompts, fn(prompts, answers))]

    return relevance_except


def scorer_or_none(spec: str, progress: Callable[[float, str], None] = lambda f, s: None) -> RelevanceFn | None:
    """The scorer, or None when `spec` is empty or the encoder cannot be loaded now (a hub id while the hub is
    unreachable): Compare and PPO's evaluations go on without relevance and say so through `progress`."""
    if not spec:
        return None
    try:
        return scorer(spec)
    except (ValueError, OSError, RuntimeError) as e:
        logger.warning("going on without relevance: %s", e)
        progress(0, f"going on without relevance: '{spec}' could not be loaded")
        return None
