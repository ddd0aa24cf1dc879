"""lab.generate: chat template + left padding, seeded reproducibility, completions only, adapters on vs off."""

from __future__ import annotations

import pytest
import torch

from lab.generate import (
    CPU_BATCH_SIZE,
    GenerateConfig,
    encode_chat,
    adapter_mode,
    auto_batch_size,
    decode_completions,
    generate_batch,
    plan_batches,
)
from lab import models
from lab.models import add_lora, chat_prompt, load_causal_lm, load_tokenizer
from lab.policies import answer_nll  # scores answers with the encoding generate_batch uses

PROMPTS = ["Zebra quantum pineapple?", "Tell me a joke about cats and their owners.", "Hi", "What is two plus two?"]
SPECIAL = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")


def generate(model, tok, prompts: list[str], config: GenerateConfig) -> list[str]:
    """Completions in prompt order, batch b sampled with seed config.seed + b (as Compare and Feedback do)."""
    out = [""] * len(prompts)
    size = config.batch_size or auto_batch_size(model, config.max_new_tokens + 256)
    for b, idx in enumerate(plan_batches(tok, prompts, size)):
        for i, text in zip(idx, generate_batch(model, tok, [prompts[i] for i in idx], config, config.seed + b)):
            out[i] = text
    return out


@pytest.fixture(scope="module")
def lm(tiny_lm_dir):
    return load_causal_lm(str(tiny_lm_dir)).eval(), load_tokenizer(str(tiny_lm_dir))


@pytest.fixture(scope="module")
def lora_lm(tiny_lm_dir):
    """The tiny LM with LoRA adapters whose weights moved away from the identity (lora_B starts at zero)."""
    model = add_lora(load_causal_lm(str(tiny_lm_dir)), r=4, alpha=8, dropout=0.0)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model.eval()


def cfg(**kw) -> GenerateConfig:
    return GenerateConfig(**{"max_new_tokens": 8, "batch_size": 2, "seed": 3, **kw})


def test_fixed_seed_is_reproducible(lm):
    model, tok = lm
    first = generate(model, tok, PROMPTS, cfg())
    assert first == generate(model, tok, PROMPTS, cfg())
    assert first != generate(model, tok, PROMPTS, cfg(seed=4))


def test_each_batch_has_its_own_seed_whatever_ran_before(lm):
    model, tok = lm
    alone = generate_batch(model, tok, PROMPTS[:2], cfg(), seed=7)
    generate_batch(model, tok, PROMPTS[2:], cfg(), seed=99)  # other sampling in between changes nothing
    assert generate_batch(model, tok, PROMPTS[:2], cfg(), seed=7) == alone


def test_a_stop_ends_every_answer_at_the_next_token_and_none_leaves_them_alone(lm):
    model, tok = lm
    long = cfg(max_new_tokens=40, min_new_tokens=40)  # never ends by itself
    whole = generate_batch(model, tok, PROMPTS[:2], long, seed=7, should_stop=lambda: False)
    assert whole == generate_batch(model, tok, PROMPTS[:2], long, seed=7)  # never asked: the same answers
    calls = iter(range(1000))
    cut = generate_batch(model, tok, PROMPTS[:2], long, seed=7, should_stop=lambda: next(calls) >= 2)
    assert all(len(tok(c).input_ids) < len(tok(w).input_ids) for c, w in zip(cut, whole))


def test_batched_greedy_matches_one_prompt_at_a_time_in_prompt_order(lm):
    model, tok = lm
    greedy = cfg(do_sample=False, precision="fp32", batch_size=3)
    batched = generate(model, tok, PROMPTS, greedy)
    single = [generate_batch(model, tok, [p], greedy, seed=0)[0] for p in PROMPTS]
    assert batched == single


def test_left_padding_and_chat_template(lm):
    _, tok = lm
    enc = encode_chat(tok, PROMPTS[:3], torch.device("cpu"))
    mask = enc["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask[:, 0] == 0).any()  # real tokens end on the right
    assert tok.decode(enc["input_ids"][0][mask[0].bool()]).startswith("<|im_start|>")
    assert "<|im_start|>assistant" in tok.decode(enc["input_ids"][0])
    short = encode_chat(tok, PROMPTS[:3], torch.device("cpu"), max_length=5)  # PPO's cut: the oldest tokens go
    assert short["input_ids"].shape[1] == 5
    assert tok.decode(short["input_ids"][0]).endswith("assistant\n")


def test_special_tokens_are_added_only_where_the_template_wrote_no_bos(lm):
    _, tok = lm
    calls = []

    class Spy:  # a tokenizer without a chat template, recording whether special tokens were asked for
        bos_token, chat_template = "<B>", None

        def __call__(self, texts, **kwargs):
            calls.append(kwargs["add_special_tokens"])
            return tok(texts, **kwargs)

    encode_chat(Spy(), ["<B>with", "<B>both"], "cpu")
    encode_chat(Spy(), ["<B>with", "without"], "cpu")  # judged on every text, not the first
    Spy.bos_token = None
    encode_chat(Spy(), ["no bos token at all"], "cpu")
    assert calls == [False, True, False]


def test_completions_have_no_prompt_echo_and_no_special_tokens(lm):
    model, tok = lm
    out = generate(model, tok, PROMPTS, cfg(max_new_tokens=12, min_new_tokens=12))
    assert all(isinstance(t, str) for t in out)
    for prompt, text in zip(PROMPTS, out):
        assert prompt not in text and "assistant\n" not in text
        assert not any(s in text for s in SPECIAL)


def test_decode_cuts_at_the_first_stop_token(lm):
    _, tok = lm
    hello = tok("Hello there", add_special_tokens=False).input_ids
    junk = tok(" junk after", add_special_tokens=False).input_ids
    row = hello + [tok.eos_token_id] + junk + [tok.pad_token_id]
    assert decode_completions(tok, torch.tensor([row]), {tok.eos_token_id, tok.pad_token_id}) == ["Hello there"]
    stops = {tok.eos_token_id, tok.pad_token_id}
    assert decode_completions(tok, torch.tensor([row]), stops, cut_mark="…") == ["Hello there"]  # it ended
    cut = torch.tensor([hello + junk])  # no stop token: the token limit cut it
    assert decode_completions(tok, cut, stops, cut_mark="…") == ["Hello there junk after…"]
    assert decode_completions(tok, cut, stops) == ["Hello there junk after"]


def test_adapters_on_and_off_are_different_weights(lm, lora_lm):
    plain, tok = lm
    enc = encode_chat(tok, [PROMPTS[0]], torch.device("cpu"))
    with torch.no_grad():
        with adapter_mode(lora_lm, None):
            base_logits = lora_lm(**enc).logits
        with adapter_mode(lora_lm, "default"):
            rlhf_logits = lora_lm(**enc).logits
        plain_logits = plain(**enc).logits
    assert not torch.allclose(base_logits, rlhf_logits, atol=1e-3)
    torch.testing.assert_close(base_logits, plain_logits)  # adapters off = the untouched base model
    greedy = cfg(do_sample=False, precision="fp32", max_new_tokens=6)
    with adapter_mode(lora_lm, None):
        base = generate(lora_lm, tok, PROMPTS, greedy)
    assert base == generate(plain, tok, PROMPTS, greedy)
    with adapter_mode(lora_lm, "default"):
        assert generate(lora_lm, tok, PROMPTS, greedy) != base


def test_adapter_mode_refuses_an_unknown_adapter(lm, lora_lm):
    with pytest.raises(ValueError, match="no adapter 'other'"):
        with adapter_mode(lora_lm, "other"):
            pass
    with pytest.raises(ValueError, match="no adapter"):
        with adapter_mode(lm[0], "default"):
            pass


def test_batches_group_similar_lengths_and_cover_every_prompt(lm):
    _, tok = lm
    batches = plan_batches(tok, PROMPTS, 2)
    assert sorted(i for b in batches for i in b) == list(range(len(PROMPTS)))
    assert batches == plan_batches(tok, PROMPTS, 2)  # deterministic: both models get the same batches
    assert 2 in batches[0]  # "Hi" is the shortest


def test_config_checks_and_preset_dicts(lm):
    from lab.presets import PRESETS

    for preset in PRESETS.values():
        GenerateConfig.from_dict(preset.generate).validate()
    assert GenerateConfig.from_dict({"max_new_tokens": 5, "n_prompts": 3}).max_new_tokens == 5
    with pytest.raises(ValueError, match="temperature"):
        GenerateConfig(temperature=0).validate()
    with pytest.raises(ValueError, match="min_new_tokens"):
        GenerateConfig(max_new_tokens=4, min_new_tokens=5).validate()
    assert auto_batch_size(lm[0], 300, cap=8) == min(8, CPU_BATCH_SIZE)
    for bad in (0.9, 2.5):
        with pytest.raises(ValueError, match="repetition_penalty"):
            GenerateConfig(repetition_penalty=bad).validate()


def test_repetition_penalty_counts_the_answer_not_the_prompt(lm):
    """Greedy, so only the penalty changes the tokens: the first token (nothing of the answer yet) stays the same,
    each answer repeats fewer of its own tokens."""
    model, tok = lm
    greedy = dict(do_sample=False, max_new_tokens=24, min_new_tokens=24)
    plain = generate_batch(model, tok, PROMPTS, cfg(**greedy), seed=0)
    penalised = generate_batch(model, tok, PROMPTS, cfg(**greedy, repetition_penalty=2.0), seed=0)
    first = dict(do_sample=False, max_new_tokens=1, min_new_tokens=1)
    assert generate_batch(model, tok, PROMPTS, cfg(**first), seed=0) == \
        generate_batch(model, tok, PROMPTS, cfg(**first, repetition_penalty=2.0), seed=0)

    def distinct(text: str) -> int:
        return len(set(tok(text, add_special_tokens=False).input_ids))

    # the random tiny model loops on one token (a newline, stripped); penalised, each answer moves on
    assert min(map(distinct, penalised)) > max(map(distinct, plain))


def _nll_alone(model, tok, prompt: str, answer: str) -> float:
    """The definition, one unpadded sequence: -mean log p(answer token | everything before it)."""
    q = tok(chat_prompt(tok, prompt), add_special_tokens=False).input_ids
    a = tok(answer, add_special_tokens=False).input_ids
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([q + a])).logits[0, len(q) - 1:-1]
    return float(-torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(a)[:, None]).mean())


def test_answer_nll_is_the_mean_token_surprise_whatever_the_padding(lm, lora_lm):
    model, tok = lm
    answers = ["Paris.", "A cat sat on the mat and then it slept for a very long time indeed.", "", "Four"]
    got = answer_nll(model, tok, PROMPTS, answers, batch_size=4)  # one batch: rows padded to the longest
    assert got[2] is None  # an empty answer has no tokens to score
    for i in (0, 1, 3):
        assert got[i] == pytest.approx(_nll_alone(model, tok, PROMPTS[i], answers[i]), abs=1e-3)
    assert answer_nll(model, tok, PROMPTS[:1], answers[:1]) == pytest.approx(got[:1], abs=1e-4)
    with adapter_mode(lora_lm, None):  # the reference: adapters off gives the base model's numbers
        assert answer_nll(lora_lm, tok, PROMPTS, answers, batch_size=4) == pytest.approx(got, abs=1e-3)
    assert answer_nll(lora_lm, tok, PROMPTS[:2], answers[:2]) != pytest.approx(got[:2], abs=1e-3)  # adapters on


def test_answer_nll_runs_on_the_mixed_precision_model_ppo_trains(tiny_lm_dir, lm, monkeypatch):
    """PPO stores the frozen matmul weights in bf16 where the CPU has bf16 (the cpu preset on AVX512-BF16) and its
    evaluation asks the same model for each answer's nll: that must run (it raised a dtype error on such a CPU) and
    agree with the fp32 numbers to bf16's precision."""
    model, tok = lm
    answers = ["Paris.", "A cat sat on the mat and then it slept for a very long time indeed."]
    exact = answer_nll(model, tok, PROMPTS[:2], answers)
    monkeypatch.setattr(models, "bf16_native", lambda device: True)  # as on such a CPU, whatever this one is
    mixed = models.cast_frozen_weights(add_lora(load_causal_lm(str(tiny_lm_dir)), r=4, alpha=8, dropout=0.0),
                                       torch.bfloat16)
    assert any(p.dtype == torch.bfloat16 for p in mixed.parameters())
    assert any(p.dtype == torch.float32 for p in mixed.parameters())  # embeddings, norms, adapters
    with adapter_mode(mixed, None):
        assert answer_nll(mixed, tok, PROMPTS[:2], answers) == pytest.approx(exact, rel=0.05)
