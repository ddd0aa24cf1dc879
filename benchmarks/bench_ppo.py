"""Seconds per PPO step on the cpu preset, split into rollout / score / forward / optimise: ours vs a seed-style loop.

Both run lab.ppo's loop on the same model, prompts, batch size, response lengths (the same seeded draws) and
number of optimiser updates. Only how the work is batched differs:
- ours: the preset's settings, i.e. the whole batch generated at once, mini-batches of `mini_batch_size`,
  bfloat16 autocast for generation and every forward pass (where the CPU has native bf16);
- seed-style (TRL 0.x's PPOTrainer): generation in chunks of 4 prompts, mini_batch_size=1 with gradient
  accumulation over the same number of rollouts per update, float32.
Each method runs in its own process (so ru_maxrss is its own peak memory) and the two take turns, one PPO step
each, so a busy shared machine slows both alike. Prints one JSON line per method, then the ratios.

    .venv/bin/python benchmarks/bench_ppo.py [--steps 4] [--reward-model RUN_DIR] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from dataclasses import asdict, replace

import torch

from lab import ppo
from lab.data import load_prompts
from lab.presets import get_preset

SPLIT = ("time/rollout", "time/score", "time/forward", "time/optimize", "time/step")
SHOWN = ("batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs", "output_min_length",
         "output_max_length", "generation_batch_size", "bf16")


def seed_style(cfg: ppo.PPOConfig) -> ppo.PPOConfig:
    """The same work batched the way the seed's PPOTrainer did it."""
    per_update = cfg.mini_batch_size * cfg.gradient_accumulation_steps
    return replace(cfg, generation_batch_size=4, mini_batch_size=1, gradient_accumulation_steps=per_update, bf16=False)


def score_fn(reward_model: str | None) -> ppo.ScoreFn:
    if reward_model:
        return ppo.reward_score_fn(reward_model)
    return lambda prompts, responses: [float(len(set(r.split()))) for r in responses]  # a stand-in reward


def child(method: str, steps: int, reward_model: str | None) -> None:
    """Run `steps` PPO steps, each when the parent says "go" on stdin; print each step's metrics, then a summary."""
    preset = get_preset("cpu")
    cfg = ppo.config_from(preset, steps=steps)
    cfg = seed_style(cfg) if method == "seed" else cfg
    torch.manual_seed(cfg.seed)
    model, tokenizer = ppo.load_trainable_policy(preset.policy, False, preset.lora)
    value_head = ppo.new_value_head(model)
    prompts, scorer = load_prompts(preset.ppo_prompts), score_fn(reward_model)

    def report(metrics: dict, samples: list) -> None:
        print(json.dumps({k: metrics[k] for k in (*SPLIT, "tokens/response_len_mean")}), flush=True)
        sys.stdin.readline()  # wait for the other method's step

    sys.stdin.readline()
    ppo.run_ppo(model, value_head, tokenizer, prompts, scorer, cfg, on_step=report)
    print(json.dumps({"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                      "threads": torch.get_num_threads(), "config": {k: asdict(cfg)[k] for k in SHOWN}}), flush=True)


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
        child(args.method, args.steps, args.reward_model)
        return
    procs = {}
    for method in ("ours", "seed"):
        cmd = [sys.executable, __file__, "--method", method, "--steps", str(args.steps)]
        cmd += ["--reward-model", args.reward_model] if args.reward_model else []
        cmd += ["--threads", str(args.threads)] if args.threads else []
        procs[method] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    steps: dict[str, list[dict]] = {m: [] for m in procs}
    for _ in range(args.steps):
        for method, proc in procs.items():  # one step each, in turn
            proc.stdin.write("go\n")
            proc.stdin.flush()
            steps[method].append(json.loads(proc.stdout.readline()))
    rows = {}
    for method, proc in procs.items():
        proc.stdin.write("go\n")
        proc.stdin.flush()
        tail = json.loads(proc.stdout.readline())
        proc.wait()
        timed = steps[method][1:] or steps[method]  # the first step warms caches and kernels up
        rows[method] = {"method": method, "steps": len(steps[method]),
                        **{k: round(sum(s[k] for s in timed) / len(timed), 3) for k in SPLIT},
                        "response_len_mean": round(sum(s["tokens/response_len_mean"] for s in steps[method])
                                                   / len(steps[method]), 2), **tail}
        print(json.dumps(rows[method]), flush=True)
    ours, seed = rows["ours"], rows["seed"]
    print(json.dumps({
        "speedup_step": round(seed["time/step"] / ours["time/step"], 2),
        **{f"speedup_{k.split('/')[1]}": round(seed[k] / max(ours[k], 1e-9), 2) for k in SPLIT[:-1]},
        "peak_rss_ratio": round(ours["peak_rss_mb"] / seed["peak_rss_mb"], 2),
    }), flush=True)


if __name__ == "__main__":
    main()
