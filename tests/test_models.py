"""lab/models.py: spec resolution, clear errors, the pad-token fix, the GGUF cache."""

from __future__ import annotations

import pytest
import torch

from lab import models


def test_unknown_ids_and_paths_raise_value_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match="unknown model 'a/b/c'"):
        models.resolve("a/b/c")
    with pytest.raises(ValueError, match="unknown model 'what is this'"):
        models.resolve("what is this")
    assert not models.resolve("gpt-17").local  # a legacy one-part hub id, like gpt2
    with pytest.raises(ValueError, match="'gpt-17' needs the Hugging Face hub"):
        models.check_available("gpt-17")
    with pytest.raises(ValueError, match="'/nope/model' does not exist"):
        models.resolve("/nope/model")
    with pytest.raises(ValueError, match="unknown embedded model 'embedded:llama-9000'"):
        models.resolve("embedded:llama-9000")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        models.resolve(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="'someone/some-model' needs the Hugging Face hub"):
        models.load_tokenizer("someone/some-model")


def test_embedded_models_resolve_from_wheels():
    policy = models.resolve("embedded:smollm2-135m-instruct")
    assert policy.gguf_file and policy.gguf_file.endswith(".gguf")
    backbone = models.resolve("embedded:all-minilm-l6-v2")
    assert backbone.path.endswith("model") and backbone.gguf_file is None


def test_pad_token_is_distinct_from_eos(tiny_lm_dir, tiny_reward_backbone_dir):
    tok = models.load_tokenizer(str(tiny_lm_dir))
    assert tok.pad_token_id != tok.eos_token_id and tok.padding_side == "left"
    bert = models.load_tokenizer(str(tiny_reward_backbone_dir), padding_side="right")
    assert bert.pad_token == "[PAD]" and bert.padding_side == "right"


def test_chat_prompt_opens_assistant_turn(tiny_lm_dir):
    tok = models.load_tokenizer(str(tiny_lm_dir))
    text = models.chat_prompt(tok, "Hello?")
    assert "Hello?" in text and text.rstrip().endswith("assistant")


def test_four_bit_nf4_loads_on_cpu_and_lora_keeps_a_backward_layout(tiny_lm_dir):
    model = models.load_causal_lm(str(tiny_lm_dir), quantize_4bit=True)
    assert model.is_loaded_in_4bit
    layers = models.four_bit_layers(model)
    assert layers and all(layer.weight.quant_type == "nf4" and layer.weight.dtype == torch.uint8 for layer in layers)
    for layer in layers:  # as on a CPU with AVX512-BF16: the no-grad eval forward would repack the weights
        layer.support_avx512bf16_for_cpu = True
    lora = models.add_lora(model, r=4, alpha=8)
    assert all(layer.support_avx512bf16_for_cpu is False for layer in layers)  # the switch, turned off for training
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    lora.eval()
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        lora(input_ids=ids)  # the pass that would repack
    assert not any(getattr(layer.weight.quant_state, "packing_format_for_cpu", False) for layer in layers)
    lora(input_ids=ids).logits.float().square().mean().backward()
    grads = [p.grad for n, p in lora.named_parameters() if "lora_B" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_four_bit_layers_narrower_than_a_block_are_never_repacked_on_cpu(tiny_lm_dir):
    """The tiny model's 32-input layers cannot take bitsandbytes' packed CPU layout (in_features // 64 = 0 blocks a
    row): on a CPU with AVX512-BF16 its first no-grad forward raised, so Compare on the simulated hub failed there.
    Loading marks them; a layer as wide as a block keeps the fast path."""
    model = models.load_causal_lm(str(tiny_lm_dir), quantize_4bit=True)
    layers = models.four_bit_layers(model)
    narrow = [layer for layer in layers if layer.in_features < 64]
    assert narrow and all(layer.support_avx512bf16_for_cpu is False for layer in narrow)
    wide = [layer for layer in layers if layer.in_features % 64 == 0]
    for layer in wide:
        layer.support_avx512bf16_for_cpu = True
    models.skip_unpackable_4bit(model)
    assert all(layer.support_avx512bf16_for_cpu for layer in wide)
    with torch.no_grad():  # the pass that repacked, and raised
        model(input_ids=torch.tensor([[5, 6, 7, 8]]))


@pytest.mark.slow
def test_gguf_is_dequantised_once_then_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("LAB_CACHE_DIR", str(tmp_path))
    first = models.local_path("embedded:smollm2-135m-instruct")
    assert (tmp_path / "gguf").exists() and first.startswith(str(tmp_path))
    weights = next((tmp_path / "gguf").glob("*/model.safetensors"))
    written = weights.stat().st_mtime_ns
    again = models.local_path("embedded:smollm2-135m-instruct")
    model = models.load_causal_lm("embedded:smollm2-135m-instruct")
    assert again == first and weights.stat().st_mtime_ns == written  # read from the cache, not dequantised again
    tok = models.load_tokenizer("embedded:smollm2-135m-instruct")
    ids = tok(models.chat_prompt(tok, "Name a colour."), return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_no_model_is_loaded_with_kernels_from_the_hub(tiny_lm_dir, tiny_reward_backbone_dir, simulated_hub):
    """transformers 5 fetches layer kernels from the hub by default when `kernels` is installed: remote code, and a
    download that failed every 4-bit load offline on an H200. Every loader of the lab turns that off."""
    from hubsim import HATE, repo_folder
    from lab.toxicity import ClassifierScorer

    hate = next((repo_folder(simulated_hub / "hub", HATE) / "snapshots").iterdir())
    loaded = [models.load_causal_lm(str(tiny_lm_dir)), models.load_causal_lm(str(tiny_lm_dir), quantize_4bit=True),
              models.load_reward_backbone(str(tiny_reward_backbone_dir)), ClassifierScorer(str(hate)).model]
    assert [m.use_kernels for m in loaded] == [False] * 4
    assert models.load_encoder(str(tiny_reward_backbone_dir)).use_kernels is False  # lab.relevance's encoder


def test_two_threads_loading_at_once_both_get_whole_models_one_load_at_a_time(tiny_lm_dir, tiny_reward_backbone_dir):
    """transformers 5's from_pretrained swaps process-wide globals while it loads (tie_weights made a no-op, the
    default dtype), so a policy loading while the Reward tab loaded a reward model kept its tied lm_head on the meta
    device and the Compare job failed ("Cannot copy out of meta tensor"). Loads now wait for each other."""
    import threading

    held, release, done = threading.Event(), threading.Event(), threading.Event()

    def holder() -> None:
        with models.LOAD_LOCK:
            held.set()
            release.wait(30)

    threading.Thread(target=holder, daemon=True).start()
    assert held.wait(10)
    threading.Thread(target=lambda: (models.load_tokenizer(str(tiny_reward_backbone_dir)), done.set()),
                     daemon=True).start()
    assert not done.wait(1.0)  # a load started while another runs waits for it
    release.set()
    assert done.wait(60)

    errors, metas = [], []

    def load(spec: str, loader, times: int) -> None:
        for _ in range(times):
            try:
                model = loader(spec)
                metas.extend(n for n, p in model.named_parameters() if p.is_meta)
            except Exception as e:  # noqa: BLE001 (any failure is the finding)
                errors.append(repr(e))

    threads = [threading.Thread(target=load, args=(str(tiny_lm_dir), models.load_causal_lm, 6)),
               threading.Thread(target=load, args=(str(tiny_reward_backbone_dir), models.load_reward_backbone, 6))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and metas == []


def test_the_output_layer_gets_a_contiguous_input_and_the_same_logits(tiny_lm_dir):
    """transformers hands lm_head a strided slice of the last positions (generate's first pass, logits_to_keep), and
    PyTorch's CPU matmul then copies a frozen weight once per row (stop 47: 24 rows 1.36 s against 0.01 s for
    SmolLM2-135M in bf16). load_causal_lm makes that input contiguous; the logits are those of the unhooked model."""
    model = models.load_causal_lm(str(tiny_lm_dir)).eval()
    head = model.get_output_embeddings()
    seen = []
    spy = head.register_forward_pre_hook(lambda module, args: seen.append(args[0].is_contiguous()))
    ids = torch.randint(0, model.config.vocab_size, (3, 7))
    with torch.no_grad():
        kept = model(input_ids=ids, logits_to_keep=2).logits
        hooks = dict(head._forward_pre_hooks)
        head._forward_pre_hooks.clear()
        head._forward_pre_hooks.update({k: v for k, v in hooks.items() if k == spy.id})
        plain = model(input_ids=ids, logits_to_keep=2).logits
    assert seen == [True, False]  # ours ran before the spy; without it the slice arrives strided
    assert torch.equal(kept, plain) and kept.shape[1] == 2
    head._forward_pre_hooks.update(hooks)
    models.contiguous_head_input(model)  # twice: one hook
    assert len(head._forward_pre_hooks) == 2
