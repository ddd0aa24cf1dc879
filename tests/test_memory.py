"""lab/memory.py: parameter counts from config.json, the estimate against measured CPU peaks, the refusal at Start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lab import memory, ppo
from lab.presets import A100

ROOT = Path(__file__).resolve().parents[1]
MISTRAL_7B = {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096, "num_hidden_layers": 32,
              "intermediate_size": 14336, "num_attention_heads": 32, "num_key_value_heads": 8,
              "tie_word_embeddings": False}
GB = memory.GB

# One PPO training pass (policy + LoRA + value head, eager attention, float32) on a random tiny Llama, in a fresh
# process: the peak resident memory during the pass (VmHWM, reset just before) minus resident memory just before, against the estimate's activations + logits.
MEASURE = """
import json, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
from lab import memory, models, ppo
h, layers, inter, vocab, mb, prompt, resp = map(int, sys.argv[1:8])
torch.manual_seed(0)
config = LlamaConfig(vocab_size=vocab, hidden_size=h, intermediate_size=inter, num_hidden_layers=layers,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
model = models.add_lora(LlamaForCausalLM(config), r=16, alpha=32).eval()
head = ppo.new_value_head(model)
ids = torch.randint(0, vocab, (mb, prompt + resp))
batch = ppo.Batch(ids, torch.ones_like(ids), torch.ones(mb, resp, dtype=torch.long))
def peak_kb():
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM"))
with open("/proc/self/clear_refs", "w") as fh:  # the peak restarts from here (Linux: 5 = reset VmHWM to VmRSS)
    fh.write("5")
before = int(open("/proc/self/statm").read().split()[1]) * 4096
with models.attention_implementation(model, "eager"):
    logprobs, values = ppo.forward_policy(model, head, batch, 1.0, False)
    (logprobs.sum() + values.sum()).backward()
measured = peak_kb() * 1024 - before
est = memory.estimate_ppo(memory.shape_from_config(config.to_dict()), False, 16, mb, prompt, resp, mb, act_bytes=4,
                          eager_attention=True, cuda=False)
print(json.dumps({"measured": measured, "estimated": est.activations + est.logits}))
"""


def test_parameter_counts_from_config_json():
    shape = memory.shape_from_config(MISTRAL_7B)
    assert shape.params == pytest.approx(7.24e9, rel=0.01)  # Mistral-7B / zephyr-7b-alpha: 7.24 B
    smol = memory.model_shape("embedded:smollm2-135m-instruct")  # from the GGUF header, in well under a second
    assert smol.params == pytest.approx(134.5e6, rel=0.01) and smol.layers == 30 and smol.vocab == 49152


@pytest.mark.slow
@pytest.mark.parametrize("shape", [  # hidden, layers, intermediate, vocab, mini-batch, prompt, response tokens
    (256, 4, 1024, 1000, 8, 64, 64),  # activations dominate
    (64, 2, 128, 49152, 8, 32, 64),  # logits dominate
    (512, 2, 1536, 2000, 4, 256, 128),  # long sequences: eager attention's S x S
    (128, 3, 512, 8000, 6, 128, 96),  # a mix (not used to fit the factors)
    (384, 3, 1024, 3000, 2, 512, 64),  # longer still (not used to fit the factors)
    (320, 5, 1280, 16000, 3, 32, 128),  # five layers, a mix (not used to fit the factors)
])
def test_the_estimate_matches_measured_cpu_peaks(shape):
    out = subprocess.run([sys.executable, "-c", MEASURE, *map(str, shape)], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    row = json.loads(out.stdout.splitlines()[-1])
    # Refitted on 2026-12-03 (torch 2.13, transformers 5.24; lab.memory.ACT_HIDDEN's comment): the first three shapes
    # were among the 8 that fitted the factors 22, 4 and 8, the last three were held out. The highest of 7-12 runs
    # per shape is 0.97, 1.01, 0.97, 1.01, 0.90 and 1.11 x the estimate (with the old 12, 4, 10: 1.23, 1.01, 1.13,
    # 1.08, 1.03, 1.30). A single run can be far lower: glibc's heap reuses or keeps freed memory differently from run
    # to run, so a run of the third shape measured 0.60-0.97, the fifth 0.67-0.90, the others within 13 % of their
    # highest. Hence the low bound is loose and the high one (the estimate falling short) is tight.
    assert 0.5 <= row["measured"] / row["estimated"] <= 1.25, row


def test_the_preset_limits_fit_an_a100_with_gradient_checkpointing_and_not_without():
    config = {**ppo.job_config(ppo.config_from(A100), A100, "rw", "p"), "batch_size": 64, "mini_batch_size": 64,
              "output_max_length": 256}
    shape = memory.shape_from_config(MISTRAL_7B)
    assert memory.ppo_estimate(config, shape, False, cuda=True).peak > 150 * GB  # the issue's ~180 GB
    plan = memory.plan_ppo(config, shape, 40 * GB, cuda=True)
    assert plan["gradient_checkpointing"] and plan["memory_gb"]["peak"] < 40
    default = ppo.job_config(ppo.config_from(A100), A100, "rw", "p")
    assert memory.plan_ppo(default, shape, 40 * GB, cuda=True)["gradient_checkpointing"] is False


def test_an_oversize_batch_is_refused_at_prepare_before_anything_loads(tmp_path, monkeypatch):
    policy = tmp_path / "zephyr-shaped"  # a config.json and no weights: nothing could load
    policy.mkdir()
    (policy / "config.json").write_text(json.dumps(MISTRAL_7B))
    reward = tmp_path / "reward"
    reward.mkdir()
    (reward / "config.json").write_text("{}")
    monkeypatch.setattr(memory, "device_memory", lambda: (16 * GB, "this GPU has"))
    values = {"reward_model": str(reward), "policy": str(policy), "prompts": "bundled", "batch_size": 64,
              "mini_batch_size": 64, "output_max_length": 256, "eval_prompts": "bundled:heldout"}  # no hub here
    monkeypatch.setattr("lab.models.has_cuda", lambda: True)
    with pytest.raises(ValueError, match=r"needs ~\d+ GB even with gradient checkpointing, this GPU has 16 GB: "
                                         r"lower the mini-batch to \d+"):
        ppo.prepare(A100, values)
    values["mini_batch_size"] = 4
    config = ppo.prepare(A100, values)
    assert config["memory_gb"]["peak"] < 16


def test_a_reward_backbone_too_big_for_the_device_is_refused(tmp_path, monkeypatch):
    from lab import reward

    backbone = tmp_path / "seven-b-backbone"
    backbone.mkdir()
    (backbone / "config.json").write_text(json.dumps(MISTRAL_7B))
    monkeypatch.setattr(memory, "device_memory", lambda: (40 * GB, "this GPU has"))
    with pytest.raises(ValueError, match=r"this reward job needs ~\d+ GB, this GPU has 40 GB: choose a smaller"):
        reward.prepare(A100, {"backbone": str(backbone), "data": "bundled"})
    shape = memory.shape_from_config({"vocab_size": 50265, "hidden_size": 768, "num_hidden_layers": 6,
                                      "intermediate_size": 3072, "num_attention_heads": 12})  # distilroberta-base
    assert memory.estimate_reward(shape, 16, 512, act_bytes=2).peak < 10 * GB  # the a100 preset's own
