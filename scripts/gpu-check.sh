#!/usr/bin/env bash
# The check for the day a GPU is at hand (README, "The Space path without a GPU"): the `gpu` tests, then a short
# `a100`-preset PPO job on the embedded policy in 4-bit NF4 + LoRA, and one JSON line on stdout:
#   {"device": ..., "gpu_tests": "passed"|"failed", "peak_gb": ..., "estimate_gb": ..., "s_per_step": ..., ...}
# Under five minutes on an A100. Without CUDA it prints {"device": "cpu", "skipped": ...} and exits 0; with
# GPU_CHECK_ON_CPU=1 it runs the same job on the CPU (bitsandbytes' CPU kernels: slow; checks the script itself).
# Usage: bash scripts/gpu-check.sh [PYTHON]    (default .venv/bin/python, else python3)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${1:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

cuda=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null || cuda=0
if [ $cuda = 0 ] && [ "${GPU_CHECK_ON_CPU:-0}" != "1" ]; then
  echo '{"device": "cpu", "skipped": "no CUDA GPU here: the gpu tests and the 4-bit PPO timing need one (GPU_CHECK_ON_CPU=1 runs the job on the CPU)"}'
  exit 0
fi

gpu_tests=passed
"$PY" -m pytest -m gpu -q tests/test_gpu.py >&2 || gpu_tests=failed
[ $cuda = 0 ] && gpu_tests="skipped (no CUDA)"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
limit=280
[ $cuda = 0 ] && limit=900  # bitsandbytes' CPU kernels are slow
LAB_RUNS_DIR="$work/runs" GPU_TESTS="$gpu_tests" timeout $limit "$PY" - <<'EOF'
import json, os, resource, sys, time

import torch

from lab import cli, memory, ppo, reward
from lab.presets import get_preset

cuda = torch.cuda.is_available()
a100 = get_preset("a100")
policy = "embedded:smollm2-135m-instruct"
started = time.time()
# A reward model in seconds: the embedded MiniLM on the bundled pairs (the job under test is PPO).
rw = cli.run_job(reward.KIND, reward.train_reward, reward.prepare(get_preset("cpu"), {"max_steps": 5}), on_metrics=None)
steps = int(os.environ.get("GPU_CHECK_STEPS", "3" if cuda else "1"))
values = {"reward_model": str(rw.run.path), "prompts": "bundled", "policy": policy, "steps": steps}
if not cuda:  # the script's own check on a CPU: the same path, smaller
    values.update({"batch_size": 2, "mini_batch_size": 2, "ppo_epochs": 1, "output_min_length": 8,
                   "output_max_length": 8, "max_prompt_length": 48})
config = ppo.prepare(a100, values)
if cuda:
    torch.cuda.reset_peak_memory_stats()
job = cli.run_job(ppo.KIND, ppo.train_ppo, config, on_metrics=None)
# CUDA: torch's peak allocation; CPU: the process's peak resident memory (weights, activations, everything)
peak = (torch.cuda.max_memory_allocated() if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps({
    "device": torch.cuda.get_device_name() if cuda else "cpu", "preset": "a100", "policy": policy,
    "quantize_4bit": config["quantize_4bit"], "gpu_tests": os.environ["GPU_TESTS"], "status": job.status,
    "steps": job.summary.get("steps"), "s_per_step": job.summary.get("seconds_per_step"),
    "peak_gb": round(peak / memory.GB, 2), "peak_kind": "cuda max_memory_allocated" if cuda else "cpu max rss",
    "estimate_gb": config["memory_gb"]["peak"],
    "gradient_checkpointing": config["gradient_checkpointing"], "batch_size": config["batch_size"],
    "mini_batch_size": config["mini_batch_size"], "output_max_length": config["output_max_length"],
    "seconds": round(time.time() - started, 1),
}), flush=True)
sys.exit(0 if job.status == "done" else 1)
EOF
