"""Reward-model training throughput: dynamic padding (ours) against the seed's fixed max_length=512 padding.

Same pairs, same backbone, same training step (forward, Bradley-Terry loss, backward, AdamW step); only the
padding differs. Modes: `fixed-512` (the seed: every text padded to 512 tokens), `dynamic` (padded to the longest
text of a random batch) and `dynamic-grouped` (batches of similar length, as `lab.reward` trains). Steps of the
modes are interleaved so that load from other processes slows them alike. Prints one JSON line per mode, then
the ratios.

    .venv/bin/python benchmarks/bench_reward.py [--data SOURCE] [--backbone SPEC] [--pairs N] [--batch-size B]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any

import torch

from lab import models
from lab.data import load_pairs
from lab.reward_model import encode, prepare_tokenizer

SEED_LENGTH = 512  # the seed tokenised every text with padding="max_length", max_length=512


def fixed_batches(tokenizer: Any, batches: list[list[str]]) -> list[dict[str, torch.Tensor]]:
    """The seed's way: every text padded (and cut) to 512 tokens."""
    return [
        tokenizer(b, padding="max_length", truncation=True, max_length=SEED_LENGTH, return_tensors="pt")
        for b in batches
    ]


def dynamic_batches(tokenizer: Any, batches: list[list[str]], max_length: int) -> list[dict[str, torch.Tensor]]:
    """Ours: left-truncated ids, padded only to the longest text of each batch."""
    return [tokenizer.pad({"input_ids": encode(tokenizer, b, max_length)}, return_tensors="pt") for b in batches]


def text_batches(pairs: list, batch_pairs: int) -> list[list[str]]:
    """Texts in the trainer's layout: per batch, the chosen texts first, then the rejected ones."""
    chunks = [pairs[i : i + batch_pairs] for i in range(0, len(pairs), batch_pairs)]
    return [[p.chosen_text for p in c] + [p.rejected_text for p in c] for c in chunks]


def by_length(tokenizer: Any, pairs: list, max_length: int) -> list:
    """Pairs sorted by their longer text, as the length-grouped sampler batches them."""
    lengths = [max(map(len, encode(tokenizer, [p.chosen_text, p.rejected_text], max_length))) for p in pairs]
    return [p for _, p in sorted(zip(lengths, pairs), key=lambda t: t[0])]


def timed_steps(model: Any, modes: dict[str, list[dict[str, torch.Tensor]]]) -> dict[str, float]:
    """Seconds per mode for one training step on each of its batches, the modes' steps interleaved."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()

    def step(batch: dict[str, torch.Tensor]) -> float:
        start = time.perf_counter()
        rewards = model(**batch).logits[:, 0]
        chosen, rejected = rewards.chunk(2)
        loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return time.perf_counter() - start

    step(next(iter(modes.values()))[0])  # warm-up
    seconds = dict.fromkeys(modes, 0.0)
    for i in range(max(len(b) for b in modes.values())):
        for name, batches in modes.items():
            if i < len(batches):
                seconds[name] += step(batches[i])
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="bundled", help="pairs: 'bundled' or a .jsonl/.jsonl.gz file")
    parser.add_argument("--backbone", default="embedded:all-minilm-l6-v2")
    parser.add_argument("--pairs", type=int, default=32, help="pairs timed per mode")
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per step")
    parser.add_argument("--max-length", type=int, default=SEED_LENGTH, help="truncation for the dynamic mode")
    args = parser.parse_args()

    torch.manual_seed(0)
    pairs = load_pairs(args.data).pairs
    random.Random(0).shuffle(pairs)
    pairs = pairs[: args.pairs]
    tokenizer = prepare_tokenizer(models.load_tokenizer(args.backbone, padding_side="right"))
    model = models.load_reward_backbone(args.backbone)
    model.config.pad_token_id = tokenizer.pad_token_id
    plain = text_batches(pairs, args.batch_size)
    grouped = text_batches(by_length(tokenizer, pairs, args.max_length), args.batch_size)
    modes = {
        "fixed-512": fixed_batches(tokenizer, plain),
        "dynamic": dynamic_batches(tokenizer, plain, args.max_length),
        "dynamic-grouped": dynamic_batches(tokenizer, grouped, args.max_length),
    }
    seconds = timed_steps(model, modes)
    rate = {name: len(pairs) / s for name, s in seconds.items()}
    for name, batches in modes.items():
        tokens = sum(int(b["input_ids"].numel()) for b in batches)
        print(json.dumps({"mode": name, "pairs": len(pairs), "seconds": round(seconds[name], 2),
                          "pairs_per_s": round(rate[name], 3), "padded_tokens": tokens}), flush=True)
    print(json.dumps({
        "speedup_dynamic_vs_fixed_512": round(rate["dynamic"] / rate["fixed-512"], 2),
        "speedup_dynamic_grouped_vs_fixed_512": round(rate["dynamic-grouped"] / rate["fixed-512"], 2),
        "data": args.data, "backbone": args.backbone, "batch_size": args.batch_size, "max_length": args.max_length,
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
