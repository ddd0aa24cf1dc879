"""Reward model: training with RewardTrainer, scoring, left truncation, stop, reload, CLI and the tab's handlers."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lab import cli, reward, reward_data, reward_eval, reward_model
from lab.data import load_pairs
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.runs import open_run


def _write_pairs(path: Path, n: int = 24) -> Path:
    """Single- and multi-turn HH pairs where the chosen answer is polite and the rejected one rude."""
    rows = []
    for i in range(n):
        context = f"\n\nHuman: question number {i} about cooking?" + (
            "\n\nAssistant: Sure.\n\nHuman: And then?" if i % 3 == 0 else ""
        )
        rows.append({
            "chosen": f"{context}\n\nAssistant: Here is a careful, kind answer number {i}.",
            "rejected": f"{context}\n\nAssistant: Go away, idiot {i}.",
        })
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _config(backbone: Path, data: Path | str, **overrides) -> dict:
    cfg = reward.RewardConfig(data=str(data), backbone=str(backbone), batch_size=4, max_length=64,
                              learning_rate=1e-3, warmup_ratio=0.0, logging_steps=1, eval_fraction=0.25)
    return {**asdict(cfg), **overrides}


@pytest.fixture(scope="module")
def trained(tiny_reward_backbone_dir, tmp_path_factory):
    """One short training run of the tiny backbone, shared by the tests that only read it."""
    root = tmp_path_factory.mktemp("reward-runs")
    data = _write_pairs(root / "pairs.jsonl")
    job = JobManager(root=root, mark_interrupted=False).run_sync(
        reward.KIND, reward.train_reward, _config(tiny_reward_backbone_dir, data, max_steps=6, eval_every=3)
    )
    assert job.status == "done", job.error
    return job


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_training_changes_parameters_and_logs_loss_and_accuracy(trained, tiny_reward_backbone_dir):
    before, after = _weights(tiny_reward_backbone_dir), _weights(trained.run.model_dir)
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert "classifier.weight" in changed and any(k.startswith("bert.encoder") for k in changed)
    rows = trained.run.metrics()
    train_rows = [r for r in rows if "loss" in r]
    eval_rows = [r for r in rows if "eval_accuracy" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4, 5, 6]
    assert all(0 <= r["accuracy"] <= 1 and r["loss"] > 0 and "margin" in r for r in train_rows)
    assert [r["step"] for r in eval_rows] == [3, 6] and all("eval_loss" in r for r in eval_rows)
    # every held-out pair counts once (TRL's own evaluation would average per-batch accuracies)
    assert all(abs(r["eval_accuracy"] * 6 - round(r["eval_accuracy"] * 6)) < 1e-4 for r in eval_rows)
    summary = trained.summary
    assert summary["train_pairs"] == 18 and summary["eval_pairs"] == 6 and summary["steps"] == 6
    assert 0 <= summary["eval_accuracy"] <= 1 and open_run(trained.run.path).status()["status"] == "done"


def test_weight_average_is_the_mean_of_the_final_steps_and_skips_frozen_weights():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    frozen = model[0].weight.detach().clone()
    average = reward.WeightAverage(model, start_step=3)
    for step in range(1, 6):
        with torch.no_grad():
            model[1].weight.fill_(float(step))
        average.update(step)
    assert average.apply() == 3
    assert torch.allclose(model[1].weight, torch.full((1, 2), 4.0))  # mean of steps 3, 4, 5
    assert torch.equal(model[0].weight, frozen)
    untouched = reward.WeightAverage(model, start_step=10)
    untouched.update(5)
    assert untouched.apply() == 0 and torch.allclose(model[1].weight, torch.full((1, 2), 4.0))


def test_training_with_weight_averaging_saves_the_averaged_weights(tiny_reward_backbone_dir, tmp_path):
    data = _write_pairs(tmp_path / "pairs.jsonl")
    manager = JobManager(root=tmp_path / "runs", mark_interrupted=False)
    last = manager.run_sync(reward.KIND, reward.train_reward,
                            _config(tiny_reward_backbone_dir, data, max_steps=4, average_last=0.0))
    mean = manager.run_sync(reward.KIND, reward.train_reward,
                            _config(tiny_reward_backbone_dir, data, max_steps=4, average_last=0.5))
    assert last.status == mean.status == "done", (last.error, mean.error)
    assert last.summary["averaged_steps"] == 0 and mean.summary["averaged_steps"] == 2
    assert mean.run.metrics()[-1]["averaged_steps"] == 2 and "eval_accuracy" in mean.run.metrics()[-1]
    # same seed and data: the runs only differ in what is saved (mean of steps 3-4 vs the weights after step 4)
    a, b = _weights(last.run.model_dir), _weights(mean.run.model_dir)
    assert not torch.equal(a["classifier.weight"], b["classifier.weight"])
    with pytest.raises(ValueError, match="average_last"):
        reward.validate(reward.RewardConfig(average_last=1.5))


def test_ensemble_trains_each_member_with_its_own_seed_and_averages_their_rewards(tiny_reward_backbone_dir,
                                                                                  tmp_path):
    from lab.models import load_reward_backbone

    data = _write_pairs(tmp_path / "pairs.jsonl")
    job = JobManager(root=tmp_path / "runs", mark_interrupted=False).run_sync(
        reward.KIND, reward.train_reward, _config(tiny_reward_backbone_dir, data, max_steps=3, ensemble=2))
    assert job.status == "done", job.error
    assert job.summary["members"] == 2 and job.summary["steps"] == 6
    rows = job.run.metrics()
    train_rows = [r for r in rows if "loss" in r]
    assert [(r["step"], r["member"]) for r in train_rows] == [(1, 1), (2, 1), (3, 1), (4, 2), (5, 2), (6, 2)]
    assert rows[-1]["members"] == 2 and rows[-1]["step"] == 6 and "eval_accuracy" in rows[-1]
    folder = job.run.model_dir
    meta = json.loads((folder / reward.META_FILE).read_text())
    assert meta["members"] == ["member-2"]
    first, second = _weights(folder), _weights(folder / "member-2")
    assert not torch.equal(first["classifier.weight"], second["classifier.weight"])  # another seed, another model
    ensemble = reward_model.load_reward_model(job.run.path)
    assert len(ensemble.members) == 2
    alone = [reward.RewardModel(load_reward_backbone(str(f)), ensemble.tokenizer, 64, answer_segment=True)
             for f in (folder, folder / "member-2")]
    texts = [p.chosen_text for p in load_pairs(str(data)).pairs[:5]]
    each = [m.score(texts) for m in alone]
    assert ensemble.score(texts) == pytest.approx([(a + b) / 2 for a, b in zip(*each)], abs=1e-5)
    samples = job.run.samples()  # the final evaluation scored the ensemble, as a reload does
    reloaded = ensemble.pair_scores([(s["prompt"] + s["chosen"], s["prompt"] + s["rejected"]) for s in samples])
    saved = [x for s in samples for x in (s["reward_chosen"], s["reward_rejected"])]
    assert saved == pytest.approx([x for pair in reloaded for x in pair], abs=1e-4)
    with pytest.raises(ValueError, match="ensemble"):
        reward.validate(reward.RewardConfig(ensemble=0))


def test_stop_during_a_later_member_keeps_the_finished_ones(tiny_reward_backbone_dir, runs_root, tmp_path):
    data = _write_pairs(tmp_path / "pairs.jsonl")
    manager = JobManager(root=runs_root)
    job = manager.start(reward.KIND, reward.train_reward,
                        _config(tiny_reward_backbone_dir, data, max_steps=40, ensemble=3, eval_fraction=0.0),
                        owner="alice")
    deadline = time.time() + 120
    while not any(r.get("member") == 2 for r in job.run.metrics()) and time.time() < deadline:
        time.sleep(0.02)
    manager.stop("alice")
    manager.wait(120)
    assert job.status == "stopped" and job.summary["members"] == 1 and 41 <= job.summary["steps"] < 80
    assert json.loads((job.run.model_dir / reward.META_FILE).read_text())["members"] == []
    assert len(reward_model.load_reward_model(job.run.path).members) == 1


def test_saved_model_reloads_to_same_scores(trained):
    samples = trained.run.samples()
    for path in (trained.run.path, trained.run.model_dir):
        model = reward_model.load_reward_model(path)
        scores = model.pair_scores([(s["prompt"] + s["chosen"], s["prompt"] + s["rejected"]) for s in samples])
        for s, (c, r) in zip(samples, scores):
            assert (c, r) == pytest.approx((s["reward_chosen"], s["reward_rejected"]), abs=1e-4)
    assert model.max_length == 64  # read back from the model folder


def test_score_ranks_pairs_consistently_with_accuracy(trained):
    model = reward.RewardModel.load(trained.run.path)
    pairs = load_pairs("bundled:test").pairs
    chosen = model.score([p.chosen_text for p in pairs], batch_size=5)
    rejected = model.score([p.rejected_text for p in pairs], batch_size=7)
    assert all(isinstance(x, float) for x in chosen + rejected)
    margins = model.margins(pairs)
    assert margins == pytest.approx([c - r for c, r in zip(chosen, rejected)], abs=1e-5)  # padding changes nothing
    metrics, _ = reward_eval.evaluate(model, pairs)
    assert metrics["eval_accuracy"] == round(sum(c > r for c, r in zip(chosen, rejected)) / len(pairs), 6)
    assert model.score([]) == []


def test_left_truncation_keeps_the_last_turn(tiny_reward_backbone_dir):
    model = reward.RewardModel.load(tiny_reward_backbone_dir)
    tok = model.tokenizer
    long_dialogue = "".join(f"\n\nHuman: old question {i}\n\nAssistant: old answer {i}" for i in range(60))
    text = long_dialogue + "\n\nHuman: what is your favourite animal?\n\nAssistant: the zebra, clearly."
    (ids,) = reward_model.encode(tok, [text], 32)
    assert len(ids) == 32 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.decode(ids[1:-1]).endswith("assistant : the zebra, clearly.")
    data = reward._dataset(tok, load_pairs("bundled").pairs, 32)
    assert len(data) == 204 and max(data["length"]) <= 32  # RewardTrainer filters nothing out


def test_answer_segment_marks_the_final_answer_and_keeps_the_last_turn(tiny_reward_backbone_dir):
    tok = reward.RewardModel.load(tiny_reward_backbone_dir).tokenizer
    long_dialogue = "".join(f"\n\nHuman: old question {i}\n\nAssistant: old answer {i}" for i in range(60))
    text = long_dialogue + "\n\nHuman: what is your favourite animal?\n\nAssistant: the zebra, clearly."
    (x,) = reward.encode_inputs(tok, [text], 32, segments=True)
    ids, types = x["input_ids"], x["token_type_ids"]
    assert len(ids) == len(types) == 32 and ids[0] == tok.cls_token_id and ids.count(tok.sep_token_id) == 2
    first_answer_token = types.index(1)
    assert tok.decode(ids[first_answer_token:-1]) == "the zebra, clearly."  # segment B: the answer, whole
    assert tok.decode(ids[1:first_answer_token - 1]).endswith("what is your favourite animal? assistant :")
    assert set(types[:first_answer_token]) == {0} and set(types[first_answer_token:]) == {1}
    (plain,) = reward.encode_inputs(tok, ["no dialogue markers here"], 32, segments=True)
    assert tok.decode(plain["input_ids"], skip_special_tokens=True) == "no dialogue markers here"
    assert reward.encode_inputs(tok, [text], 32, segments=False) == [{"input_ids": reward_model.encode(tok, [text], 32)[0]}]
    assert reward.encode_inputs(tok, [], 32, segments=True) == []


def test_preference_collator_pads_ids_masks_and_token_types():
    batch = reward.PreferenceCollator(pad_token_id=0)([
        {"chosen_ids": [5, 6, 7], "rejected_ids": [5, 8], "chosen_token_type_ids": [0, 1, 1],
         "rejected_token_type_ids": [0, 1]},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 8, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 1, 1], [0, 1, 0]]
    assert "token_type_ids" not in reward.PreferenceCollator(0)([{"chosen_ids": [1], "rejected_ids": [2, 3]}])


def test_models_saved_before_answer_segments_still_read_one_text(trained, tmp_path):
    import shutil

    meta = json.loads((trained.run.model_dir / reward.META_FILE).read_text())
    assert meta["answer_segment"] is True  # a BERT-style backbone: trained with the answer as segment B
    old = tmp_path / "old-model"
    shutil.copytree(trained.run.model_dir, old)
    del meta["answer_segment"]
    (old / reward.META_FILE).write_text(json.dumps(meta))
    assert reward.RewardModel.load(old).segments is False
    assert reward.RewardModel.load(trained.run.model_dir).segments is True


def test_freeze_bottom_fixes_embeddings_and_first_layers(tiny_reward_backbone_dir):
    from lab.models import load_reward_backbone

    model = load_reward_backbone(str(tiny_reward_backbone_dir))
    reward.freeze_bottom(model, 1)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert all(n.startswith(("bert.embeddings.", "bert.encoder.layer.0.")) for n in frozen)
    assert "bert.embeddings.LayerNorm.weight" in frozen and "bert.encoder.layer.0.output.dense.weight" in frozen
    assert model.classifier.weight.requires_grad and model.bert.encoder.layer[1].output.dense.weight.requires_grad
    # Asking for more layers than a backbone has freezes all but the top one, which always trains.
    small = load_reward_backbone(str(tiny_reward_backbone_dir))
    reward.freeze_bottom(small, 3)
    assert not small.bert.encoder.layer[0].output.dense.weight.requires_grad
    assert small.bert.encoder.layer[1].output.dense.weight.requires_grad and small.classifier.weight.requires_grad


def test_format_for_reward_is_hh_text():
    assert reward_model.format_for_reward("Hi there ", " Hello!") == "\n\nHuman: Hi there\n\nAssistant: Hello!"


def test_stop_mid_training_ends_the_job_and_leaves_a_loadable_model(tiny_reward_backbone_dir, runs_root, tmp_path):
    data = _write_pairs(tmp_path / "pairs.jsonl")
    manager = JobManager(root=runs_root)
    job = manager.start(reward.KIND, reward.train_reward,
                        _config(tiny_reward_backbone_dir, data, max_steps=100_000, eval_fraction=0.0), owner="alice")
    deadline = time.time() + 120
    while not any(r.get("step", 0) >= 2 for r in job.run.metrics()) and time.time() < deadline:
        time.sleep(0.05)
    with pytest.raises(ValueError, match="only the visitor"):
        manager.stop("bob")
    manager.stop("alice")
    manager.wait(120)
    assert job.status == "stopped" and 2 <= job.summary["steps"] < 100_000
    assert job.run.status()["status"] == "stopped"
    assert len(reward_model.load_reward_model(job.run.path).score(["\n\nHuman: hi\n\nAssistant: hello"])) == 1


def test_cli_trains_into_out_and_scores(tiny_reward_backbone_dir, tmp_path, capsys):
    out = tmp_path / "rm"
    code = cli.main(["--preset", "cpu", "reward", "--train", "bundled", "--backbone", str(tiny_reward_backbone_dir),
                     "--max-steps", "2", "--batch-size", "4", "--max-length", "64", "--out", str(out)])
    assert code == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any("loss" in row for row in lines[:-1])
    last = lines[-1]
    assert {"eval_accuracy", "eval_loss", "train_pairs", "eval_pairs", "steps", "seconds"} <= set(last)
    # bundled: eval on its test split; the cpu preset holds a quarter of the 166 training pairs out for the judge
    # (42) and adds half as many broken-text pairs (62), a quarter as many evasion pairs (31) and a quarter as many
    # refusal-over-harm pairs (31) to the other 124
    assert (last["train_pairs"], last["eval_pairs"], last["steps"]) == (124 + 62 + 31 + 31, 38, 2)
    assert last["judge_pairs"] == 42 + 21 + 10 + 10 and last["subsets"]["train"]["evasion"] == 31
    assert last["subsets"]["train"]["refusal-over-harm"] == 31
    assert (out / "config.json").exists() and (out / "model" / "config.json").exists()
    assert cli.main(["score", "--reward-model", str(out / "model"), "bundled:test"]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["pairs"] == 38 and scored["accuracy"] == pytest.approx(last["eval_accuracy"])


@pytest.mark.parametrize("argv", [
    ["reward", "--train", "missing.jsonl"],
    ["reward", "--train", "bundled", "--lr", "-1"],
    ["reward", "--train", "bundled", "--max-length", "4"],
    ["reward", "--train", "bundled", "--batch-size", "999"],
    ["reward", "--train", "bundled", "--eval-fraction", "1.5"],
    ["reward", "--train", "bundled", "--backbone", "/no/such/model"],
    ["score", "--reward-model", "/no/such/run", "bundled"],
])
def test_cli_bad_input_exits_2_with_one_line(argv, runs_root, capsys):
    assert cli.main(["--preset", "cpu", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not runs_root.exists() or not any(runs_root.iterdir())  # refused before a run folder was made


def test_cli_refuses_an_existing_run_folder(tiny_reward_backbone_dir, trained, capsys):
    argv = ["--preset", "cpu", "reward", "--train", "bundled", "--backbone", str(tiny_reward_backbone_dir),
            "--max-steps", "1", "--out", str(trained.run.path)]
    assert cli.main(argv) == 2
    assert "not an empty folder" in capsys.readouterr().err


# ---------------------------------------------------------------- the Reward tab's handlers


# ---------------------------------------------------------------- the real backbone


@pytest.mark.slow
def test_cli_trains_the_embedded_minilm_on_bundled_data(tmp_path, capsys):
    out = tmp_path / "minilm"
    assert cli.main(["--preset", "cpu", "reward", "--train", "bundled", "--max-steps", "3", "--out", str(out)]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["status"] == "done" and last["steps"] == 3 and last["eval_pairs"] == 38
    assert 0 <= last["eval_accuracy"] <= 1
    model = reward_model.load_reward_model(out)
    assert model.max_length == reward.config_from(get_preset("cpu")).max_length
    assert len(model.score([reward_model.format_for_reward("hi", "hello")])) == 1


def test_judge_split_is_disjoint_seeded_and_keeps_duplicates_together():
    pairs = load_pairs("bundled:train").pairs
    doubled = pairs + pairs[:10]  # the same pair twice must not end up on both sides
    proxy, judge = reward_data.judge_split(doubled, 0.3, seed=42)
    keys = {(p.prompt, p.chosen, p.rejected) for p in proxy}
    assert keys.isdisjoint({(p.prompt, p.chosen, p.rejected) for p in judge})
    assert len(proxy) + len(judge) == len(doubled) and 0.25 < len(judge) / len(doubled) < 0.35
    assert reward_data.judge_split(doubled, 0.3, seed=42) == (proxy, judge)
    assert reward_data.judge_split(pairs, 0.0, seed=1) == (pairs, [])
    # a handful of votes under the cpu preset's default judge: no judge, the proxy keeps every pair
    assert reward_data.judge_split(pairs[:6], 0.25, seed=1) == (pairs[:6], [])


def test_the_judge_never_trains_on_the_proxys_pairs(tiny_reward_backbone_dir, tmp_path, monkeypatch):
    data = _write_pairs(tmp_path / "pairs.jsonl", n=32)
    seen: list[list[tuple[str, str, str]]] = []
    real_dataset = reward._dataset

    def spy(tokenizer, pairs, max_length, segments=False):
        seen.append([(p.prompt, p.chosen, p.rejected) for p in pairs])
        return real_dataset(tokenizer, pairs, max_length, segments)

    monkeypatch.setattr(reward, "_dataset", spy)
    job = JobManager(root=tmp_path / "runs", mark_interrupted=False).run_sync(
        reward.KIND, reward.train_reward, _config(tiny_reward_backbone_dir, data, max_steps=3, judge_fraction=0.25,
                                                 judge_max_steps=2))
    assert job.status == "done", job.error
    assert job.summary["steps"] == 3 and job.summary["judge_steps"] == 2  # the judge's own cap
    assert len(seen) == 2  # the proxy's pairs, then the judge's
    proxy_pairs, judge_pairs = map(set, seen)
    assert proxy_pairs and judge_pairs and proxy_pairs.isdisjoint(judge_pairs)
    summary = job.summary
    assert summary["train_pairs"] == len(proxy_pairs) and summary["judge_pairs"] == len(judge_pairs)
    assert summary["judge_seed"] == 42 + reward_data.JUDGE_SEED_OFFSET and "judge_eval_accuracy" in summary
    judge_dir = job.run.path / reward_model.JUDGE_DIR
    assert reward_model.judge_path(str(job.run.path)) == str(judge_dir)
    assert reward_model.judge_path(str(job.run.model_dir)) == str(judge_dir)
    assert reward_model.judge_path("", "OpenAssistant/reward-model-deberta-v3-large-v2").startswith("OpenAssistant/")
    proxy_w, judge_w = _weights(job.run.model_dir), _weights(judge_dir)
    assert not torch.equal(proxy_w["classifier.weight"], judge_w["classifier.weight"])
    judge = reward_model.load_judge(str(judge_dir))
    assert len(judge.score(["\n\nHuman: hi\n\nAssistant: hello"])) == 1
    rows = job.run.metrics()
    assert any("judge/loss" in r for r in rows)  # the judge's curve is kept apart from the proxy's
    assert max(r["step"] for r in rows if "loss" in r) == 3
    with pytest.raises(ValueError, match="judge fraction"):
        reward.validate(reward.RewardConfig(judge_fraction=1.0))
    with pytest.raises(ValueError, match="judge_max_steps -1 must be 0"):
        reward.validate(reward.RewardConfig(judge_max_steps=-1))


def test_policy_answer_pairs_sample_the_policy_once_and_join_the_proxys_training(tiny_reward_backbone_dir,
                                                                                 tiny_lm_dir, tmp_path, monkeypatch):
    """With policy_pairs on, the reward stage samples the policy (the tiny random Llama) before training: its answers
    become the rejected side of extra pairs in the proxy's and the judge's training, and the held-out dialogues give
    the policy-answer accuracy; the model is loaded once."""
    data = _write_pairs(tmp_path / "pairs.jsonl", n=32)
    seen: list[list] = []
    real_dataset, real_load = reward._dataset, reward.models.load_causal_lm
    loads: list[str] = []
    monkeypatch.setattr(reward, "_dataset",
                        lambda tok, pairs, *a: seen.append(list(pairs)) or real_dataset(tok, pairs, *a))
    monkeypatch.setattr(reward.models, "load_causal_lm", lambda spec, **kw: loads.append(spec) or real_load(spec, **kw))
    config = _config(tiny_reward_backbone_dir, data, max_steps=2, judge_fraction=0.25, judge_max_steps=1,
                     policy_pairs=0.5, policy=str(tiny_lm_dir), policy_tokens=6)
    job = JobManager(root=tmp_path / "runs", mark_interrupted=False).run_sync(reward.KIND, reward.train_reward, config)
    assert job.status == "done", job.error
    assert loads == [str(tiny_lm_dir)]
    proxy, judge = seen
    made = [p for p in proxy if p.subset == "policy-answer"]
    originals = {p.prompt: p for p in proxy if p.subset is None}
    assert len(made) == round(0.5 * len(originals)) and job.summary["subsets"]["train"]["policy-answer"] == len(made)
    for pair in made:  # the written answer kept (cut to the sample's words when the sample was cut), the sample below
        assert pair.prompt in originals and pair.rejected.strip() and pair.rejected != originals[pair.prompt].rejected
        assert originals[pair.prompt].chosen.startswith(pair.chosen)
    assert any(p.subset == "policy-answer" for p in judge)
    assert {p.prompt for p in judge}.isdisjoint(originals)  # the judge's dialogues stay its own
    assert 0 <= job.summary["eval_policy_accuracy"] <= 1
    with pytest.raises(ValueError, match="policy_pairs -0.5 must be 0"):
        reward.validate(reward.RewardConfig(policy_pairs=-0.5))
    assert reward.config_from(get_preset("cpu")).policy == get_preset("cpu").policy


@pytest.mark.slow
def test_bundled_reward_model_ranks_broken_text_and_canned_refusals_low(runs_root):
    """The embedded backbone on the bundled pairs with broken pairs added: held-out chosen answers outscore their
    corrupted copies, and on ordinary requests good answers outscore canned refusals (balanced data)."""
    config = reward.prepare(get_preset("cpu"), {"data": "bundled", "max_steps": 40, "broken_pairs": 0.5,
                                                "evasion_pairs": 0.0, "refusal_over_harm_pairs": 0.0,
                                                "judge_fraction": 0.0, "seed": 1})
    job = JobManager(root=runs_root, mark_interrupted=False).run_sync(reward.KIND, reward.train_reward, config)
    assert job.status == "done", job.error
    assert job.summary["train_pairs"] == 166 + 83  # the broken pairs joined the bundled training pairs
    assert job.summary["eval_broken_accuracy"] >= 0.8
    assert job.summary["refusal_preference"] <= 0.2
    assert job.summary["padding_n"] == 3 * 38 and 0 <= job.summary["padding_share_up"] <= 1


def test_augmented_adds_each_kind_of_pair_its_setting_asks_for():
    pairs = load_pairs("bundled").split("train")
    counts = lambda made: {s: sum(p.subset == s for p in made) for s in {p.subset for p in made}}
    plain = reward.augmented(pairs, reward.RewardConfig(), seed=1)
    assert plain == pairs  # every share 0: the pairs as they are
    cfg = reward.RewardConfig(broken_pairs=0.5, evasion_pairs=0.25, refusal_over_harm_pairs=0.25)
    made = counts(reward.augmented(pairs, cfg, seed=1))
    assert made["broken-text"] == 83 and made["evasion"] == 42 and made["refusal-over-harm"] == 42
    assert "policy-answer" not in made  # policy-answer pairs need the policy's answers
    with pytest.raises(ValueError, match="refusal_over_harm_pairs -1 must be 0"):
        reward.validate(reward.RewardConfig(refusal_over_harm_pairs=-1))
