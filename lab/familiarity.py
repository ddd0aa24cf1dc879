"""Familiarity: which prompts are unlike every request a reward model learned from.

A reward model's accuracy is known only where it was measured: on requests like its held-out pairs'. For each prompt
the nearest of the reward run's training requests by the cosine of their sentence embeddings (the relevance
encoder, all-MiniLM-L6-v2); the same for each of the run's own held-out requests. A prompt is **far** when it is
less like any training request than 9 in 10 of the held-out requests are (below their 10th percentile): the floor
comes from the run itself, so it adapts to any data and any encoder.

Measured (README, *Stop 55*): with the demo set's reward models (floor 0.28-0.30), 2-4 of the 48 held-out demo
prompts were far, 8-9 of 40 ordinary and edgy requests written outside the demo set, and 20-29 and 22-30 of two
draws of 48 hh-rlhf harmful requests; with the hh mix's reward models (hh pairs in their data; floor 0.35) 5-7 of the
first draw. Over 12 Comparisons of demo-set runs on those hh requests the proxy's interval was above 0 in 10 while
blind readers split 885-932 (RLHF ahead in 4); with the hh mix's reward models, 6 of 6 and 500-400 (ahead in 6).
Compare says so in its verdict from a quarter of the prompts up: in all 12 of the first, none of the second.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any, Sequence

from lab import relevance
from lab.reward_data import run_pairs
from lab.reward_model import reward_run_config

FAR_QUANTILE = 0.1  # far: less alike than this share of the reward run's own held-out requests
WATCH_SHARE = 0.25  # the verdict says so from this share far up (demo held-out 4-8%, hh 42-62%; hh mix on hh 10-15%)
MAX_REQUESTS = 2000  # a seeded sample of each side beyond this (hh-rlhf on the Space: ~160k training pairs)
MIN_HELD_OUT = 5  # fewer held-out requests give no floor worth the name

logger = logging.getLogger(__name__)


def _sample(texts: list[str], seed: int) -> list[str]:
    return texts if len(texts) <= MAX_REQUESTS else random.Random(seed).sample(texts, MAX_REQUESTS)


def reward_requests(reward_path: str | Path | None) -> tuple[list[str], list[str]] | None:
    """(training requests, held-out requests) of a reward run, each distinct request once: the last human turn of
    the pairs its proxy trained on (not the judge's share) and of its held-out pairs, split as the run split them
    (lab.reward_data.run_pairs); a held-out request that is also a training one is left out of the held-out side.
    None where the run cannot be told (a hub id, a bare model folder, a source that is gone)."""
    config = reward_run_config(reward_path)
    if config.get("kind") != "reward" or not reward_path:
        return None
    try:
        train, held_out = run_pairs(reward_path)
    except (OSError, ValueError) as exc:  # no source recorded, or it moved or changed since: no floor, no claim
        logger.info("familiarity: the reward run's data cannot be read again (%s)", exc)
        return None
    trained = sorted({relevance.request_of(p.prompt) for p in train} - {""})
    held = sorted({relevance.request_of(p.prompt) for p in held_out} - {""} - set(trained))
    seed = int(config.get("seed", 42))
    return _sample(trained, seed), _sample(held, seed + 1)


def nearest(encoder: Any, texts: Sequence[str], reference: Any) -> list[float]:
    """For each text, its largest cosine with any reference text (embedded by `encoder`, lab.relevance's; `reference`
    is their embeddings, unit rows)."""
    if not texts or len(reference) == 0:
        return []
    return [round(float(x), 4) for x in (encoder.embed(list(texts)) @ reference.T).max(dim=1).values]


def quantile(values: Sequence[float], q: float) -> float:
    """The lower q-quantile, no interpolation: with under 11 values the 10th percentile is their minimum, so a prompt
    is far only when it is less alike than every held-out request."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * (len(ordered) - 1))))]


def measure(prompts: Sequence[str], reward_path: str | Path | None, encoder: Any) -> dict[str, Any] | None:
    """How alike each prompt is to the reward run's training requests, and which are far (module docstring):
    {"nearest": per prompt, "far": indices, "n", "floor", "trained", "held_out"}; None where the run's requests
    or the encoder are not to be had, or it held out too few requests to set a floor."""
    found = reward_requests(reward_path) if encoder is not None else None
    if not found or len(found[1]) < MIN_HELD_OUT or not found[0] or not prompts:
        return None
    train, held_out = found
    reference = encoder.embed(train)  # once, for both sides
    floor = quantile(nearest(encoder, held_out, reference), FAR_QUANTILE)
    near = nearest(encoder, [relevance.request_of(p) for p in prompts], reference)
    return {"nearest": near, "far": [i for i, x in enumerate(near) if x < floor], "n": len(prompts),
            "floor": floor, "trained": len(train), "held_out": len(held_out)}


def summary(measured: dict[str, Any] | None) -> dict[str, Any] | None:
    """What Compare's summary keeps: the counts, the floor and which prompts are far, not every prompt's cosine."""
    if not measured:
        return None
    return {"far": len(measured["far"]), "n": measured["n"], "floor": measured["floor"],
            "trained": measured["trained"], "held_out": measured["held_out"], "far_prompts": measured["far"]}


def watch(familiar: dict[str, Any] | None) -> list[str]:
    """In words, for Compare's verdict: enough prompts unlike the reward model's data that its gain is a guess."""
    if not isinstance(familiar, dict) or not familiar.get("n") or familiar.get("far", 0) < WATCH_SHARE * familiar["n"]:
        return []
    return [f"{familiar['far']} of {familiar['n']} prompts are unlike any request the reward model learned from "
            f"(less alike than 9 in 10 of its held-out requests), so there its score, and a judge's trained on the "
            f"same data, are guesses"]
