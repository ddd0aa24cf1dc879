"""The CUDA path: the embedded policy through 4-bit NF4 + LoRA, and a few PPO steps on it. Skipped without a GPU.
LAB_GPU_POLICY names another policy of the same kind (benchmarks/bench_space_gpu.py --make-policy writes a random one
of SmolLM2-135M's shape, for a GPU machine without the embedded wheel)."""

from __future__ import annotations

import os

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]
POLICY = os.environ.get("LAB_GPU_POLICY", "embedded:smollm2-135m-instruct")


def test_four_bit_nf4_base_with_lora_adapters():
    from lab.models import load_causal_lm, add_lora

    model = load_causal_lm(POLICY, quantize_4bit=True)
    assert getattr(model, "is_loaded_in_4bit", False)
    linear4 = [m for m in model.modules() if type(m).__name__ == "Linear4bit"]
    assert linear4 and linear4[0].weight.quant_type == "nf4"
    lora = add_lora(model, r=16, alpha=32, dropout=0.05)
    trainable = {n for n, p in lora.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)


def test_ppo_steps_on_the_four_bit_policy(capsys):
    from lab.policies import load_trainable_policy, new_value_head
    from lab.ppo import PPOConfig, run_ppo

    torch.cuda.reset_peak_memory_stats()
    model, tokenizer = load_trainable_policy(POLICY, quantize_4bit=True, lora={"r": 16, "alpha": 32, "dropout": 0.05})
    head = new_value_head(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = PPOConfig(steps=3, batch_size=8, mini_batch_size=4, output_min_length=16, output_max_length=16,
                    learning_rate=1e-4)

    def score(prompts, responses):  # a reward that differs between any two answers (a count of polite words was 0
        return [len(r) / 10 for r in responses]  # for every answer of a random-weight stand-in: nothing to learn)

    history = run_ppo(model, head, tokenizer, ["Say something kind.", "Describe a cat.", "Greet me."] * 4, score, cfg)
    assert len(history) == 3
    assert all(torch.isfinite(torch.tensor(h["objective/kl"])) for h in history)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed
    peak = torch.cuda.max_memory_allocated() / 2**20
    seconds = sum(h["time/step"] for h in history) / len(history)
    with capsys.disabled():
        print(f"\n4-bit PPO on {torch.cuda.get_device_name()}: peak {peak:.0f} MiB, {seconds:.2f} s/step")


def test_the_memory_estimate_bounds_a_measured_cuda_peak(capsys):
    """The a100 preset's PPO on the embedded policy in 4-bit: the estimate (lab.memory, which prepare checks) against
    torch's peak. The estimate assumes full-length prompts (max_prompt_length), so it may only be above."""
    from lab import memory
    from lab.ppo import PPOConfig, load_trainable_policy, new_value_head, run_ppo

    cfg = PPOConfig(steps=2, batch_size=8, mini_batch_size=4, output_min_length=32, output_max_length=32,
                    max_prompt_length=64, bf16=True)
    torch.cuda.reset_peak_memory_stats()
    model, tokenizer = load_trainable_policy(POLICY, quantize_4bit=True, lora={"r": 16, "alpha": 32, "dropout": 0.05})
    long_prompt = "Tell me everything you know about the history of the bicycle, in detail. " * 8  # > 64 tokens
    run_ppo(model, new_value_head(model), tokenizer, [long_prompt] * 8, lambda p, r: [1.0 * len(x) for x in r], cfg)
    peak = torch.cuda.max_memory_allocated()
    est = memory.estimate_ppo(memory.model_shape(POLICY), True, 16, 4, 64, 32, 8, act_bytes=2, cuda=True)
    with capsys.disabled():
        print(f"\nmemory: measured {peak / 2**30:.2f} GiB, estimated {est.peak / 2**30:.2f} GiB ({est.parts_gb()})")
    allocated = est.peak - est.overhead  # the CUDA context is not torch's allocation
    assert 0.5 * allocated <= peak <= 1.5 * allocated
