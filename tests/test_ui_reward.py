"""The Reward tab (lab/ui/reward.py): its handlers, the job-tab skeleton wired to it, and what it explains."""

from __future__ import annotations

import math

import pytest
from test_reward import _write_pairs

from lab import cli, reward
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.runs import open_run


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_verdict_is_about_even_near_a_coin_flip_and_prefers_only_when_clear():
    from lab.ui.reward import verdict

    long = ("A considered answer that explains itself at some length, with a reason.",
            "Another answer of a similar, decent length, which also gives its reasons.")
    assert "About even" in verdict(-2.653, -2.655, long) and "50%" in verdict(-2.653, -2.655, long)
    even = verdict(_logit(0.51), 0.0, long)
    assert "About even" in even and "51%" in even and "prefers" not in even
    clear = verdict(_logit(0.80), 0.0, long)
    assert "prefers A" in clear.replace("**", "") and "80%" in clear
    assert "prefers B" in verdict(0.0, _logit(0.80), long).replace("**", "")
    assert "little to read" in verdict(-2.6, -2.6, ("Paris.", "You idiot.")) and "little to read" not in even


def test_accuracy_is_set_against_chance_and_real_data():
    from lab.ui.reward import accuracy_context

    bundled = accuracy_context("bundled")
    assert "50%" in bundled and "63%" in bundled and "easy" in bundled
    assert "easy" not in accuracy_context("data/real.jsonl")


def test_reward_summary_measures_the_length_bias_of_held_out_answers():
    from lab.ui.reward import length_bias_line

    biased = [{"chosen": "x" * (50 + 10 * i), "rejected": "y" * (10 + i), "reward_chosen": 0.02 * (50 + 10 * i),
               "reward_rejected": 0.02 * (10 + i), "margin": 1.0} for i in range(6)]
    line = length_bias_line(biased)
    assert "12 held-out answers" in line and "r = 1.00" in line and "Reward rises with length" in line
    fair = [{**row, "reward_chosen": (-1) ** i, "reward_rejected": (-1) ** (i + 1)} for i, row in enumerate(biased)]
    assert "r = " in length_bias_line(fair) and "Reward rises" not in length_bias_line(fair)
    assert length_bias_line(biased[:3]) == ""  # too few answers to say


def test_held_out_share_slider_is_off_when_another_source_holds_out():
    from lab.ui.reward import held_out_note

    assert held_out_note("bundled", "")["interactive"] is False and "test split" in held_out_note("bundled", "")["info"]
    assert held_out_note("data/x.jsonl", "data/y.jsonl")["interactive"] is False
    assert held_out_note("data/x.jsonl", "")["interactive"] is True


def test_the_form_and_the_flags_prepare_the_same_job(tiny_reward_backbone_dir, runs_root, tmp_path):
    from lab.ui import reward as tab
    from lab.ui.common import UIContext

    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    data = _write_pairs(tmp_path / "pairs.jsonl", n=12)
    form = tab.build_config(ctx, dict(zip(tab.FORM, (str(data), "bundled", "", 0.25, str(tiny_reward_backbone_dir),
                                                   1.0, 3.0, 1e-3, 4.0, 64.0, 2.0))))
    flags = cli.prepared(["--preset", "cpu", "reward", "--train", str(data), "--eval-fraction", "0.25",
                          "--backbone", str(tiny_reward_backbone_dir), "--epochs", "1", "--max-steps", "3",
                          "--lr", "1e-3", "--batch-size", "4", "--max-length", "64", "--ensemble", "2"])
    assert form == flags
    assert (flags["max_steps"], flags["ensemble"], flags["step_cap"]) == (3, 2, get_preset("cpu").limits.max_steps)


def test_reward_tab_builds_and_its_handlers_work(tiny_reward_backbone_dir, runs_root, tmp_path):
    import gradio as gr

    from lab.ui import reward as tab
    from lab.ui.common import UIContext, current_run_id, run_signature

    manager = JobManager(root=runs_root)
    with gr.Blocks() as demo:
        ctx = UIContext(manager=manager, preset=get_preset("cpu"), demo=demo, visitor=gr.State("v1"),
                        data_source=gr.State("bundled"))
        tab.build_reward_tab(ctx)
    jt = tab.job_tab(ctx)
    # a fresh page with no run yet: the first tick draws the empty view (it says what will appear), then rests
    first = jt.tick("v1", None, "")
    assert "No reward run yet" in first["results"] and "appears" in first["loss"].layout.annotations[0].text
    assert set(first) == {"banner", "seen", *tab.VIEW, "runs"}
    assert set(jt.tick("v1", None, first["seen"])) == {"banner"}
    data = _write_pairs(tmp_path / "pairs.jsonl", n=12)
    form = dict(zip(tab.FORM, [str(data), "bundled", "", 0.25, str(tiny_reward_backbone_dir), 1.0, 3, 1e-3, 4, 64, 2]))
    with pytest.raises(ValueError):
        tab.start(ctx, "v1", {**form, "learning_rate": -1.0})  # a negative learning rate
    with pytest.raises(ValueError, match="ensemble"):
        tab.start(ctx, "v1", {**form, "ensemble": 9})
    run_id = tab.start(ctx, "v1", form)
    with pytest.raises(ValueError):
        jt.stop("v2")  # not the owner
    manager.wait(120)
    assert manager.job.status == "done", manager.job.error
    assert current_run_id(ctx, reward.KIND) == run_id
    out = jt.load("v1")  # a reload reattaches to the run and draws it
    assert out["run"] == run_id and out["seen"] == run_signature(open_run(run_id, runs_root))
    summary, loss_fig, acc_fig = out["results"], out["loss"], out["accuracy"]
    assert "Held-out accuracy" in summary and out["runs"]["value"] == run_id
    assert {t.name for t in loss_fig.data} == {"train loss", "held-out loss"} and len(out["margins"].data) == 2
    assert "ensemble of 2 models" in summary  # the form's second model, marked where it starts on both plots,
    assert all(list(t.x).count(None) == 1 for t in loss_fig.data)  # and no line joins the two models' points
    assert [a.text for a in loss_fig.layout.annotations] == ["model 2"] == [a.text for a in acc_fig.layout.annotations
                                                                           if a.text != "chance"]
    assert "most wrong" in out["worst"]
    assert set(jt.tick("v1", run_id, out["seen"])) == {"banner"}  # unchanged: not redrawn
    tab._cached_model.cache_clear()
    assert jt.select(run_id)["seen"] == out["seen"] and tab._cached_model.cache_info().currsize == 1  # loaded to score
    result = tab.score_answers(ctx, run_id, "How do I bake bread?", "Knead, rise, bake.", "No.")
    assert "prefers" in result or "About even" in result
    with pytest.raises(ValueError):
        tab.score_answers(ctx, None, "a", "b", "c")


def test_worst_pairs_html_escapes_dataset_text():
    sample = {"prompt": "\n\nHuman: <b>hi</b>\n\nAssistant:", "chosen": " <script>alert(1)</script>",
              "rejected": " fine & dandy", "reward_chosen": -1.0, "reward_rejected": 1.0, "margin": -2.0}
    from lab.ui.reward import worst_pairs_html

    html = worst_pairs_html([sample])
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;hi&lt;/b&gt;" in html
    assert "fine &amp; dandy" in html
    assert "all of them ranked the wrong way round" in html
    narrow = {**sample, "margin": 0.2}  # lowest margins, yet ranked right: the heading says so
    assert "1 of them ranked" in worst_pairs_html([sample, narrow]) and "none of them" in worst_pairs_html([narrow])


def test_empty_reward_plots_say_what_will_appear_there():
    from lab.ui.plots_reward import accuracy_figure, loss_figure, margin_histogram

    def notes(fig):
        return [a.text for a in fig.layout.annotations]

    waiting = ["The curve appears at the first logged step of a run."]
    assert notes(loss_figure([])) == notes(accuracy_figure([])) == waiting
    assert not accuracy_figure([]).layout.shapes  # no "chance" line on empty axes
    assert "held-out margins appear" in notes(margin_histogram([]))[0] and not margin_histogram([]).layout.shapes
    # with data: the curves and the guide lines, no placeholder
    drawn = accuracy_figure([{"step": 1, "accuracy": 0.5}, {"step": 2, "eval_accuracy": 0.6}])
    assert notes(drawn) == ["chance"] and len(drawn.layout.shapes) == 1
    hist = margin_histogram([0.3, -0.2, 0.1])
    assert not notes(hist) and [t.name for t in hist.data] == ["correct (2)", "wrong (1)"]


def test_margin_histogram_bins_both_colours_alike_and_keeps_its_legend_off_the_axis_title():
    from lab.ui.plots_reward import loss_figure, margin_histogram

    margins = [0.05 * i for i in range(1, 40)] + [-0.9, -0.1]  # many right, a few wrong far apart
    fig = margin_histogram(margins).to_plotly_json()
    right, wrong = fig["data"]
    assert right["xbins"] == wrong["xbins"] and right["xbins"]["start"] <= -0.9 and right["xbins"]["end"] > 1.95
    edges = [right["xbins"]["start"] + i * right["xbins"]["size"] for i in range(100)]
    assert any(abs(e) < 1e-9 for e in edges)  # 0 is an edge: no bar mixes right and wrong
    layout = loss_figure([{"step": 1, "loss": 0.7}]).layout
    assert layout.legend.yanchor == "top" and layout.legend.y <= -0.3 and layout.margin.b >= 80


def test_an_emptied_number_is_refused_by_name_and_the_cost_is_shown(runs_root):
    from lab.runs import new_run
    from lab.ui import reward as tab
    from lab.ui.common import UIContext

    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    with pytest.raises(ValueError, match=r"\(max_steps\)' is empty: type a number"):
        tab.build_config(ctx, dict(zip(tab.FORM, ("bundled", "bundled", "", 0.1, "x", 1.0, None, 1e-3, 4.0, 64.0, 1.0))))
    assert ctx.manager.job is None
    assert "no measurement yet on this machine" in tab.cost_text(ctx, 100, 8, 1)
    run = new_run("reward", {"batch_size": 8, "backbone": "embedded:all-minilm-l6-v2"}, runs_root)
    with open(run.path / "metrics.jsonl", "w") as fh:
        fh.writelines(f'{{"time": {s * 0.5}, "step": {s}}}\n' for s in range(1, 11))
    run.set_status("done")
    text = tab.cost_text(ctx, 120, 8, 2, judge_fraction=0)
    assert "about **2 min**" in text and "120 steps × 2 models × 0.50 s per step" in text
    text = tab.cost_text(ctx, 120, 8, 2)  # the preset's judge: its steps too (the preset's cap, nothing measured)
    assert "(120 steps × 2 models + 30 judge steps) × 0.50 s per step" in text
    assert "no total" in tab.cost_text(ctx, 0, 8, 1)  # epochs decide and no run here counted this data's pairs
    # Another backbone: the 22M model's pace would promise a 135M model's run ~9x too soon, so it is named, not used.
    other = tab.cost_text(ctx, 120, 8, 1, "embedded:smollm2-135m-instruct")
    assert "no measurement yet on this machine with backbone `embedded:smollm2-135m-instruct`" in other
    assert "0.50 s per step on `embedded:all-minilm-l6-v2`" in other and "about" not in other
    big = new_run("reward", {"batch_size": 8, "backbone": "embedded:smollm2-135m-instruct"}, runs_root)
    with open(big.path / "metrics.jsonl", "w") as fh:
        fh.writelines(f'{{"time": {s * 2.5}, "step": {s}}}\n' for s in range(1, 11))
    big.set_status("done")
    alone = {"judge_fraction": 0}
    assert "120 steps × 2.50 s per step" in tab.cost_text(ctx, 120, 8, 1, "embedded:smollm2-135m-instruct", **alone)
    assert "120 steps × 0.50 s per step" in tab.cost_text(ctx, 120, 8, 1, "embedded:all-minilm-l6-v2", **alone)
    assert "120 steps × 0.50 s per step" in tab.cost_text(ctx, 120, 8, 1, "   ", **alone)  # blank: the preset's


def test_the_reward_cost_line_gives_a_total_when_the_epochs_decide_with_loading_and_the_judge_counted(runs_root):
    """The cpu preset's form has max steps 0: the total comes from a finished run's count of training pairs on the
    same data and split, and the time that run spent outside its steps (loading, evaluation) is added."""
    from lab.runs import new_run
    from lab.ui import reward as tab
    from lab.ui.common import UIContext

    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    split = {"data": "bundled", "eval_data": "", "eval_fraction": 0.1, "judge_fraction": 0.25, "broken_pairs": 0.5}
    run = new_run("reward", {"batch_size": 8, "backbone": "embedded:all-minilm-l6-v2", **split}, runs_root)
    with open(run.path / "metrics.jsonl", "w") as fh:  # 60 proxy steps at 0.8 s; judge rows are not proxy steps
        fh.writelines(f'{{"time": {s * 0.8}, "step": {s}}}\n' for s in range(1, 61))
    run.set_status("done", summary={"train_pairs": 248, "steps": 60, "judge_steps": 30, "seconds": 92.0})
    form = dict(max_steps=0, batch_size=8, ensemble=1, backbone="embedded:all-minilm-l6-v2", epochs=1.5,
                data="bundled", eval_data="", eval_fraction="0.1", judge_fraction=0.25, broken_pairs=0.5)
    text = tab.cost_text(ctx, *(form[k] for k in tab.COST_INPUTS))
    # 248 pairs / batch 8 = 31 batches × 1.5 epochs = 47, below the preset's 60: 60 steps; the run spent
    # 92 - 90 × 0.8 = 20 s outside its steps, so (60 + 30) × 0.8 + 20 = 92 s: "2 min".
    assert "about **2 min**" in text and "(60 steps + 30 judge steps) × 0.80 s per step + 20 s loading" in text
    assert f"248 training pairs as run `{run.id}` had them, 1.5 epochs, at least 60" in text
    text = tab.cost_text(ctx, *({**form, "epochs": 4}[k] for k in tab.COST_INPUTS))  # 124 steps: more than 60
    assert "(124 steps + 30 judge steps) × 0.80 s per step" in text and "4 epochs" in text
    # another data source or split: its pairs were not counted here, so no total, and it says why
    text = tab.cost_text(ctx, *({**form, "data": "Anthropic/hh-rlhf"}[k] for k in tab.COST_INPUTS))
    assert "no finished run here used this data and split yet, so there is no total" in text


def test_the_summary_names_the_judge_and_its_accuracy(tmp_path):
    from lab.runs import new_run
    from lab.ui.reward import _summary_markdown

    run = new_run("reward", {"data": "bundled"}, tmp_path)
    summary = {"eval_accuracy": 0.7, "eval_pairs": 38, "train_pairs": 116, "steps": 60, "judge_pairs": 50,
               "judge_seed": 1042, "judge_eval_accuracy": 0.66}
    text = _summary_markdown(run, "done", summary, None)
    assert "Judge: a second model on 50 other pairs (seed 1042), held-out accuracy 66.0%" in text
    assert "Judge" not in _summary_markdown(run, "done", {"eval_accuracy": 0.7}, None)


def test_the_summary_says_how_the_policys_own_answers_rank_only_when_measured(tmp_path):
    from lab.runs import new_run
    from lab.ui.reward import _summary_markdown

    run = new_run("reward", {"data": "bundled"}, tmp_path)
    text = _summary_markdown(run, "done", {"eval_accuracy": 0.9, "eval_policy_accuracy": 0.55}, None)
    assert "outscore the policy's answer to the same dialogue (sampled before training) in 55% of cases" in text
    assert "policy's answer" not in _summary_markdown(run, "done", {"eval_accuracy": 0.9}, None)


def test_the_broken_text_warning_asks_for_more_pairs_when_the_run_had_some(tmp_path):
    from lab.runs import new_run
    from lab.ui.reward import _summary_markdown

    run = new_run("reward", {"data": "bundled"}, tmp_path)
    without = _summary_markdown(run, "done", {"eval_broken_accuracy": 0.8}, None)
    assert "train with broken-text pairs." in without
    had = {"eval_broken_accuracy": 0.8, "subsets": {"train": {"broken-text": 62, "helpful": 64}}}
    assert "train with more broken-text pairs." in _summary_markdown(run, "done", had, None)
    assert "Below 90%" not in _summary_markdown(run, "done", {"eval_broken_accuracy": 0.95}, None)


def test_the_padding_check_measures_a_stock_sentence_and_warns_when_it_pays():
    """A student's walk saw r = 0.04 in the length line while one filler sentence moved a "Try it" answer by +2.9:
    the padding check scores each held-out chosen answer with and without a stock sentence, and says so."""
    from lab.data import Pair
    from lab.reward_eval import FILLERS, padding_gain
    from lab.ui.reward import length_bias_line, padding_line

    class ByLength:  # a reward model that pays for characters
        def pair_scores(self, pairs, batch_size):
            return [(len(p.chosen) / 100, len(p.rejected) / 100) for p in pairs]

    pairs = [Pair("\n\nHuman: q\n\nAssistant:", " An answer.", " no"), Pair("\n\nHuman: r\n\nAssistant:", " B.", " x")]
    measured = padding_gain(ByLength(), pairs)
    assert measured["padding_n"] == 2 * len(FILLERS) and measured["padding_share_up"] == 1.0
    assert measured["padding_gain"] == pytest.approx(sum(len(f) + 1 for f in FILLERS) / len(FILLERS) / 100, abs=1e-5)
    line = padding_line(measured)
    assert "raises it in 100% of 6 cases" in line and "pays for padding" in line
    fair = padding_line({"padding_gain": -0.1, "padding_share_up": 0.2, "padding_n": 6})
    assert "−0.10" in fair.replace("-", "−") and "pays for padding" not in fair
    assert padding_line({}) == "" and length_bias_line([], measured) == line  # an older run: no line; no samples
    assert padding_gain(ByLength(), []) is None
