"""How much can a reward model give a reader at all? Best-of-k by the reward model against one base sample.

PPO can at best find what its reward model prefers. Best-of-k sampling asks the reward model directly, with no
training: for each prompt the base policy samples 1 + k answers (Compare's settings: temperature 0.7, 48 tokens);
"base" is the first, "best_of_k" the one of the other k the reward model scores highest (so the base answer is an
independent sample, never also a candidate). Best-of-4 moves the policy by log 4 - 3/4 = 0.64 nats of KL (Stiennon
et al. 2020), the size of the default PPO run's last steps. If readers do not prefer these answers, the reward
model's taste, not PPO, is the limit.

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
from lab.data import load_prompts
from lab.generate import GenerateConfig, generate_batch, load_dtype
from lab.presets import get_preset
from lab.reward_model import load_reward_model, reward_texts
from lab.stats import bootstrap_mean


def sample_answers(model, tokenizer, prompts: list[str], gen: GenerateConfig, n: int, seed: int) -> list[list[str]]:
    """n answers per prompt: answers[j][i] is prompt i's j-th sample (each batch of each draw its own seed). An
    answer cut at the token limit ends with " …" (as in the Feedback tab's blind votes), on both sides alike."""
    size = gen.batch_size or 24
    answers = []
    for j in range(n):
        drawn: list[str] = []
        for b, start in enumerate(range(0, len(prompts), size)):
            drawn += generate_batch(model, tokenizer, prompts[start : start + size], gen,
                                    seed=1000 * seed + 10 * j + b, cut_mark=" …")
        answers.append(drawn)
    return answers


def one_seed(seed: int, args: argparse.Namespace, model, tokenizer, prompts: list[str], gen: GenerateConfig,
             out: Path) -> dict:
    started = time.perf_counter()
    if args.reward_model:
        run = Path(args.reward_model.format(seed=seed))
    else:  # the cpu defaults on the bundled pairs, as the Reward tab trains them
        run = out / f"rm-{seed}"
        run_cli(["reward", "--train", "bundled", "--out", str(run), "--seed", str(seed)])
    proxy = load_reward_model(run)
    judge = load_reward_model(run / "judge") if (run / "judge").exists() else None
    answers = sample_answers(model, tokenizer, prompts, gen, 1 + args.k, seed)
    proxy_scores = [proxy.score(reward_texts(prompts, a)) for a in answers]
    judge_scores = [judge.score(reward_texts(prompts, a)) for a in answers] if judge else None
    rows = []
    for i, prompt in enumerate(prompts):
        best = max(range(1, 1 + args.k), key=lambda j: proxy_scores[j][i])
        row = {"index": i, "prompt": prompt, "answer_a": answers[0][i], "answer_b": answers[best][i],
               "reward_a": proxy_scores[0][i], "reward_b": proxy_scores[best][i]}
        if judge_scores:
            row.update(judge_a=judge_scores[0][i], judge_b=judge_scores[best][i])
        rows.append(row)
    csv_path = out / f"compare-{seed}.csv"
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    result: dict = {"seed": seed, "k": args.k, "reward_model": str(run), "n_prompts": len(rows)}
    for name in ("reward", "judge") if judge_scores else ("reward",):
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
    if args.k < 2:
        raise SystemExit(f"--k {args.k}: best-of-k needs at least 2 candidates")
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-best-of-n-"))
    out.mkdir(parents=True, exist_ok=True)
    preset = get_preset("cpu")
    gen = GenerateConfig.from_dict(preset.generate).validate()
    prompts = load_prompts(args.prompts, limit=args.n_prompts)[: args.n_prompts]
    model = models.load_causal_lm(preset.policy, dtype=load_dtype(gen.precision)).eval()
    tokenizer = models.load_tokenizer(preset.policy)
    for seed in args.seeds:
        print(json.dumps(one_seed(seed, args, model, tokenizer, prompts, gen, out)), flush=True)


if __name__ == "__main__":
    main()
