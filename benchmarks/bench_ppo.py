"""Seconds per PPO step on the cpu preset, split into rollout / score / forward / optimise: ours vs a seed-style loop.

Both run lab.ppo's loop on the same model, prompts, batch size, response lengths (the same seeded draws) and
number of optimiser updates. Only how the work is batched differs:
- ours: the preset's settings, i.e. the whole batch generated at once, mini-batches of `mini_batch_size`,
  bfloat16 autocast for generation and every forward pass;
- seed-style (TRL 0.x's PPOTrainer defaults): generation in chunks of 4 prompts, mini_batch_size=1 with
  gradient accumulation over the same number of rollouts per update, float32.
Each method runs in its own process so its peak memory (ru_maxrss) is its own. Prints one JSON line per method,
then the ratios.

    .venv/bin/python benchmarks/bench_ppo.py [--steps 4] [--reward-model RUN_DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from dataclasses import asdict, replace

import torch

from lab import ppo
from lab.data import load_prompts
from lab.presets import get_preset

SPLIT = ("time/rollout", "time/score", "time/forward", "time/optimize", "time/step")


def seed_style(cfg: ppo.PPOConfig) -> ppo.PPOConfig:
    """The same work batched the way the seed's PPOTrainer did it."""
    per_update = cfg.mini_batch_size * cfg.gradient_accumulation_steps
    return replace(cfg, generation_batch_size=4, mini_batch_size=1, gradient_accumulation_steps=per_update, bf16=False)


def score_fn(reward_model: str | None) -> ppo.ScoreFn:
    if reward_model:
        return ppo.reward_score_fn(reward_model)
    # a stand-in as cheap as a reward model's forward pass is not: scoring is timed separately anyway
    return lambda prompts, responses: [float(len(set(r.split()))) for r in responses]


def run_method(method: str, steps: int, reward_model: str | None) -> dict:
    preset = get_preset("cpu")
    cfg = ppo.config_from(preset, steps=steps)
    cfg = seed_style(cfg) if method == "seed" else cfg
    torch.manual_seed(cfg.seed)
    model, tokenizer = ppo.load_trainable_policy(preset.policy, False, preset.lora)
    value_head = ppo.new_value_head(model)
    prompts = load_prompts(preset.ppo_prompts)
    started = time.perf_counter()
    history = ppo.run_ppo(model, value_head, tokenizer, prompts, score_fn(reward_model), cfg)
    wall = time.perf_counter() - started
    timed = history[1:] or history  # the first step warms caches and kernels up
    row = {"method": method, "steps": len(history), "wall_s": round(wall, 2),
           **{k: round(sum(m[k] for m in timed) / len(timed), 3) for k in SPLIT},
           "response_len_mean": round(sum(m["tokens/response_len_mean"] for m in history) / len(history), 2),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
           "threads": torch.get_num_threads(),
           "config": {k: v for k, v in asdict(cfg).items() if k in (
               "batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs", "output_min_length",
               "output_max_length", "generation_batch_size", "bf16")}}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4, help="PPO steps per method (the first is not timed)")
    parser.add_argument("--reward-model", help="a reward run folder (default: a cheap stand-in reward)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--method", choices=("ours", "seed"), help=argparse.SUPPRESS)  # one method, in a child
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.method:
        print(json.dumps(run_method(args.method, args.steps, args.reward_model)), flush=True)
        return
    rows = {}
    for method in ("ours", "seed"):
        cmd = [sys.executable, __file__, "--method", method, "--steps", str(args.steps)]
        cmd += ["--reward-model", args.reward_model] if args.reward_model else []
        cmd += ["--threads", str(args.threads)] if args.threads else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows[method] = json.loads(out.strip().splitlines()[-1])
        print(json.dumps(rows[method]), flush=True)
    ours, seed = rows["ours"], rows["seed"]
    print(json.dumps({
        "speedup_step": round(seed["time/step"] / ours["time/step"], 2),
        **{f"speedup_{k.split('/')[1]}": round(seed[k] / max(ours[k], 1e-9), 2) for k in SPLIT[:-1]},
        "peak_rss_ratio": round(ours["peak_rss_mb"] / seed["peak_rss_mb"], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
