"""Peak memory of a PPO job, estimated from the policy's config before anything loads, and the check every Start runs.

The terms (bytes), for a decoder with hidden size H, MLP size I, L layers, vocabulary V, a mini-batch of b rollouts
of S = prompt + response tokens, R of them response tokens, activations of `a` bytes (2 in bf16, 4 in float32):

- weights: 4-bit NF4 linear layers 0.52 B/param (0.5 + double-quantised block scales), the rest (embeddings, norms,
  lm_head) 4 B after peft's `prepare_model_for_kbit_training`; unquantised: 4 B/param (float32 on CPU) or 2 (CUDA);
- LoRA adapters and value head: 16 B per trainable parameter (float32 weight, gradient, Adam's two moments);
- activations kept for the backward pass: L · b·S · (22·H + 4·I) · a, plus with eager attention (the CPU's) the
  S x S matrices of one layer at a time, 8 · b · heads · S² · a (measured: they do not grow with the layer count);
  with gradient checkpointing only each layer's input (L · b·S·H · a) and one layer's activations;
- logits of the response positions: b · (R + 1) · V · (12 + 2a, or 12 in float32) (the logits and their gradient,
  their float32 copy, log-softmax and its gradient);
- the rollout's KV cache: 2 · L · B · S · (kv heads · head dim) · a for a generation batch of B.

`peak = weights + trainable + max(activations + logits, KV cache)`, plus a fixed 0.5 GB on CUDA (context, kernels).
The factors 22, 4 and 8 (ACT_HIDDEN, ACT_INTERMEDIATE, ACT_ATTENTION) were refitted on 2026-12-03 to measured CPU
peaks of tiny Llamas (tests/test_memory.py's measurement, 12 shapes): the measured peak is 0.90-1.26x the estimate,
where the old 12, 4 and 10 left activation-bound shapes at up to 1.40x. One run's peak can fall up to 40% below
another's of the same shape (glibc's heap reuses or keeps freed memory differently from run to run), so the factors fit
the highest of several runs: the memory a job may need, a planning figure.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import models
from lab.models import bf16_native, has_cuda

GB = 1024**3
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)  # 4-bit weights + an 8-bit scale per 64 + a float32 per 256 scales
TRAINABLE_BYTES = 16  # float32 weight + gradient + Adam's m and v
CUDA_OVERHEAD = 0.5 * GB
LORA_TARGETS = ("q_proj", "v_proj")  # peft's default targets for Llama / Mistral
# Activations kept for the backward pass, in units of act_bytes: per token and layer, ACT_HIDDEN per hidden unit and
# ACT_INTERMEDIATE per MLP unit; eager attention's S x S matrices, ACT_ATTENTION per (sequence, head, S²). Fitted on
# 2026-12-03 (torch 2.13.0, transformers 5.24.0, CPU, float32, eager attention) by non-negative least squares on
# relative error to the peak (highest of 7-12 runs) of a training pass on 8 tiny Llamas (hidden 64-512, 2-6 layers,
# vocab 1000-49152, mini-batch 2-8, 96-640 tokens; fit 22.5, 3.7, 7.9): measured/estimated 0.91-1.26 on them,
# 0.90-1.12 on 4 held-out shapes (the old 12, 4, 10: 0.85-1.40).
ACT_HIDDEN = 22
ACT_INTERMEDIATE = 4
ACT_ATTENTION = 8


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs from a decoder's config.json."""

    vocab: int
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    tied: bool

    @property
    def kv_dim(self) -> int:
        return self.hidden // self.heads * self.kv_heads

    @property
    def linear_params(self) -> int:
        """Parameters of the layers' linear maps (what bitsandbytes quantises)."""
        attention = 2 * self.hidden * self.hidden + 2 * self.hidden * self.kv_dim
        return self.layers * (attention + 3 * self.hidden * self.intermediate)

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied) and norms."""
        return self.vocab * self.hidden * (1 if self.tied else 2) + (2 * self.layers + 1) * self.hidden

    @property
    def params(self) -> int:
        return self.linear_params + self.other_params


def shape_from_config(config: dict[str, Any]) -> ModelShape:
    """A ModelShape from config.json's keys (Llama / Mistral / Qwen names, GPT-2's as fallbacks)."""
    hidden = config.get("hidden_size") or config.get("n_embd")
    heads = config.get("num_attention_heads") or config.get("n_head")
    if not hidden or not heads or not config.get("vocab_size"):
        raise ValueError("the model's config.json has no hidden_size / num_attention_heads / vocab_size")
    return ModelShape(
        vocab=int(config["vocab_size"]), hidden=int(hidden),
        layers=int(config.get("num_hidden_layers") or config.get("n_layer")),
        intermediate=int(config.get("intermediate_size") or config.get("n_inner") or 4 * hidden),
        heads=int(heads), kv_heads=int(config.get("num_key_value_heads") or heads),
        tied=bool(config.get("tie_word_embeddings", True)),
    )


def model_shape(spec: str) -> ModelShape:
    """The shape of model `spec` from its config.json (a GGUF file's header), never its weights."""
    ref = models.resolve(spec)
    if ref.gguf_file:
        return _gguf_shape(Path(ref.path) / ref.gguf_file)
    if ref.local:
        path = Path(ref.path) / "config.json"
    elif models.hub_reachable():
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(ref.path, "config.json"))
    else:
        folder = models.cached_snapshot(ref.path)
        if folder is None:
            models.require_hub(spec)
        path = folder / "config.json"
    if not path.exists():  # a LoRA folder: its base model's shape
        adapter = json.loads((Path(ref.path) / "adapter_config.json").read_text())
        return model_shape(adapter["base_model_name_or_path"])
    return shape_from_config(json.loads(path.read_text()))


def _gguf_shape(path: Path) -> ModelShape:
    """The shape from a GGUF file's key-value header, read up to the keys needed (gguf's reader parses every tensor
    and token, about 9 s for SmolLM2)."""
    scalars = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    values: dict[str, Any] = {}
    with open(path, "rb") as fh:

        def read(fmt: str) -> Any:
            return struct.unpack("<" + fmt, fh.read(struct.calcsize(fmt)))[0]

        def value(kind: int) -> Any:
            if kind in scalars:
                return read(scalars[kind])
            if kind == 8:
                return fh.read(read("Q")).decode("utf-8", "replace")
            if kind == 9:
                item, count = read("I"), read("Q")
                if item in scalars:  # skip a numeric array without decoding it
                    fh.seek(count * struct.calcsize(scalars[item]), os.SEEK_CUR)
                    return count
                return [value(item) for _ in range(count)] if item != 8 else _skip_strings(fh, count)
            raise ValueError(f"'{path.name}': unknown GGUF value type {kind}")

        if fh.read(4) != b"GGUF":
            raise ValueError(f"'{path.name}' is not a GGUF file")
        read("I")  # version
        read("Q")  # tensor count
        for _ in range(read("Q")):
            key = fh.read(read("Q")).decode()
            values[key] = value(read("I"))
    arch = values["general.architecture"]
    heads = values[f"{arch}.attention.head_count"]
    return ModelShape(
        vocab=values.get(f"{arch}.vocab_size") or values["tokenizer.ggml.tokens"],
        hidden=values[f"{arch}.embedding_length"],
        layers=values[f"{arch}.block_count"], intermediate=values[f"{arch}.feed_forward_length"], heads=heads,
        kv_heads=values.get(f"{arch}.attention.head_count_kv", heads), tied=True,
    )


def _skip_strings(fh: Any, count: int) -> int:
    for _ in range(count):
        fh.seek(struct.unpack("<Q", fh.read(8))[0], os.SEEK_CUR)
    return count


@dataclass(frozen=True)
class Estimate:
    """Peak memory of a PPO job and its parts, in bytes."""

    weights: float
    trainable: float
    activations: float
    logits: float
    kv_cache: float
    overhead: float

    @property
    def peak(self) -> float:
        return self.weights + self.trainable + max(self.activations + self.logits, self.kv_cache) + self.overhead

    def parts_gb(self) -> dict[str, float]:
        return {k: round(v / GB, 2) for k, v in {**self.__dict__, "peak": self.peak}.items()}


def estimate_ppo(shape: ModelShape, quantize_4bit: bool, lora_r: int, mini_batch: int, prompt_tokens: int,
                 response_tokens: int, generation_batch: int, act_bytes: int = 2, eager_attention: bool = False,
                 checkpointing: bool = False, cuda: bool = True) -> Estimate:
    """The module docstring's formula for one PPO step."""
    h, seq = shape.hidden, prompt_tokens + response_tokens
    if quantize_4bit:
        weights = shape.linear_params * NF4_BYTES + shape.other_params * 4
    else:
        weights = shape.params * (2 if cuda else 4)
    lora = shape.layers * lora_r * (2 * h + h + shape.kv_dim)  # q_proj and v_proj: r x (in + out) each
    trainable = (lora + h + 1) * TRAINABLE_BYTES
    tokens = mini_batch * seq
    per_layer = tokens * (ACT_HIDDEN * h + ACT_INTERMEDIATE * shape.intermediate) * act_bytes
    attention = ACT_ATTENTION * mini_batch * shape.heads * seq * seq * act_bytes if eager_attention else 0
    if checkpointing:
        activations = shape.layers * tokens * h * act_bytes + per_layer + attention
    else:
        activations = shape.layers * per_layer + attention
    # the logits, their float32 copy (none when they are float32 already), log-softmax, its gradient, theirs
    logits = mini_batch * (response_tokens + 1) * shape.vocab * (12 + (2 * act_bytes if act_bytes < 4 else 0))
    kv_cache = 2 * shape.layers * generation_batch * seq * shape.kv_dim * act_bytes
    return Estimate(weights, trainable, activations, logits, kv_cache, CUDA_OVERHEAD if cuda else 0.0)


def estimate_reward(shape: ModelShape, batch_size: int, max_length: int, act_bytes: int = 4,
                    cuda: bool = True) -> Estimate:
    """A reward model's training step: every weight trains (16 B/param with Adam), a batch of pairs is 2 x batch_size
    texts of up to max_length tokens through every layer; no logits to speak of (one output)."""
    tokens = 2 * batch_size * max_length
    per_token = ACT_HIDDEN * shape.hidden + ACT_INTERMEDIATE * shape.intermediate
    activations = shape.layers * tokens * per_token * act_bytes
    return Estimate(0.0, shape.params * TRAINABLE_BYTES, activations, 0.0, 0.0, CUDA_OVERHEAD if cuda else 0.0)


def check_reward(config: dict[str, Any]) -> dict[str, Any]:
    """Refuse a reward job (lab.reward's config) whose estimate does not fit this machine, naming a batch that does."""
    cuda = has_cuda()
    capacity, where = device_memory()
    shape = model_shape(config["backbone"])
    act = 2 if cuda and bf16_native("cuda") else 4  # the reward trainer's bf16 is CUDA-only

    def estimate(batch: int) -> Estimate:
        return estimate_reward(shape, batch, int(config["max_length"]), act, cuda)

    need = estimate(int(config["batch_size"]))
    if need.peak <= capacity:
        return {"memory_gb": need.parts_gb()}
    fits = next((b for b in range(int(config["batch_size"]) - 1, 0, -1) if estimate(b).peak <= capacity), None)
    advice = f"lower the batch size to {fits}" if fits else "choose a smaller backbone"
    raise ValueError(f"this reward job needs ~{need.peak / GB:.0f} GB, {where} {capacity / GB:.0f} GB: {advice}")


def device_memory() -> tuple[float, str]:
    """(bytes, words) of the memory jobs run in: the GPU's, else the machine's RAM."""
    if has_cuda():
        import torch

        return float(torch.cuda.get_device_properties(0).total_memory), "this GPU has"
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "this machine has"


def ppo_estimate(config: dict[str, Any], shape: ModelShape, checkpointing: bool, mini_batch: int | None = None,
                 cuda: bool | None = None) -> Estimate:
    """The estimate for a PPO job config (lab.ppo's: PPOConfig fields plus quantize_4bit and lora) on CUDA or this
    CPU: bf16 activations where the config asks and the device has native bf16 (lab.ppo.run_ppo decides the same)."""
    cuda = has_cuda() if cuda is None else cuda
    bf16 = bool(config.get("bf16")) and (cuda or bf16_native("cpu"))
    return estimate_ppo(
        shape, bool(config.get("quantize_4bit")), int((config.get("lora") or {}).get("r", 16)),
        mini_batch or int(config["mini_batch_size"]), int(config["max_prompt_length"]),
        int(config["output_max_length"]), int(config.get("generation_batch_size") or config["batch_size"]),
        act_bytes=2 if bf16 else 4, eager_attention=not cuda,
        checkpointing=checkpointing, cuda=cuda,
    )


def plan_ppo(config: dict[str, Any], shape: ModelShape, capacity: float, where: str = "this GPU has",
             cuda: bool | None = None) -> dict[str, Any]:
    """Whether the job fits `capacity` bytes: {"gradient_checkpointing": bool, "memory_gb": {...}} when it does
    (checkpointing on only when it is what makes it fit); ValueError with the numbers and a mini-batch that fits
    when it does not."""
    plain = ppo_estimate(config, shape, False, cuda=cuda)
    if plain.peak <= capacity:
        return {"gradient_checkpointing": False, "memory_gb": plain.parts_gb()}
    ckpt = ppo_estimate(config, shape, True, cuda=cuda)
    if ckpt.peak <= capacity:
        return {"gradient_checkpointing": True, "memory_gb": ckpt.parts_gb()}
    mb = int(config["mini_batch_size"])
    fits = next((m for m in range(mb - 1, 0, -1) if int(config["batch_size"]) % m == 0
                 and ppo_estimate(config, shape, True, m, cuda=cuda).peak <= capacity), None)
    advice = (f"lower the mini-batch to {fits}" if fits else
              "lower the batch, the prompt length (max_prompt_length) or the answer length (output_max_length)")
    raise ValueError(f"this PPO job needs ~{ckpt.peak / GB:.0f} GB even with gradient checkpointing, {where} "
                     f"{capacity / GB:.0f} GB: {advice}")


def check_ppo(config: dict[str, Any]) -> dict[str, Any]:
    """`plan_ppo` for a PPO job config on this machine, from the policy's config.json alone (nothing loads)."""
    capacity, where = device_memory()
    return plan_ppo(config, model_shape(config["policy"]), capacity, where)
