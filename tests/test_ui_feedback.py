"""The Feedback tab's handlers: blind pairs escaped, a vote reveals the models, tallies, export, the generation job."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from lab import feedback, sources
from lab import votes as store
from lab.sources import load_pairs
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.ui import feedback as ui
from lab.ui.common import UIContext


@pytest.fixture
def ctx(runs_root):
    return UIContext(manager=JobManager(runs_root, mark_interrupted=False), preset=get_preset("cpu"))


@pytest.fixture
def seeded(ctx):
    fs = store.create_set("class-1", ctx.manager.root, min_seconds=0)
    store.add_pairs(fs, [
        {"prompt": "Say <script>alert(1)</script>", "answer_a": "<img src=x onerror=alert(2)>", "answer_b": "No.",
         "model_a": "ppo-<b>run</b>", "model_b": "base"},
        {"prompt": "Second?", "answer_a": "one", "answer_b": "two", "model_a": "base", "model_b": "ppo-<b>run</b>"},
    ])
    return fs


def test_pair_is_blind_and_escaped(ctx, seeded):
    shown = ui.show(ctx, "class-1", "alice")
    pair_id, html, tallies, howto = shown["pair_id"], shown["pair"], shown["tallies"], shown["howto"]
    assert pair_id == seeded.pairs()[0]["id"]
    assert "<script>" not in html and "<img" not in html and "&lt;img src=x" in html
    assert "ppo-" not in html and "base" not in html  # no model names before the vote
    assert "0 votes" in tallies and "`feedback:class-1`" in howto


def test_vote_reveals_models_and_moves_on(ctx, seeded):
    first = seeded.pairs()[0]["id"]
    out = ui.cast(ctx, "b", "class-1", first, "shorter", "alice")
    reveal, reason, pair_id, html, tallies = (out[k] for k in ("reveal", "reason", "pair_id", "pair", "tallies"))
    assert set(out) == {"reveal", "reason", "pair_id", "pair", "tallies", "howto", "seen"}
    assert reveal == ("Last pair: A was written by **ppo-&lt;b&gt;run&lt;/b&gt;**, B by **base**: "
                      "you preferred **base**.")
    assert reason == "" and pair_id == seeded.pairs()[1]["id"] and "Second?" in html
    assert "1 vote from 1 visitor" in tallies and "**you** 1" in tallies
    assert "**ppo-&lt;b&gt;run&lt;/b&gt;** over **base** 0 of 1" in tallies
    assert seeded.votes()[0]["reason"] == "shorter"
    with pytest.raises(ValueError, match="already voted"):  # the second click of a double click
        ui.cast(ctx, "b", "class-1", first, "", "alice")
    with pytest.raises(ValueError, match="no pair to vote on"):
        ui.cast(ctx, "a", "class-1", None, "", "alice")
    assert len(seeded.votes()) == 1


def test_two_visitors_see_each_others_votes_on_the_tick(ctx, seeded):
    shown = ui.show(ctx, "class-1", "alice")
    pair_a, seen_a = shown["pair_id"], shown["seen"]
    assert set(ui.tick(ctx, "class-1", "alice", pair_a, seen_a)) == {"banner"}  # nothing new: nothing redrawn
    ui.cast(ctx, "a", "class-1", pair_a, "", "bob")
    out = ui.tick(ctx, "class-1", "alice", pair_a, seen_a)
    seen, tallies = out["seen"], out["tallies"]
    assert seen != seen_a and "1 vote from 1 visitor" in tallies and "**you**" not in tallies
    assert "No job is running" in out["banner"] and "pair" not in out  # the pair shown stays until a vote
    ui.cast(ctx, "a", "class-1", pair_a, "", "alice")
    out = ui.tick(ctx, "class-1", "alice", None, seen)
    tallies = out["tallies"]
    assert "pair" in out  # no pair shown yet: the tick brings the first one
    assert "2 votes from 2 visitors" in tallies and "all chose the same on 1 (100%)" in tallies


def test_unknown_or_bad_set_names(ctx):
    shown = ui.show(ctx, "nothing-here", "alice")
    pair_id, html, tallies = shown["pair_id"], shown["pair"], shown["tallies"]
    assert pair_id is None and "no pairs yet" in html and "No set 'nothing-here' yet" in tallies
    with pytest.raises(ValueError, match="not allowed"):
        ui.show(ctx, "../../etc", "alice")


def test_export_files_match_the_votes(ctx, seeded):
    with pytest.raises(ValueError, match="nothing to export"):
        ui.export_files(ctx, "class-1")
    first, second = (p["id"] for p in seeded.pairs())
    ui.cast(ctx, "b", "class-1", first, "", "alice")
    ui.cast(ctx, "tie", "class-1", second, "", "alice")
    hh, pcr = ui.export_files(ctx, "class-1")
    assert hh.endswith("class-1-hh.jsonl") and pcr.endswith("class-1-pcr.jsonl")
    (row,) = [json.loads(x) for x in open(pcr)]
    assert row == {"prompt": "Say <script>alert(1)</script>", "chosen": "No.",
                   "rejected": "<img src=x onerror=alert(2)>"}
    (row,) = [json.loads(x) for x in open(hh)]
    assert row["chosen"].endswith("\n\nAssistant: No.") and row["chosen"].startswith("\n\nHuman: Say <script>")


def test_generate_refuses_bad_input_before_a_job(ctx):
    with pytest.raises(ValueError, match="not allowed"):
        ui.start(ctx, "alice", dict(zip(ui.FORM, ("a b", "base", "base", "bundled", 4, 16))))
    with pytest.raises(ValueError, match="not a run folder"):
        ui.start(ctx, "alice", dict(zip(ui.FORM, ("ok", "base", "ppo-missing", "bundled", 4, 16))))
    with pytest.raises(ValueError, match=r"\(n_pairs\)' is empty"):  # an emptied number box
        ui.start(ctx, "alice", dict(zip(ui.FORM, ("ok", "base", "base", "bundled", None, 16))))
    assert ctx.manager.job is None and store.list_sets(ctx.manager.root) == []


def test_generation_job_fills_the_queue_with_shuffled_pairs(runs_root, tiny_lm_dir):
    from test_compare import make_ppo_run

    run = make_ppo_run(runs_root, tiny_lm_dir)
    gen = {"max_new_tokens": 6, "min_new_tokens": 4, "batch_size": 4, "precision": "fp32"}
    cfg = feedback.validate(feedback.config_from(get_preset("cpu"), name="gen", model_a="base", model_b=run.id,
                                                 prompts="bundled", n_pairs=6, generate=gen))
    manager = JobManager(runs_root, mark_interrupted=False)
    job = manager.run_sync(feedback.KIND, feedback.generate_pairs, asdict(cfg))
    assert job.status == "done", job.error
    pairs = store.open_set("gen", runs_root).pairs()
    assert job.summary["pairs"] == len(pairs) >= 4  # a pair with two equal answers would be skipped
    assert {p["model_a"] for p in pairs} | {p["model_b"] for p in pairs} == {"base", run.id}
    assert all(p["answer_a"] and p["answer_b"] and p["answer_a"] != p["answer_b"] for p in pairs)
    # a random model never says EOS in 6 tokens: every answer was cut at the limit, and ends with "…" to say so
    assert all(p[f"answer_{k}"].endswith(feedback.CUT_MARK) for p in pairs for k in "ab")
    # a second round continues with prompts the set has not used
    cfg.n_pairs, cfg.model_b = 2, "base"  # two samples of the base model
    job = manager.run_sync(feedback.KIND, feedback.generate_pairs, asdict(cfg))
    assert job.status == "done", job.error
    more = store.open_set("gen", runs_root).pairs()[len(pairs):]
    assert more and all({p["model_a"], p["model_b"]} == {"base (sample 1)", "base (sample 2)"} for p in more)
    assert not {p["prompt"] for p in more} & {p["prompt"] for p in pairs}


def test_votes_train_a_reward_model_that_records_them(runs_root, ctx, tiny_reward_backbone_dir):
    from lab import reward

    fs = store.create_set("class-1", runs_root, min_seconds=0)
    pairs = load_pairs("bundled:train").pairs[:24]
    seeded = store.add_pairs(fs, [{"prompt": p.first_human_turn, "answer_a": p.chosen.strip(),
                                      "answer_b": p.rejected.strip(), "model_a": "x", "model_b": "y"} for p in pairs])
    for p in seeded:
        store.vote(fs, p["id"], "a", "alice")
    cfg = reward.config_from(get_preset("cpu"), data="feedback:class-1", backbone=str(tiny_reward_backbone_dir),
                             max_steps=2, min_steps=0, batch_size=4, max_length=64, eval_fraction=0.25,
                             judge_fraction=0.0, evasion_pairs=0.0)
    job = ctx.manager.run_sync(reward.KIND, reward.train_reward, asdict(cfg))
    assert job.status == "done", job.error
    # the cpu preset adds half as many broken-text pairs to the 18 voted ones (no judge, no evasion pairs here)
    assert job.summary["data"] == "feedback:class-1@24" and job.summary["train_pairs"] == 18 + 9
    assert job.summary["feedback_votes"] == sources.provenance("feedback:class-1@24")["feedback_votes"]
    assert job.run.config["data"] == "feedback:class-1"
    from lab.ui.reward import run_results

    assert "Trained on `feedback:class-1@24`: 24 votes of set 'class-1'" in run_results(job.run)[0]


def test_data_tab_loads_a_feedback_set(runs_root, seeded, tmp_path):
    from gradio_client import Client

    from lab.ui import build_app

    store.vote(seeded, seeded.pairs()[0]["id"], "b", "alice")
    demo = build_app(JobManager(runs_root, mark_interrupted=False), get_preset("cpu"), allowed_dirs=[tmp_path])
    demo.queue().launch(prevent_thread_lock=True, server_port=None, quiet=True)
    try:
        client = Client(demo.local_url, verbose=False)
        stats, _plot, cards, _page = client.predict("Hub dataset id", "", None, "feedback:class-1",
                                                    api_name="/data_load")
        assert "feedback:class-1" in stats and "**1** pairs" in stats
        assert "&lt;img src=x" in cards and "<img src=x" not in cards
    finally:
        demo.close()


def test_model_2_defaults_to_the_newest_finished_ppo_run_never_a_stopped_one(runs_root, ctx):
    import time

    from lab.runs import new_run

    assert ui.fresh_lists(ctx)["model_b"]["value"] == "base"  # no PPO run: two samples of base
    made = []
    for status in ("done", "stopped"):
        run = new_run("ppo", {"policy": "x"}, runs_root)
        run.model_dir.mkdir()
        (run.model_dir / "adapter_config.json").write_text("{}")
        run.set_status(status)
        made.append(run.id)
        time.sleep(0.02)
    lists = ui.fresh_lists(ctx)
    assert made[1] in [v for _, v in lists["model_b"]["choices"]]  # the stopped run is listed
    assert lists["model_b"]["value"] == made[0]  # the finished one is picked
