"""Batched generation with the chat template: left padding, the same sampling settings and seeds for every model."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

from lab.config import coerced, from_job, given, setting
from lab.models import bf16_native, chat_prompt, has_cuda

# Bytes of KV cache per token per layer are 2 (K and V) x kv_heads x head_dim x element size; keep this share of
# free GPU memory for the cache so activations and the toxicity/reward models still fit.
GPU_CACHE_SHARE = 0.5
CPU_BATCH_SIZE = 16  # big enough for efficient matmuls on a few cores, small enough that first results come soon


@dataclass
class GenerateConfig:
    """Sampling settings shared by every model in a comparison (the seed's defaults)."""

    max_new_tokens: int = setting(256, "completion length cap (new tokens)", label="Max new tokens", widget="slider",
                                  minimum=8, maximum=256, step=8)
    temperature: float = setting(0.7, "softmax temperature", label="Temperature", widget="slider", minimum=0.1,
                                 maximum=1.5, step=0.05)
    top_k: int = setting(50, "sample among the k likeliest tokens (0 = all)", label="Top-k", widget="slider",
                         minimum=0, maximum=200)
    top_p: float = setting(0.95, "nucleus sampling mass", label="Top-p", widget="slider", minimum=0.1, maximum=1.0,
                           step=0.01)
    repetition_penalty: float = setting(
        1.0, "fewer loops: divide the logit of each token the answer already holds by this (CTRL's penalty; the "
        "request's tokens do not count; 1 = off)", label="Repetition penalty", widget="slider", minimum=1.0,
        maximum=2.0, step=0.05)
    batch_size: int = setting(0, "prompts per generate call; 0 = sized to the machine")
    seed: int = setting(0, "batch b is sampled after torch.manual_seed(seed + b)", label="Seed")
    min_new_tokens: int = setting(0, "force this many tokens (benchmarks: equal work per prompt)")
    do_sample: bool = setting(True, "sample (--no-do-sample: greedy decoding)")
    precision: str = setting("auto", "auto (bf16 autocast where the hardware has bf16), bf16 or fp32")

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "GenerateConfig":
        """Build from a preset's `generate` dict or a job config, ignoring unknown keys."""
        return from_job(cls, values or {})

    def validate(self) -> "GenerateConfig":
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1 (got {self.max_new_tokens})")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"min_new_tokens must be between 0 and max_new_tokens (got {self.min_new_tokens})")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be above 0 when sampling (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if not 1.0 <= self.repetition_penalty <= 2.0:
            raise ValueError(f"repetition_penalty must be between 1 (off) and 2 (got {self.repetition_penalty})")
        if self.top_k < 0 or self.batch_size < 0:
            raise ValueError("top_k and batch_size cannot be negative")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision must be auto, bf16 or fp32 (got '{self.precision}')")
        return self


STAGE_KEYS = ("n_prompts", "answers_per_prompt")  # in a preset's `generate`, the stage's settings, not sampling's


def generate_settings(preset: Any, values: dict[str, Any]) -> dict[str, Any]:
    """A job's `generate` dict: the preset's sampling settings, then the given values, each as its field's type."""
    defaults = {k: v for k, v in preset.generate.items() if k not in STAGE_KEYS}
    return coerced(GenerateConfig, {**defaults, **given(values)}, "generation")


# ---------------------------------------------------------------- machine-dependent choices


def model_device(model: Any) -> torch.device:
    return next(model.parameters()).device


def use_bf16(precision: str, device: torch.device | str) -> bool:
    """bf16 where the hardware does bf16 natively (GPU, or a CPU with AVX512-BF16/AMX): several x faster."""
    if precision != "auto":
        return precision == "bf16"
    return bf16_native(device)


def load_dtype(precision: str = "auto") -> torch.dtype | None:
    """The dtype to load a model in for generation only: bf16 weights skip autocast's cast of every weight each step."""
    return torch.bfloat16 if use_bf16(precision, "cuda" if has_cuda() else "cpu") else None


def auto_batch_size(model: Any, max_tokens: int, cap: int = 64) -> int:
    """Prompts per batch: from free GPU memory and the KV-cache size per sequence; a fixed size on CPU."""
    if not has_cuda() or model_device(model).type != "cuda":
        return min(cap, CPU_BATCH_SIZE)
    cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    per_sequence = 2 * cfg.num_hidden_layers * heads * head_dim * 2 * max_tokens  # bf16 cache
    free, _ = torch.cuda.mem_get_info()
    return max(1, min(cap, int(free * GPU_CACHE_SHARE // per_sequence)))


# ---------------------------------------------------------------- batching


def chat_texts(tokenizer: Any, prompts: list[str]) -> list[str]:
    """Each prompt as one user turn in the model's chat template, assistant turn opened (as the seed does)."""
    return [chat_prompt(tokenizer, p) for p in prompts]


def plan_batches(tokenizer: Any, prompts: list[str], batch_size: int) -> list[list[int]]:
    """Prompt indices grouped by similar token length (less left padding); deterministic for a given prompt list."""
    lengths = [len(tokenizer(t, add_special_tokens=False).input_ids) for t in chat_texts(tokenizer, prompts)]
    order = sorted(range(len(prompts)), key=lambda i: (lengths[i], i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def encode_chat(tokenizer: Any, prompts: Sequence[str], device: torch.device | str,
                max_length: int | None = None, template: bool = True) -> dict[str, torch.Tensor]:
    """Prompts in the chat template (or as raw text), left-padded (generation appends on the right, so real tokens
    must end there) and, with max_length, cut from the left. PPO's rollouts and Compare/Feedback encode here."""
    texts = chat_texts(tokenizer, list(prompts)) if template else list(prompts)
    # Chat templates usually write BOS themselves; add the tokenizer's special tokens only when the template did not
    # (e.g. zephyr's), judged on every text. Raw text gets them as the tokenizer's default would.
    bos = tokenizer.bos_token
    add_special = bool(bos) and not all(t.startswith(bos) for t in texts) if template else True
    tokenizer.padding_side, tokenizer.truncation_side = "left", "left"
    enc = tokenizer(texts, return_tensors="pt", padding=True, truncation=max_length is not None,
                    max_length=max_length, add_special_tokens=add_special)
    return {k: v.to(device) for k, v in enc.items()}


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, list) else [ids] if ids is not None else [])
    return ids | {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}


def decode_completions(tokenizer: Any, tokens: torch.Tensor, stop_ids: set[int], cut_mark: str = "") -> list[str]:
    """Generated tokens only (the prompt is not echoed), cut at the first stop token, special tokens dropped;
    `cut_mark` ends an answer that hit the token limit without a stop token (it was cut, not finished)."""
    out = []
    for row in tokens.tolist():
        cut = next((i for i, t in enumerate(row) if t in stop_ids), None)
        text = tokenizer.decode(row[:cut], skip_special_tokens=True).strip()
        out.append(text + cut_mark if cut is None and text and cut_mark else text)
    return out


class StopCriterion:
    """Ends generation early when the job is asked to stop (a transformers StoppingCriteria)."""

    def __init__(self, should_stop: Callable[[], bool]) -> None:
        self.should_stop = should_stop

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return torch.full((input_ids.shape[0],), self.should_stop(), dtype=torch.bool, device=input_ids.device)


def stopping_criteria(should_stop: Callable[[], bool]) -> Any:
    """generate's `stopping_criteria` that ends every row at the next token once `should_stop()` says so."""
    from transformers import StoppingCriteriaList  # heavy: the app imports this module at start, jobs use it

    return StoppingCriteriaList([StopCriterion(should_stop)])


@torch.inference_mode()
def generate_batch(model: Any, tokenizer: Any, prompts: list[str], config: GenerateConfig, seed: int,
                   cut_mark: str = "", should_stop: Callable[[], bool] | None = None) -> list[str]:
    """Completions for one batch of prompts, sampled after `torch.manual_seed(seed)`; `cut_mark` ends those cut at
    the token limit; `should_stop` (a job's Stop) ends every answer at the next token once it says so."""
    device = model_device(model)
    enc = encode_chat(tokenizer, prompts, device)
    kwargs: dict[str, Any] = {
        "max_new_tokens": config.max_new_tokens,
        "min_new_tokens": config.min_new_tokens or None,
        "do_sample": config.do_sample,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if config.do_sample:
        kwargs.update(temperature=config.temperature, top_k=config.top_k or None, top_p=config.top_p)
    else:  # greedy: clear the model's own sampling defaults so generate does not warn about them
        kwargs.update(temperature=None, top_k=None, top_p=None)
    if config.repetition_penalty != 1.0:  # on the answer's own tokens only: a request's words may be answered with
        from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor  # heavy: imported when used

        prompt_length = enc["input_ids"].shape[1]  # left padding: every row's answer starts here
        kwargs["logits_processor"] = LogitsProcessorList(
            [RepetitionPenaltyLogitsProcessor(config.repetition_penalty, prompt_ignore_length=prompt_length)])
    if should_stop is not None:
        kwargs["stopping_criteria"] = stopping_criteria(should_stop)
    torch.manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(config.precision, device)):
            tokens = model.generate(**enc, **kwargs)
    finally:
        model.train(was_training)
    return decode_completions(tokenizer, tokens[:, enc["input_ids"].shape[1] :], _stop_ids(model, tokenizer), cut_mark)


# ---------------------------------------------------------------- one copy of the weights, two models


@contextlib.contextmanager
def adapter_mode(model: Any, adapter: str | None) -> Iterator[Any]:
    """Base weights (`adapter=None`: LoRA disabled) or the named adapter active; one copy of the weights serves both."""
    if not hasattr(model, "disable_adapter"):  # a plain model: only the base exists
        if adapter is not None:
            raise ValueError(f"the model has no adapter '{adapter}'")
        yield model
        return
    if adapter is None:
        with model.disable_adapter():
            yield model
        return
    if adapter not in model.peft_config:
        raise ValueError(f"the model has no adapter '{adapter}' (has: {', '.join(model.peft_config)})")
    if model.active_adapter != adapter:  # switching adapters is for inference: keep them frozen
        model.set_adapter(adapter, inference_mode=True)
    yield model
