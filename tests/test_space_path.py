"""The Space path (`a100` preset) on a simulated hub: tiny stand-ins under the preset's real ids in a Hugging Face
cache, read offline (tests/hubsim.py). Hub loading, the hh-rlhf sample, 4-bit NF4 + LoRA PPO on the CPU, the
no-gradient refusal, and every stage through the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from hubsim import HATE, HH, HH_SUBSETS, JUDGE, MINILM, ROBERTA_BASE, RTP, ZEPHYR
from lab import cli, data, hub_data, models, ppo
from lab.presets import A100

ROOT = Path(__file__).resolve().parents[1]


def test_the_a100_preset_names_the_simulated_ids():
    assert (A100.policy, A100.reward_backbone, A100.pairs, A100.ppo_prompts) == (ZEPHYR, ROBERTA_BASE, HH, RTP)
    assert A100.compare_prompts.startswith(HH) and A100.toxicity == "roberta" and A100.quantize_4bit
    assert A100.relevance == MINILM


# ---------------------------------------------------------------- hub loading


def test_a_cached_hub_id_loads_offline_about_as_fast_as_its_folder(hub):
    folder = models.cached_snapshot(ZEPHYR)
    assert folder is not None and (folder / "config.json").exists()

    def load(spec: str) -> float:
        started = time.perf_counter()
        models.load_tokenizer(spec)
        models.load_causal_lm(spec)
        return time.perf_counter() - started

    load(str(folder))  # warm the imports
    by_folder, by_id = load(str(folder)), load(ZEPHYR)
    assert by_id - by_folder < 5.0, (by_id, by_folder)  # no per-file network retries
    assert models.local_path(ZEPHYR) == str(folder)


def test_a_cached_id_loads_when_the_hub_is_unreachable_without_offline_mode(hub, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(models.hub_reachable, "_probe", lambda: False)  # a Space whose network just went away
    models.hub_reachable.cache_clear()
    assert models.local_path(ZEPHYR) == str(models.cached_snapshot(ZEPHYR))
    assert models.load_causal_lm(ZEPHYR).config.model_type == "mistral"
    assert len(data.load_pairs(HH, limit=4)) == 4


def test_a_legacy_one_part_id_resolves_and_loads_from_the_cache(hub):
    ref = models.resolve(ROBERTA_BASE)
    assert not ref.local and ref.path == ROBERTA_BASE
    assert models.check_available(ROBERTA_BASE) == ref
    backbone = models.load_reward_backbone(ROBERTA_BASE)
    assert backbone.config.model_type == "roberta" and backbone.config.num_labels == 1
    assert models.load_tokenizer(ROBERTA_BASE, padding_side="right").pad_token is not None


def test_an_id_neither_cached_nor_reachable_keeps_the_clear_message(hub):
    for spec in ("someone/not-cached", "gpt2"):
        with pytest.raises(ValueError, match=f"'{spec}' needs the Hugging Face hub, which is not reachable"):
            models.check_available(spec)
    with pytest.raises(ValueError, match="needs the Hugging Face hub"):
        data.load_pairs("someone/no-dataset")


def test_reachability_is_probed_again_after_a_failure_and_a_success_is_kept(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    answers = iter([False, True])
    calls = []

    def probe() -> bool:
        calls.append(1)
        return next(answers)

    probe_obj = models.HubProbe(retry_s=0.2)
    monkeypatch.setattr(probe_obj, "_probe", probe)
    assert probe_obj() is False and probe_obj() is False and len(calls) == 1  # within retry_s: the failure stands
    time.sleep(0.25)
    assert probe_obj() is True and len(calls) == 2  # probed again
    time.sleep(0.25)
    assert probe_obj() is True and len(calls) == 2  # a success holds


# ---------------------------------------------------------------- data


def test_hh_pairs_are_a_seeded_sample_across_every_subset(hub):
    pairs = data.load_pairs(HH, limit=40, seed=1)
    counts = pairs.stats()["subsets"]
    assert set(counts) == set(HH_SUBSETS) and sum(counts.values()) == 40  # not only harmless-base, the first file
    assert min(counts.values()) >= 3 and "red-team-attempts" not in counts
    again = data.load_pairs(HH, limit=40, seed=1).pairs
    assert [p.chosen_text for p in again] == [p.chosen_text for p in pairs.pairs]
    assert [p.chosen_text for p in data.load_pairs(HH, limit=40, seed=2).pairs] != [p.chosen_text for p in again]
    assert hub_data.hub_test_source(HH) == f"{HH}:test"
    test = data.load_pairs(f"{HH}:test")
    assert {p.chosen_text for p in test.pairs}.isdisjoint(p.chosen_text for p in data.load_pairs(HH).pairs)
    assert set(data.load_pairs(f"{HH}/helpful-base:test").stats()["subsets"]) == {"helpful-base"}


def test_real_toxicity_prompts_read_their_nested_prompt_text(hub):
    prompts = data.load_prompts(RTP, limit=5)
    first = json.loads((models.cached_snapshot(RTP, "dataset") / "prompts.jsonl").read_text().splitlines()[0])
    assert len(prompts) == 5 and prompts[0] == first["prompt"]["text"].strip()


def test_compare_prompts_from_hh_rlhf_take_both_kinds(hub):
    """hh-rlhf's test files come subset by subset, harmless-base first: the first n prompts would all be harmful."""
    from lab import compare

    rows = compare.get_prompts(compare.config_from(A100, model_b="x", n_prompts=8))
    assert len(rows) == 8 and [k for _, k in rows].count("harmful or edgy") == 4
    assert [k for _, k in rows].count("ordinary") == 4
    assert data.load_prompts(A100.compare_prompts, limit=8) == [p for p, _ in data.load_prompt_rows(
        A100.compare_prompts, limit=8)]  # the first 8, all harmless-base


def test_hh_rlhf_folders_reach_ppo_as_labels_to_decline_or_not(hub):
    """PPO on hh-rlhf's requests (stop 53): each hub file's folder arrives as its label, so relevance is left out on
    harmless-base (red-teamers' requests, lab.data.expects_decline) and kept on the helpful folders."""
    from lab import ppo

    rows = data.load_prompt_rows(HH, labels=True)
    assert {label for _, label in rows} == set(HH_SUBSETS)
    left_out = ppo.harmful_requests(dict(rows))
    assert left_out == {p for p, label in rows if label == "harmless-base"} and 0 < len(left_out) < len(rows)
    # the Space's PPO prompts joined with the reward data's requests (what the PPO tab offers): both hub sets read,
    # each hh request with its folder's label, a limit keeping some of each
    joined = data.load_prompt_rows(f"{RTP}+{HH}", limit=8, labels=True)
    assert len(joined) == 8 and {label for _, label in joined} & set(HH_SUBSETS)
    assert {p for p, _ in joined} & set(data.load_prompts(RTP)) and ppo.harmful_requests(dict(joined)) <= left_out


def test_the_roberta_toxicity_classifier_loads_from_the_cache(hub):
    from lab.toxicity import ClassifierScorer, get_scorer

    scorer = get_scorer("roberta")
    assert isinstance(scorer, ClassifierScorer) and scorer.name == "roberta" and scorer.fallback_reason is None
    assert scorer.model.config.id2label[scorer.label_index] == "hate"
    scores = scorer.score(["you are kind", "you are awful"])
    assert len(scores) == 2 and all(0 <= s <= 1 for s in scores)
    assert HATE in scorer.description


# ---------------------------------------------------------------- 4-bit NF4 + LoRA + value head, for real on CPU


def _polite(prompts: list[str], responses: list[str]) -> list[float]:
    return [float(len(r)) / 10 for r in responses]  # any reward that differs between answers


@pytest.mark.slow
def test_four_bit_lora_ppo_learns_on_cpu(hub):
    model, tokenizer = ppo.load_trainable_policy(ZEPHYR, quantize_4bit=True, lora=dict(A100.lora))
    layers = models.four_bit_layers(model)
    assert layers and all(layer.weight.quant_type == "nf4" and not layer.support_avx512bf16_for_cpu
                          for layer in layers)
    head = ppo.new_value_head(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = ppo.PPOConfig(steps=2, batch_size=4, mini_batch_size=2, ppo_epochs=2, output_min_length=4,
                        output_max_length=6, learning_rate=1e-2, kl_penalty="k3", bf16=True)
    history = ppo.run_ppo(model, head, tokenizer, ["Say something kind.", "Describe a cat.", "Greet me."], _polite,
                          cfg)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("lora_B" in n for n in changed) and any("lora_A" in n for n in changed)
    assert history[0]["objective/kl"] == pytest.approx(0.0, abs=1e-6)  # policy = reference before any update
    assert history[1]["objective/kl"] > 0  # after one, they differ


def test_a_ppo_update_without_gradients_is_refused(tiny_lm_dir, monkeypatch):
    model, tokenizer = ppo.load_trainable_policy(str(tiny_lm_dir), quantize_4bit=False, lora={"r": 4, "alpha": 8})
    head = ppo.new_value_head(model)
    forward = ppo.forward_policy

    def cut(*args, **kwargs):  # what a no-backward 4-bit layout does: the log-probs no longer depend on LoRA
        logprobs, values = forward(*args, **kwargs)
        return logprobs.detach(), values

    monkeypatch.setattr(ppo, "forward_policy", cut)
    cfg = ppo.PPOConfig(steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, output_min_length=3,
                        output_max_length=3)
    with pytest.raises(RuntimeError, match="no trainable parameter of the policy received a gradient"):
        ppo.run_ppo(model, head, tokenizer, ["Hi.", "Hello."], _polite, cfg)


def test_gradient_checkpointing_recomputes_layers_in_eval_mode(tiny_lm_dir):
    model, _ = ppo.load_trainable_policy(str(tiny_lm_dir), quantize_4bit=False, lora={"r": 4, "alpha": 8})
    ids = torch.tensor([[5, 6, 7, 8, 9]], device=model.device)  # on CUDA the model is there

    def grads_and_calls() -> tuple[list[torch.Tensor], int]:
        calls = []
        mlp = model.get_base_model().model.layers[0].mlp
        forward = mlp.forward
        mlp.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # hooks do not fire in the recompute
        model.zero_grad()
        model(input_ids=ids).logits.float().square().mean().backward()
        mlp.forward = forward
        return [p.grad.clone() for p in model.parameters() if p.requires_grad], len(calls)

    plain, once = grads_and_calls()
    models.enable_checkpointing(model)
    model.eval()
    checkpointed, twice = grads_and_calls()
    assert (once, twice) == (1, 2)  # the backward pass ran the layer again instead of keeping its activations
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, checkpointed))
    assert not any(m.training for m in model.modules() if isinstance(m, torch.nn.Dropout))


def test_another_stand_in_with_a_short_position_table_trains_at_its_own_length(simulated_hub, tmp_path,
                                                                                 monkeypatch, runs_root):
    import huggingface_hub.constants

    import hubsim
    from lab import reward
    from lab.cli import run_job

    cache = tmp_path / "hub"  # the same ids, another distilroberta-base: 64 positions where the preset asks 512
    cache.mkdir()
    (cache / "datasets--Anthropic--hh-rlhf").symlink_to(simulated_hub / "hub" / "datasets--Anthropic--hh-rlhf")
    short = tmp_path / "short"
    short.mkdir()
    hubsim._roberta(short, classifier=False, max_positions=66)
    hubsim.save_repo(cache, ROBERTA_BASE, short)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    config = reward.prepare(A100, {"max_steps": 2, "batch_size": 4, "max_pairs": 16, "max_eval_pairs": 8})
    assert config["max_length"] == 512 and config["backbone"] == ROBERTA_BASE
    job = run_job(reward.KIND, reward.train_reward, config, on_metrics=None)
    assert job.status == "done" and job.summary["max_length"] == 64 and "cut to 64" in job.summary["max_length_note"]


# ---------------------------------------------------------------- every stage through the command line


def _main(argv: list[str], capsys) -> list[dict]:
    assert cli.main(argv) == 0, capsys.readouterr().err
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.mark.slow
def test_the_a100_preset_runs_every_stage_offline_from_the_cli(hub, runs_root, monkeypatch, capsys):
    monkeypatch.setenv("LAB_PRESET", "a100")
    stats = _main(["data", HH, "--limit", "24"], capsys)[0]
    assert stats["pairs"] == 24 and len(stats["subsets"]) == 4

    reward = _main(["reward", "--train", HH, "--max-pairs", "40", "--max-steps", "3", "--batch-size", "4",
                    "--max-length", "64", "--out", str(runs_root / "rw")], capsys)[-1]
    assert reward["status"] == "done" and reward["train_pairs"] == 40
    assert set(reward["subsets"]["train"]) == set(HH_SUBSETS) and sum(reward["subsets"]["train"].values()) == 40
    assert sum(reward["subsets"]["eval"].values()) == reward["eval_pairs"] > 0  # the test split
    config = json.loads((runs_root / "rw" / "model" / "config.json").read_text())
    assert config["model_type"] == "roberta"

    rows = _main(["ppo", "--reward-model", str(runs_root / "rw"), "--steps", "2", "--batch-size", "4",
                  "--mini-batch-size", "2", "--ppo-epochs", "1", "--output-min-length", "4",
                  "--output-max-length", "6", "--learning-rate", "1e-2", "--relevance-coef", "1",
                  "--no-relevance-on-harmful", "--eval-answers-per-prompt", "2", "--degenerate-penalty", "1",
                  "--out", str(runs_root / "ppo")], capsys)
    assert rows[-1]["status"] == "done" and rows[-1]["steps"] == 2
    # real-toxicity-prompts labels no request harmful: relevance was left out on none, and the summary says so
    assert rows[-1]["relevance_left_out"][0] == 0 and rows[-1]["relevance_left_out"][1] > 0
    assert all(-1 <= r["env/relevance"] <= 1 for r in rows if "env/reward_mean" in r)  # the hub's sentence encoder
    assert all(0 <= r["env/degenerate"] <= 1 for r in rows if "env/reward_mean" in r)  # the text rules, every step
    run_config = json.loads((runs_root / "ppo" / "config.json").read_text())
    assert run_config["degenerate_penalty"] == 1.0
    assert run_config["policy"] == ZEPHYR and run_config["quantize_4bit"] and run_config["prompts"] == RTP
    assert run_config["gradient_checkpointing"] is False and run_config["memory_gb"]["peak"] > 0
    from safetensors.torch import load_file

    adapters = load_file(str(runs_root / "ppo" / "model" / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in adapters.items())  # LoRA learned (starts at 0)
    evals = [json.loads(line) for line in (runs_root / "ppo" / "evals.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals] == [0, 2] and all(r["eval/judge"] is not None for r in evals)
    assert all(r["eval/relevance"] is not None for r in evals)
    assert all(r["n"] == 2 * r["prompts"] for r in evals)  # two answers to each prompt on the 4-bit policy too
    # PPO-ptx on the 4-bit policy (the full forward: no shared trunk under quantisation), imitating the chosen
    # answers of the hub pairs' helpful subsets the reward run's proxy trained on
    ptx = _main(["ppo", "--reward-model", str(runs_root / "rw"), "--steps", "1", "--batch-size", "2",
                 "--mini-batch-size", "2", "--ppo-epochs", "1", "--output-min-length", "4", "--output-max-length", "4",
                 "--imitation-coef", "0.5", "--imitation-batch-size", "2", "--eval-every", "0",
                 "--out", str(runs_root / "ptx")], capsys)
    assert ptx[-1]["status"] == "done" and 0 < ptx[0]["ppo/loss/imitation"] < 50

    out = runs_root / "cmp.csv"
    compare = _main(["compare", "--run", str(runs_root / "ppo"), "--n", "3", "--max-new-tokens", "6",
                     "--out", str(out)], capsys)[-1]
    assert compare["status"] == "done" and compare["n"] == 3 and compare["scorer"] == "roberta"
    assert compare["prompts"] == A100.compare_prompts and compare["reward_rlhf"] is not None and out.exists()
    assert compare["judge"] == A100.judge == JUDGE and compare["paired_judge"]["n"] == 3  # the public judge scored
    assert compare["paired_relevance"]["n"] == 3 and compare["relevance_rlhf"] is not None
    # the reward run's hub pairs re-split as it split them: its training requests against its test split's
    familiar = compare["familiarity"]
    assert familiar["n"] == 3 and 0 < familiar["trained"] <= 40 and familiar["held_out"] >= 5, familiar
    # hh-rlhf's test prompts say their kind: the decline watch reads the harmful part of the saved summary's by_kind
    saved = json.loads((Path(compare["run"]) / "status.json").read_text())["summary"]
    kinds = {part["kind"] for part in saved["by_kind"]}
    assert saved["only_kind"] is None and kinds == {data.HARMFUL_KIND, data.ORDINARY_KIND}
    # the base's best of 2 by the reward model, against the run: the 4-bit policy with its adapters off, sampled twice
    # two answers a prompt (the a100 preset gives one): both sides draw twice on the 4-bit policy; intervals per prompt
    picked = _main(["compare", "--against", "base best-of-2", "--run", str(runs_root / "ppo"), "--n", "2",
                    "--max-new-tokens", "6", "--answers-per-prompt", "2", "--repetition-penalty", "1.2"], capsys)[-1]
    assert picked["status"] == "done" and picked["model_a"] == "base best-of-2" and picked["n"] == 2
    assert picked["answers"] == 4 and picked["answers_per_prompt"] == 2 and picked["paired"]["n"] == 2
    assert picked["kl_a"] == pytest.approx(0.193, abs=1e-3) and picked["reward_base"] is not None
    from lab.ui.compare_summary import sampling_line  # the a100 preset samples without a penalty unless asked

    sampled = [sampling_line(json.loads((Path(r["run"]) / "config.json").read_text())) for r in (compare, picked)]
    assert "no repetition penalty" in sampled[0] and "repetition penalty 1.2" in sampled[1]

    feedback = _main(["feedback", "generate", "--set", "space", "--n", "2", "--max-new-tokens", "6"], capsys)[-1]
    assert feedback["status"] == "done" and feedback["pairs"] + feedback["skipped_empty_or_identical"] == 2
    listed = _main(["feedback", "list"], capsys)
    assert any(row["name"] == "space" for row in listed)


def test_a_fresh_process_reads_the_simulated_hub_from_hf_home_alone(simulated_hub, tmp_path):
    env = {**os.environ, "HF_HOME": str(simulated_hub), "HF_HUB_OFFLINE": "1", "LAB_PRESET": "a100",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    env.pop("HF_HUB_CACHE", None)  # $HF_HOME/hub, as on a Space
    out = subprocess.run([sys.executable, "-m", "lab", "data", HH, "--limit", "8"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.splitlines()[0])["pairs"] == 8


@pytest.mark.skipif(torch.cuda.is_available(), reason="with CUDA the script runs the check itself")
def test_the_gpu_check_says_it_skipped_without_cuda():
    out = subprocess.run(["bash", "scripts/gpu-check.sh", sys.executable], cwd=ROOT, capture_output=True, text=True,
                         timeout=120, env={k: v for k, v in os.environ.items() if k != "GPU_CHECK_ON_CPU"})
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["device"] == "cpu" and "no CUDA GPU" in row["skipped"]
