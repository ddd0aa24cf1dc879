"""The reward stage's pairs: training and held-out pairs from the sources, and the judge's share of the training
pairs."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from lab.data import Pair
from lab.hub_data import hub_test_source
from lab.runs import Run
from lab.sources import load_pairs

JUDGE_SEED_OFFSET = 1000


def split_pairs(data: str, *, eval_data: str, eval_fraction: float, max_pairs: int, max_eval_pairs: int,
                seed: int) -> tuple[list[Pair], list[Pair]]:
    """Training and held-out pairs: `eval_data`, else the source's test split (a hub dataset's too), else a seeded
    `eval_fraction`. A hub dataset's pairs are a seeded sample across its files (hh-rlhf: all four subsets)."""
    source = load_pairs(data, limit=max_pairs or None, seed=seed)
    hub_test = None if eval_data else hub_test_source(data)
    if eval_data or hub_test:
        eval_source = eval_data or hub_test
        train = source.pairs
        held_out = load_pairs(eval_source, limit=max_eval_pairs or None, seed=seed).pairs
    elif source.split("train") and source.split("test"):
        train, held_out = source.split("train"), source.split("test")
    else:
        shuffled = list(source.pairs)
        random.Random(seed).shuffle(shuffled)
        n_eval = round(len(shuffled) * eval_fraction)
        if eval_fraction > 0 and len(shuffled) >= 2:
            n_eval = min(max(n_eval, 1), len(shuffled) - 1)
        train, held_out = shuffled[n_eval:], shuffled[:n_eval]
    if max_eval_pairs:
        held_out = held_out[: max_eval_pairs]
    if not train:
        raise ValueError(f"no training pairs left in '{data}' after holding out the evaluation pairs")
    return train, held_out


def _pair_key(pair: Pair) -> tuple[str, str, str]:
    return (pair.prompt, pair.chosen, pair.rejected)


MIN_JUDGE_PAIRS = 4  # distinct pairs; fewer train no judge worth reading, and the proxy keeps them all


def judge_split(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(proxy's pairs, judge's pairs): a seeded `fraction` of the training pairs for the judge, the rest for the
    proxy. Identical pairs always land on the same side, so no text is trained on by both. Where the fraction
    comes to fewer than MIN_JUDGE_PAIRS distinct pairs (a few votes of a feedback set under the cpu preset's
    default judge), there is no judge: (pairs, [])."""
    if fraction <= 0:
        return list(pairs), []
    groups: dict[tuple[str, str, str], list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(_pair_key(pair), []).append(pair)
    keys = list(groups)
    random.Random(seed + JUDGE_SEED_OFFSET).shuffle(keys)
    n_judge = min(round(len(keys) * fraction), len(keys) - 1)
    if n_judge < MIN_JUDGE_PAIRS:
        return list(pairs), []
    judge_keys = set(keys[:n_judge])
    return ([p for p in pairs if _pair_key(p) not in judge_keys], [p for p in pairs if _pair_key(p) in judge_keys])


def run_pairs(reward_dir: str | Path, purpose: str = "") -> tuple[list[Pair], list[Pair]]:
    """(the pairs a reward run's proxy trained on, before augmentation; its held-out pairs): the same split and judge
    share, from the run's config and the data it recorded (a feedback source as it was pinned when the run read it).
    `reward_dir`: the run's folder or its model/ folder. ValueError where the run records no data source (`purpose`
    ends the message: what cannot be done without it)."""
    folder = Path(reward_dir)
    run = Run(folder.parent if folder.name == "model" else folder)
    config = run.config
    try:
        pinned = (run.status().get("summary") or {}).get("data")
    except (OSError, ValueError):  # no status to read: the config's source
        pinned = None
    data = pinned or config.get("data")
    if not data:
        raise ValueError(f"the reward run '{run.id}' records no data source{purpose}")
    seed = config.get("seed", 42)
    train, held_out = split_pairs(data, eval_data=config.get("eval_data", ""),
                                  eval_fraction=config.get("eval_fraction", 0.1), max_pairs=config.get("max_pairs", 0),
                                  max_eval_pairs=config.get("max_eval_pairs", 0), seed=seed)
    return judge_split(train, config.get("judge_fraction", 0.0), seed)[0], held_out
