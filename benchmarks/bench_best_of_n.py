"""How much can a reward model give a reader at all? Best-of-k by the reward model against one base sample.

PPO can at best find what its reward model prefers. Best-of-k sampling asks the reward model directly, with no
training: Compare's `base` against Compare's `base best-of-k` (the cpu preset's sampling: temperature 0.7, 48
tokens), so for each prompt the base policy samples 1 + k answers, "base" is one, "best_of_k" the one of the other k
the reward model scores highest (the base answer is an independent sample, never also a candidate). Best-of-4 moves
the policy by log 4 - 3/4 = 0.64 nats of KL (Stiennon et al. 2020), the size of the default PPO run's last steps. If
readers do not prefer these answers, the reward model's taste, not PPO, is the limit.

Prints one JSON line per seed: the proxy's and the judge's paired gain (best_of_k - base, 95% bootstrap interval)
and how often each ranks best_of_k higher; writes compare-SEED.csv and the blind reading's inputs
(blind-SEED.jsonl, key-SEED.json with the sides "base" and "best_of_k") for benchmarks/blind_tally.py.

    .venv/bin/python benchmarks/bench_best_of_n.py --seeds 15 16 17   # trains a cpu-default reward model per seed
    .venv/bin/python benchmarks/bench_best_of_n.py --reward-model 'RUNS/rm-{seed}' --seeds 15 --out DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path

from bench_learning import blind_inputs, run_cli  # the same folder

from lab import models
from lab.compare import best_answers
from lab.data import load_prompts
from lab.generate import GenerateConfig, load_dtype
from lab.policies import BASE, MAX_BEST_OF, Side, best_of_label, sample
from lab.presets import get_preset
from lab.reward_model import load_reward_model, reward_texts
from lab.stats import bootstrap_mean


def one_seed(seed: int, args: argparse.Namespace, policies: dict, policy: str, prompts: list[str],
             gen: GenerateConfig, out: Path) -> dict:
    """The Compare tab's own sampling (lab.policies.sample, lab.compare.best_answers): "base" is one answer drawn with
    the seed, "best_of_k" the reward model's pick of k drawn with other seeds, batch by batch as Compare does."""
    started = time.perf_counter()
    if args.reward_model:
        run = Path(args.reward_model.format(seed=seed))
    else:  # the cpu defaults on the bundled pairs, as the Reward tab trains them
        run = out / f"rm-{seed}"
        run_cli(["reward", "--train", "bundled", "--out", str(run), "--seed", str(seed)])
    proxy = load_reward_model(run)
    judge = load_reward_model(run / "judge") if (run / "judge").exists() else None
    base = Side("a", BASE, policy, None, "")
    picker = Side("b", best_of_label(args.k), policy, None, "", best_of=args.k)
    size = gen.batch_size or 24
    rows = []
    for b, start in enumerate(range(0, len(prompts), size)):
        batch = prompts[start : start + size]
        answers = sample(base, policies, batch, gen, seed + b)
        picked, picked_rewards = best_answers(picker, policies, batch, gen, seed + b, proxy)
        rewards = proxy.score(reward_texts(batch, answers))
        for i, prompt in enumerate(batch):
            rows.append({"index": start + i, "prompt": prompt, "answer_a": answers[i], "answer_b": picked[i],
                         "reward_a": rewards[i], "reward_b": picked_rewards[i]})
    if judge:
        asked = [r["prompt"] for r in rows]
        for key in ("a", "b"):
            for row, score in zip(rows, judge.score(reward_texts(asked, [r[f"answer_{key}"] for r in rows]))):
                row[f"judge_{key}"] = score
    csv_path = out / f"compare-{seed}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result: dict = {"seed": seed, "k": args.k, "reward_model": str(run), "n_prompts": len(rows)}
    for name in ("reward", "judge") if judge else ("reward",):
        diffs = [r[f"{name}_b"] - r[f"{name}_a"] for r in rows]
        result[f"{name}_gain"] = {**bootstrap_mean(diffs), "b_higher": sum(d > 0 for d in diffs)}
    result["blind"] = blind_inputs(csv_path, seed, out, other=f"best_of_{args.k}")
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reward-model", help="a reward run folder, '{seed}' in it replaced per seed (default: train one "
                   "per seed with the cpu defaults)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1])
    p.add_argument("--k", type=int, default=4, help="candidates the reward model chooses among")
    p.add_argument("--prompts", default="bundled:heldout", help="prompts (PPO's and the reward model's unseen ones)")
    p.add_argument("--n-prompts", type=int, default=48)
    p.add_argument("--out", help="folder for the files (default: a temporary one)")
    args = p.parse_args()
    if not 2 <= args.k <= MAX_BEST_OF:
        raise SystemExit(f"--k {args.k}: best-of-k takes k from 2 to {MAX_BEST_OF}, as Compare does")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-best-of-n-"))
    out.mkdir(parents=True, exist_ok=True)
    preset = get_preset("cpu")
    gen = GenerateConfig.from_dict(preset.generate).validate()
    prompts = load_prompts(args.prompts, limit=args.n_prompts)[: args.n_prompts]
    policies = {preset.policy: (models.load_causal_lm(preset.policy, dtype=load_dtype(gen.precision)).eval(),
                                models.load_tokenizer(preset.policy))}
    for seed in args.seeds:
        print(json.dumps(one_seed(seed, args, policies, preset.policy, prompts, gen, out)), flush=True)


if __name__ == "__main__":
    main()
