"""Does the default pipeline make the model better? Reward -> PPO -> Compare through the CLI, several seeds.

For each seed: `lab reward` (or a given reward run), `lab ppo` against it, `lab compare` base vs the PPO run on
prompts PPO never trained on. Prints one JSON line per seed (wall time of each stage, the PPO tab's own reward
first vs last 5 steps with the noise of those steps, Compare's paired B − A reward raw and with the length
effect removed, toxicity on both sides) and a closing line with the share of seeds where each interval lies
above (or below) zero.

    .venv/bin/python benchmarks/bench_learning.py --seeds 1 2 3
    .venv/bin/python benchmarks/bench_learning.py --pairs ../shared/data/hh-harmless-dev.jsonl.gz \
        --ppo-prompts FILE --compare-prompts FILE --seeds 1 2 3
    .venv/bin/python benchmarks/bench_learning.py --ppo-args "--advantage gae --samples-per-prompt 1"
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_ppo import ceiling  # the same folder: the machine's matmul rates, measured the same way


def run_cli(args: list[str]) -> tuple[list[dict], float]:
    """`python -m lab ARGS`: its JSON lines and wall seconds; the stage's stderr on failure."""
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(f"{' '.join(args[:1])} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")], seconds


def blind_inputs(compare_csv: Path, seed: int, out: Path, other: str = "rlhf", draws: int = 1) -> dict:
    """The blind reading's inputs: each prompt with its two answers as "answer 1" and "answer 2", which side is
    base shuffled per prompt (seeded), in blind-SEED.jsonl; the key in key-SEED.json, a separate file the reader is
    not given, names the sides "base" and `other` (answer_b's side). benchmarks/blind_tally.py unblinds a reader's
    verdicts against it.

    Where Compare answered each prompt several times, `draws` > 1 writes one more file per further answer,
    blind-SEED-dD.jsonl (one item a prompt each, shuffled afresh, for a separate reader), all in the one key:
    blind_tally.py --by-prompt then counts each prompt for the side its readers preferred more often."""
    with compare_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"prompt", "answer_a", "answer_b"} - set(reader.fieldnames or ())
        rows = list(reader)
    if missing or not rows:
        raise ValueError(f"{compare_csv}: " + (f"no {', '.join(sorted(missing))} column" if missing else
                                               "no answers") + ": not a finished Compare table, nothing to read blind")
    files = []
    key: dict = {}
    for d in range(draws):
        mine = [r for r in rows if int(r.get("draw") or 0) == d]  # each prompt's d-th answers
        if not mine:
            break
        rng = random.Random(1000 + seed + 7919 * d)  # draw 0 keeps the files of earlier stops
        blind = []
        for i, r in enumerate(mine):
            item = f"s{seed}-{i:03d}" + (f"-d{d}" if d else "")
            base_first = rng.random() < 0.5
            first, second = (r["answer_a"], r["answer_b"]) if base_first else (r["answer_b"], r["answer_a"])
            blind.append({"id": item, "prompt": r["prompt"], "answer_1": first, "answer_2": second})
            key[item] = {"answer_1": "base" if base_first else other, "answer_2": other if base_first else "base",
                         "prompt_index": int(r.get("index") or i), "draw": d}
        rng.shuffle(blind)  # the reading order tells nothing either
        files.append(out / (f"blind-{seed}.jsonl" if d == 0 else f"blind-{seed}-d{d}.jsonl"))
        files[-1].write_text("".join(json.dumps(b, ensure_ascii=False) + "\n" for b in blind))
    key_file = out / f"key-{seed}.json"
    key_file.write_text(json.dumps(key, indent=1))
    return {"answers": str(files[0]), "more_answers": [str(f) for f in files[1:]], "key": str(key_file),
            "n": sum(1 for k in key.values() if k["draw"] == 0)}


def one_seed(seed: int, args: argparse.Namespace, out: Path) -> dict:
    row: dict = {"seed": seed}
    reward_run = args.reward_model.format(seed=seed) if args.reward_model else None
    if not reward_run:
        reward_run = str(out / f"rm-{seed}")
        lines, row["seconds_reward"] = run_cli(["reward", "--train", args.pairs, "--out", reward_run,
                                                "--seed", str(seed), *shlex.split(args.reward_args)])
        row["reward_accuracy"] = lines[-1].get("eval_accuracy")
    ppo_run = str(out / f"ppo-{seed}")
    prompts = ["--prompts", args.ppo_prompts] if args.ppo_prompts else []  # none: the lab's default (stop 54: the
    # cpu preset joins a reward model's own pair sets' requests to the bundled prompts)
    lines, row["seconds_ppo"] = run_cli(["ppo", "--reward-model", reward_run, *prompts,
                                         "--out", ppo_run, "--seed", str(seed), *shlex.split(args.ppo_args)])
    steps = [r for r in lines if "env/reward_mean" in r]
    summary = lines[-1]  # the PPO summary: first / last 5 steps' mean reward and the standard error of the rise
    row.update({"reward_first": summary["reward_first"], "reward_last": summary["reward_last"],
                "rise_se": summary["reward_rise_se"]})
    # the evaluations on fixed held-out prompts (lab.evaluate): proxy / judge change with intervals, the rates
    row.update({k: summary.get(k) for k in ("eval_steps", "eval_reward_change", "eval_judge_change",
                                            "eval_refusal_first", "eval_refusal_last", "eval_degenerate_first",
                                            "eval_degenerate_last")})
    row.update({"ppo_steps": len(steps), "kl_last": steps[-1]["objective/kl"],
                "response_tokens": statistics.fmean(r["tokens/response_len_mean"] for r in steps),
                "ppo_seconds_per_step": statistics.fmean(r["time/step"] for r in steps),
                # the rollouts the text rules call degenerate (env/degenerate, logged since stop 48), all steps
                "rollouts_degenerate": sum(r.get("env/degenerate", 0.0) for r in steps) / len(steps)})
    compare_csv = out / f"compare-{seed}.csv"
    lines, row["seconds_compare"] = run_cli(["compare", "--run", ppo_run, "--prompts", args.compare_prompts,
                                             "--seed", str(seed), "--out", str(compare_csv),
                                             *shlex.split(args.compare_args)])
    row["blind"] = blind_inputs(compare_csv, seed, out, draws=args.blind_draws)
    summary = lines[-1]
    paired = summary["paired"]
    row.update({"toxicity_base": summary["toxicity_base"], "toxicity_rlhf": summary["toxicity_rlhf"],
                "reward_base": summary["reward_base"], "reward_rlhf": summary["reward_rlhf"],
                "n_prompts": paired["n"], "length_base": paired["length_a"], "length_rlhf": paired["length_b"],
                "reward_gain": paired["reward"], "reward_gain_length_adjusted": paired["reward_length_adjusted"],
                "toxicity_change": paired["toxicity"], "length_reward_corr": paired.get("length_reward_corr")})
    row.update({"judge_gain": summary.get("paired_judge"), "relevance_gain": summary.get("paired_relevance"),
                "refusal_base": summary.get("refusal_base"),
                "refusal_rlhf": summary.get("refusal_rlhf"), "degenerate_base": summary.get("degenerate_base"),
                "degenerate_rlhf": summary.get("degenerate_rlhf"), "diagnostics": summary.get("diagnostics"),
                "verdict": summary.get("verdict")})
    row["seconds_total"] = sum(row.get(k, 0.0) for k in ("seconds_reward", "seconds_ppo", "seconds_compare"))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--pairs", default="bundled", help="reward-model training pairs")
    p.add_argument("--reward-model", help="use this reward run instead of training one per seed; "
                   "'{seed}' in it is replaced by each seed ('runs/rm-{seed}')")
    p.add_argument("--ppo-prompts", default="", help="PPO's prompt source (default: the lab's for the reward run)")
    p.add_argument("--compare-prompts", default="bundled:heldout", help="prompts PPO never trained on")
    p.add_argument("--reward-args", default="", help="extra `lab reward` flags")
    p.add_argument("--ppo-args", default="", help="extra `lab ppo` flags")
    p.add_argument("--compare-args", default="", help="extra `lab compare` flags")
    p.add_argument("--blind-draws", type=int, default=4, help="blind files per seed, one per answer Compare drew "
                   "a prompt (the cpu preset draws 4): one reader each, tallied per prompt with --by-prompt")
    p.add_argument("--out", help="folder for the runs (default: a temporary one)")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-learning-"))
    rows = []
    for seed in args.seeds:
        rows.append(one_seed(seed, args, out))
        print(json.dumps(rows[-1], default=float), flush=True)

    def share(key: str, side: str) -> str:
        hits = sum((r[key]["lo"] > 0) if side == "above" else (r[key]["hi"] < 0) for r in rows)
        return f"{hits}/{len(rows)}"

    print(json.dumps({
        "seeds": len(rows),
        **ceiling(),  # this machine's matmul rates, measured now: the wall times are against them
        "reward_gain_ci_above_0": share("reward_gain", "above"),
        "reward_gain_length_adjusted_ci_above_0": share("reward_gain_length_adjusted", "above"),
        "toxicity_change_ci_below_0": share("toxicity_change", "below"),
        "ppo_curve_rises": f"{sum(r['reward_last'] - r['reward_first'] > 2 * r['rise_se'] for r in rows)}/{len(rows)}",
        "max_seconds_total": max(r["seconds_total"] for r in rows),
        "runs": str(out),
    }), flush=True)


if __name__ == "__main__":
    main()
