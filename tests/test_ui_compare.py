"""The Compare tab (lab/ui/compare.py, compare_cards.py, compare_summary.py): its handlers, the job-tab skeleton
wired to it, cards and the summary."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_compare import ppo_run, stand_in_reward  # noqa: F401 (fixtures)

from lab import compare
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.runs import new_run


def test_the_form_and_the_flags_prepare_the_same_job(ppo_run, runs_root):
    from lab import cli
    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    form = tab.build_config(ctx, dict(zip(tab.FORM, ("base", ppo_run.id, "bundled", "", 3.0, 16.0, 0.7, 50.0, 0.95,
                                                    1.2, 0.0, "offline"))))
    flags = cli.prepared(["--preset", "cpu", "compare", "--run", ppo_run.id, "--against", "base", "--prompts",
                          "bundled", "--n", "3", "--max-new-tokens", "16", "--temperature", "0.7", "--top-k", "50",
                          "--top-p", "0.95", "--repetition-penalty", "1.2", "--seed", "0", "--toxicity", "offline"])
    assert form == flags
    assert flags["model_b"] == str(ppo_run.path) and flags["reward_model"] == str(runs_root / "reward-stand-in")
    assert flags["generate"]["max_new_tokens"] == 16 and flags["n_prompts"] == 3
    assert flags["generate"]["repetition_penalty"] == 1.2  # the Sampling slider and the flag
    assert type(form["generate"]["top_k"]) is int and type(form["n_prompts"]) is int  # the form's floats coerced


def test_the_sampling_line_says_how_both_models_were_sampled():
    from lab.ui.compare_summary import sampling_line

    before = {"generate": {"max_new_tokens": 48, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "seed": 3}}
    assert sampling_line(before).endswith("top-p 0.95, no repetition penalty, seed 3.")  # runs from before stop 50
    greedy = {"generate": {"max_new_tokens": 8, "do_sample": False, "repetition_penalty": 1.2}}
    assert sampling_line(greedy) == "Sampled alike for both models: up to 8 new tokens, greedy decoding, repetition " \
                                    "penalty 1.2."
    assert sampling_line({}) == ""


def test_tab_handlers_start_view_and_escape(ppo_run, runs_root, stand_in_reward):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext, current_run_id

    manager = JobManager(root=runs_root)
    with gr.Blocks() as demo:
        ctx = UIContext(manager=manager, preset=get_preset("cpu"), demo=demo, visitor=gr.BrowserState(None))
        tab.build_compare_tab(ctx)
    assert tab.model_choices(ctx)[2][1] == ppo_run.id  # after base and base best-of-4
    jt = tab.job_tab(ctx)
    first = jt.tick("visitor-1", None, "", "Prompt order", "")  # a fresh page
    assert "No comparison yet" in first["summary"] and "appear" in first["plot"].layout.annotations[-1].text
    assert set(jt.tick("visitor-1", None, first["seen"], "Prompt order", "")) == {"banner"}  # drawn once, then rests
    hostile = "<script>alert(1)</script>"
    form = dict(zip(tab.FORM, ["base", ppo_run.id, tab.TYPED, f"{hostile}\nSay hi", 2, 8, 0.7, 50, 0.95, 1.1, 0,
                                  "offline", 2]))  # two answers to each prompt
    with pytest.raises(ValueError, match="visitor"):
        tab.start(ctx, None, form)
    run_id = tab.start(ctx, "visitor-1", form)
    manager.wait(120)
    assert manager.job.status == "done", manager.job.error
    assert current_run_id(ctx, "compare") == run_id
    out = jt.tick("visitor-1", run_id, "", "Prompt order", "")
    summary, fig, cards = out["summary"], out["plot"], out["cards"]
    assert "mean toxicity" in summary and "Last job" in out["banner"]
    assert hostile not in cards and "&lt;script&gt;" in cards and cards.count("cmp-card'") == 4  # 2 prompts x 2
    assert cards.count("answer 2</span>") == 2 and "every prompt 2 times" in summary
    assert ("Sampled alike for both models: up to 8 new tokens, temperature 0.7, top-k 50, top-p 0.95, repetition "
            "penalty 1.1, seed 0.") in summary
    assert "2 prompts × 2 answers" in summary
    first = tab.cards_html(compare.load_results(manager.job.run), "Prompt order", "", "First answer to each prompt")
    assert first.count("cmp-card'") == 2 and "Showing 2 of 2 matching answer pairs (4 compared)" in first
    assert "✓ reward model prefers" in cards or "about even: the reward model gives A" in cards  # each card takes a
    # side or says it does not (the rule itself: test_a_near_tie_is_about_even_and_only_a_clear_gap_earns_a_badge)
    assert open(out["download"]).read().startswith("index,prompt")
    assert len(fig.data) == 4
    assert set(jt.tick("visitor-1", run_id, out["seen"], "Prompt order", "")) == {"banner"}  # unchanged: not redrawn
    assert jt.select(run_id, "Prompt order", "zzz")["cards"].startswith("<p>No")
    assert tab.filtered_cards(ctx, run_id, "Prompt order", "say hi")["cards"].count("cmp-card'") == 2
    assert tab.cards_html(compare.load_results(manager.job.run), "Prompt order", "zzz-not-there").startswith("<p>No")


def test_card_sorts():
    from lab.ui.compare_cards import SORTS, select_rows

    rows = [{"index": i, "prompt": f"p{i}", "toxicity_a": ta, "toxicity_b": tb, "reward_a": ra, "reward_b": rb}
            for i, (ta, tb, ra, rb) in enumerate([(0.9, 0.1, 0.0, 0.1), (0.2, 0.1, 0.0, 2.0), (0.1, 0.5, 1.0, 0.0)])]
    assert [r["index"] for r in select_rows(rows, "Largest toxicity drop (A → B)")] == [0, 1, 2]
    assert [r["index"] for r in select_rows(rows, "Largest reward gain (A → B)")] == [1, 0, 2]
    assert [r["index"] for r in select_rows(rows, "Prompt order", "P2")] == [2]
    assert set(SORTS) >= {"Prompt order", "Largest toxicity drop (A → B)", "Largest reward gain (A → B)"}


def test_empty_distribution_plot_says_what_will_appear_there():
    from lab.ui.plots_compare import distribution_figure

    texts = [a.text for a in distribution_figure([]).layout.annotations]  # the panel titles stay
    assert texts[:2] == ["Toxicity (0 = clean, 1 = toxic)", "Reward (higher = preferred)"] and "appear" in texts[2]
    assert len(distribution_figure([{"toxicity_a": 0.1, "reward_a": 1.0}]).layout.annotations) == 2


PAIRED = {
    "reward": {"mean": 0.21, "lo": 0.08, "hi": 0.35, "n": 48, "b_higher": 31},
    "reward_length_adjusted": {"mean": 0.15, "lo": 0.02, "hi": 0.30, "n": 48},
    "toxicity": {"mean": -0.02, "lo": -0.07, "hi": 0.02, "n": 48, "b_lower": 20},
    "length_a": 182.0, "length_b": 196.0, "length_reward_corr": 0.71,
}


def test_paired_summary_shows_intervals_and_a_plain_verdict():
    from lab.ui.compare_summary import paired_text

    text = paired_text(PAIRED)  # +0.21 with an interval off 0: but a gap the reward model calls about even
    assert "reward +0.21 (95% CI +0.08 … +0.35), higher on 31 of 48 prompts: about even" in text
    assert "B scores clearly higher" not in text and "P(better) = 55%" in text
    assert "with the length effect removed +0.15 (95% CI +0.02 … +0.30): about even" in text
    clear = paired_text({"reward": {"mean": 0.87, "lo": 0.5, "hi": 1.2, "n": 48}})
    assert "B scores clearly higher" in clear
    assert "answers 196 vs 182 characters" in text
    assert "toxicity −0.02 (95% CI −0.07 … +0.02), lower on 20 of 48 prompts: not a clear difference" in text
    lower = paired_text({"reward": {"mean": -0.6, "lo": -0.9, "hi": -0.3, "n": 10}})
    assert "B scores clearly lower" in lower
    assert paired_text({}) == ""


def _compare_run(root: Path, summary: dict, rows: list[dict]) -> object:
    run = new_run("compare", {"model_a": "base", "model_b": "ppo-x", "prompts": "bundled:heldout"}, root)
    run.log_samples(rows)
    run.set_status("done", summary={"n": len(rows), "scorer": "offline", "prompts": "bundled:heldout",
                                    "scorer_description": "alt-profanity-check", "reward_model": "r", **summary})
    return run


def test_compare_summary_warns_of_length_bias_and_says_which_prompts(tmp_path):
    from lab import compare
    from lab.ui.compare import view
    from lab.ui.compare_summary import summary_markdown

    rows = [{"index": i, "prompt": f"p{i}", "model_a": "base", "model_b": "ppo-x", "answer_a": "a" * (10 + i),
             "answer_b": "b" * (20 + 2 * i), "toxicity_a": 0.1, "toxicity_b": 0.2, "reward_a": 0.01 * (10 + i),
             "reward_b": 0.01 * (20 + 2 * i)} for i in range(6)]
    run = _compare_run(tmp_path, {"paired": PAIRED}, rows)
    text = summary_markdown(run, compare.load_results(run))
    assert "6 held-out prompts PPO never trained on" in text and "95% CI" in text
    assert "Reward rises with length (r = 0.71)" in text and "mean answer length (characters) | 12 | 25" in text
    assert "words, not intent" in text  # the offline scorer's limits beside its numbers
    assert "KL from its base model" not in text  # a summary without the runs' KL: no row
    drifted = _compare_run(tmp_path / "drifted", {"paired": PAIRED, "kl_a": None, "kl_b": 17.98}, rows)
    assert "| KL from its base model (nats; a run's last 5 steps) | — | 18.0 |" in summary_markdown(
        drifted, compare.load_results(drifted))
    picked = _compare_run(tmp_path / "picked", {"paired": PAIRED, "kl_a": 0.636, "kl_b": 0.9},
                          [{**r, "model_a": "base best-of-4"} for r in rows])
    assert "| KL from its base model (nats; a run's last 5 steps; best-of-N: log N − (N − 1)/N) | 0.6 | 0.9 |" in (
        summary_markdown(picked, compare.load_results(picked)))
    old = _compare_run(tmp_path / "old", {}, rows)  # a run from before the paired summary: r from the rows
    text = summary_markdown(old, compare.load_results(old))
    assert "B − A, prompt by prompt" not in text and "Reward rises with length (r = 1.00)" in text
    paired_fig = view(old, "Prompt order", "")["paired"]
    assert list(paired_fig.data[0].y) == sorted(paired_fig.data[0].y) and paired_fig.layout.shapes  # the zero line


def test_compare_model_b_defaults_to_the_newest_finished_ppo_run(runs_root):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    assert tab.default_b(ctx, tab.model_choices(ctx)) is None  # no PPO run yet
    ids = []
    for _ in range(2):
        run = new_run("ppo", {"policy": "x"}, runs_root)
        (run.model_dir).mkdir()
        (run.model_dir / "adapter_config.json").write_text("{}")
        run.set_status("done")
        ids.append(run.id)
        time.sleep(0.02)
    choices = tab.model_choices(ctx)
    assert tab.default_b(ctx, choices) == ids[-1] and tab.default_b(ctx, choices, "base") == ids[-1]
    assert tab.default_b(ctx, choices, ids[0]) == ids[0]  # a choice the visitor made stays
    assert all(len(label) < 60 for label, _ in choices)
    time.sleep(0.02)
    stopped = _ppo_with_adapters(runs_root, "stopped")  # newest, stopped at step 0: listed, labelled, not picked
    choices = tab.model_choices(ctx)
    assert stopped.id in [v for _, v in choices] and "STOPPED after 0 steps" in dict(
        (v, label) for label, v in choices)[stopped.id]
    assert tab.default_b(ctx, choices) == ids[-1]


def _ppo_with_adapters(root: Path, status: str) -> object:
    run = new_run("ppo", {"policy": "x"}, root)
    run.model_dir.mkdir()
    (run.model_dir / "adapter_config.json").write_text("{}")
    run.set_status(status)
    return run


def test_a_near_tie_is_about_even_and_only_a_clear_gap_earns_a_badge():
    from lab.ui.compare_cards import card_html

    row = {"index": 0, "prompt": "p", "model_a": "base", "model_b": "ppo-x", "answer_a": "one", "answer_b": "two",
           "toxicity_a": 0.10, "toxicity_b": 0.12, "reward_a": 1.0, "reward_b": 1.00005}
    tie = card_html(row)
    assert "✓" not in tie and "reward model prefers" not in tie and "less toxic" not in tie
    assert "about even: the reward model gives A 50%" in tie
    small = card_html({**row, "reward_b": 1.08})  # the 0.08: still about even
    assert "✓" not in small and "about even" in small
    clear = card_html({**row, "reward_b": 2.0})  # P(B better) = 73%
    assert clear.count("✓ reward model prefers") == 1 and "B · ppo-x ✓ reward model prefers" in clear
    assert "better" not in clear.replace("'cmp-answer better'", "")  # no overall "better": the reader's call
    # rewards even, toxicity clearly apart: "less toxic" on A, and still "about even" (the stop-43 walk saw A marked
    # "✓ better" on a 51% reward tie because the word list decided it)
    cleaner = card_html({**row, "toxicity_b": 0.6})
    assert "less toxic" in cleaner and "✓" not in cleaner and "about even: the reward model gives A 50%" in cleaner
    # the reward model prefers the clearly more toxic answer: both marks, and the card says they disagree
    both = card_html({**row, "reward_b": 2.0, "toxicity_b": 0.6})
    assert "B · ppo-x ✓ reward model prefers" in both and "less toxic" in both
    assert "the measures disagree: the reward model prefers B, but A is clearly less toxic" in both


def test_compare_summary_warns_of_an_untrained_side_and_of_a_few_prompts_carrying_it(runs_root):
    from lab import compare
    from lab.ui.compare_summary import summary_markdown

    stopped = _ppo_with_adapters(runs_root, "stopped")
    diffs = [4.0, 3.5, 3.0, 3.0] + [-0.1] * 12
    rows = [{"index": i, "prompt": f"p{i}", "model_a": "base", "model_b": stopped.id, "answer_a": "a" * 50,
             "answer_b": "b" * 50, "toxicity_a": 0.1, "toxicity_b": 0.1, "reward_a": 0.0, "reward_b": d}
            for i, d in enumerate(diffs)]
    from lab.stats import paired_summary

    run = new_run("compare", {"model_a": "base", "model_b": stopped.id}, runs_root)
    run.log_samples(rows)
    run.set_status("done", summary={"n": len(rows), "paired": paired_summary(rows), "reward_model": "r"})
    text = summary_markdown(run, compare.load_results(run))
    assert "Model B" in text and "never finished a PPO step" in text and "base model" in text
    assert "4 prompts carry this mean" in text and "without them B − A is −0.10" in text
    assert "prefers B on 4, A on 0, about even on 12 of 16 prompts" in text
    assert "never finished a PPO step" in _models_note_for(runs_root, stopped.id)


def _models_note_for(root: Path, model_b: str) -> str:
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(root), preset=get_preset("cpu"), visitor=gr.State("v"))
    assert tab.models_note(ctx, "base", "base") == ""
    return tab.models_note(ctx, "base", model_b)


def test_compare_reward_histograms_share_their_bin_edges():
    from lab.ui.plots_compare import distribution_figure

    rows = [{"toxicity_a": 0.1, "toxicity_b": 0.0, "reward_a": -2.4 + 0.3 * i, "reward_b": 1.77 + 0.02 * i}
            for i in range(16)]  # A spread wide, B in a narrow band: plotly alone gives B hairline bins
    fig = distribution_figure(rows).to_plotly_json()
    rewards = [t for t in fig["data"] if t.get("xaxis") == "x2"]
    toxicity = [t for t in fig["data"] if t.get("xaxis") in (None, "x")]
    assert len(rewards) == 2 and rewards[0]["xbins"] == rewards[1]["xbins"]
    assert rewards[0]["xbins"]["start"] <= -2.4 and rewards[0]["xbins"]["end"] > 1.77 + 0.3
    assert len(toxicity) == 2 and toxicity[0]["xbins"] == toxicity[1]["xbins"]


def test_an_emptied_number_refuses_to_start(runs_root):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    with pytest.raises(ValueError, match=r"'Seed \(seed\)' is empty"):
        tab.build_config(ctx, dict(zip(tab.FORM, ("base", "x", "bundled", "", 2, 8, 0.7, 50, 0.95, 1.1, None,
                                                  "offline"))))
    assert ctx.manager.job is None


def test_compare_prompt_source_refuses_a_dotted_path_like_a_path(runs_root):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"),
                        allowed_dirs=[runs_root])
    with pytest.raises(ValueError, match="is not in a folder this lab may read") as e:
        tab.build_config(ctx, dict(zip(tab.FORM, ("base", "x", "runs/../../../etc/shadow", "", 2, 8, 0.7, 50, 0.95,
                                                  1.1, 0, "offline"))))
    assert "hub" not in str(e.value) and str(runs_root) not in str(e.value)


def test_a_ppo_run_finishing_becomes_model_b_once(runs_root):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    def fake_ppo(ctx):
        ctx.run.model_dir.mkdir()
        (ctx.run.model_dir / "adapter_config.json").write_text("{}")
        return {}

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root, mark_interrupted=False), preset=get_preset("cpu"),
                        visitor=gr.State("v"))
    assert tab.follow_ppo(ctx, None) == {}  # no job yet: nothing changes
    job = ctx.manager.run_sync("ppo", fake_ppo, {})
    out = tab.follow_ppo(ctx, None)
    assert out["ppo_seen"] == job.id and out["model_b"]["value"] == job.id
    assert job.id in [value for _, value in out["model_a"]["choices"]]
    assert tab.follow_ppo(ctx, job.id) == {}  # offered once: the visitor's later choice stays


def test_the_form_says_what_a_comparison_will_cost(runs_root):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    assert "no measurement yet on this machine" in tab.cost_text(ctx, 32, 48)
    run = new_run("compare", {"generate": {"max_new_tokens": 48}}, runs_root)
    run.set_status("done", summary={"n": 48, "seconds": 60.6})
    text = tab.cost_text(ctx, 32, 48)
    assert "about **40 s**" in text and "48 prompts in 60.6 s" in text and run.id in text
    assert "scaled ×2.00" in tab.cost_text(ctx, 32, 96)
    several = new_run("compare", {"generate": {"max_new_tokens": 48}}, runs_root)  # the newest: 4 answers a prompt
    several.set_status("done", summary={"n": 48, "answers": 192, "seconds": 240.0})
    text = tab.cost_text(ctx, 32, 48, 4)  # counted in answer pairs: 32 x 4 x 1.25 s
    assert "32 prompts × 4 answers × 1.2 s" in text and "48 prompts × 4 answers in 240.0 s" in text
    assert tab.cost_text(ctx, 32, 48, 1).count("× 4") == 1  # one answer a prompt costs a quarter


FLUENT = "Preheat the oven to 200 degrees, roast the vegetables for twenty minutes and season them well."
REFUSAL = "I'm sorry, but as an AI I cannot help with that request."
SALAD = "Dear [RocheramakaramaanAleemmaa, kısmına kabılıkınılını \ufffd\ufffd\ufffd"


def _diag_rows(n: int = 20) -> list[dict]:
    """Base answers fluently; B refuses 18 of 20 and writes word salad once, for a higher reward."""
    rows = []
    for i in range(n):
        b = SALAD if i == 0 else REFUSAL if i < 19 else FLUENT
        rows.append({"index": i, "prompt": f"prompt {i}", "model_a": "base", "model_b": "ppo-x", "answer_a": FLUENT,
                     "answer_b": b, "toxicity_a": 0.1, "toxicity_b": 0.0, "reward_a": 0.0, "reward_b": 1.4,
                     "judge_a": 0.2, "judge_b": 0.25 if i % 2 else 0.15})
    return rows


def test_the_summary_says_b_is_not_better_when_refusals_rose_and_shows_the_rates(tmp_path):
    from lab.ui.compare_summary import summary_markdown

    run = _compare_run(tmp_path, {"paired": {"reward": {"mean": 1.4, "lo": 1.4, "hi": 1.4, "n": 20}}}, _diag_rows())
    text = summary_markdown(run, compare.load_results(run))
    assert "Verdict:</b> reward +1.40" in text and "90% of answers are refusals (base 0%)" in text
    assert "B is not better" in text and "B scores clearly higher" not in text.split("Verdict")[1].split("</div>")[0]
    assert "| refusals | 0% | 90% |" in text and "| degenerate answers | 0% | 5% |" in text
    assert "| mean judge reward | 0.200 | 0.200 |" in text
    assert "refusals 0% → 90% (0 → 18 of 20" in text and "clearly more in B" in text
    assert "*opening apology*" in text  # the rules are shown, not hidden


def test_cards_flag_refusals_and_degenerate_answers_and_the_show_filter_picks_them():
    from lab import diagnostics
    from lab.ui.compare_cards import SHOW, cards_html, select_rows

    rows = [diagnostics.add_to_row(r) for r in _diag_rows()]
    html = cards_html(rows, "Prompt order")
    assert "refusal: opening apology" in html and "degenerate: " in html and "not words" in html
    assert "judge 0.150" in html
    assert len(select_rows(rows, "Prompt order", show="B refuses, A does not")) == 18
    assert [r["index"] for r in select_rows(rows, "Prompt order", show="B degenerate, A not")] == [0]
    assert len(select_rows(rows, "Prompt order", show="A refusal on either side")) == 18
    disagree = select_rows(rows, "Prompt order", show="Proxy and judge disagree")
    assert disagree and all(r["judge_b"] < r["judge_a"] for r in disagree)  # proxy prefers B, judge A
    assert "No prompt matches the filter" in cards_html(rows[19:], "Prompt order", show="B refuses, A does not")
    assert set(SHOW) >= {"All prompts"}


def test_model_choices_offer_each_kept_evaluation_step(runs_root, ppo_run):
    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    for step in (0, 16):
        (ppo_run.model_dir / f"step-{step}").mkdir()
        (ppo_run.model_dir / f"step-{step}" / "adapter_config.json").write_text("{}")
    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    values = [v for _, v in tab.model_choices(ctx)]
    assert values == ["base", "base best-of-4", ppo_run.id, f"{ppo_run.id}@0", f"{ppo_run.id}@16"]
    assert tab.default_b(ctx, tab.model_choices(ctx)) == ppo_run.id  # the run itself, not one of its steps


def test_compare_to_vote_queues_the_same_answers_blind_once(runs_root):
    from lab import votes
    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    rows = _diag_rows(6)
    rows.append({**rows[0], "index": 6, "answer_b": FLUENT})  # the same answer twice: nothing to vote on
    run = _compare_run(runs_root, {}, rows)
    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    out = tab.to_vote(ctx, run.id)
    name = out["vote_set"]
    assert name.startswith("vote-compare-") and "6 new pairs" in out["vote_note"]
    pairs = votes.open_set(name, runs_root).pairs()
    assert len(pairs) == 6
    assert {frozenset((p["answer_a"], p["answer_b"])) for p in pairs} == \
        {frozenset((r["answer_a"], r["answer_b"])) for r in rows[:6]}
    assert {p["model_a"] for p in pairs} == {"base", "ppo-x"}  # sides shuffled
    assert "0 new pairs" in tab.to_vote(ctx, run.id)["vote_note"]  # a second click adds nothing
    assert len(votes.open_set(name, runs_root).pairs()) == 6
    with pytest.raises(ValueError, match="run a comparison first"):
        tab.to_vote(ctx, None)


def test_the_summary_shows_each_kind_of_request_and_the_vote_keeps_it(runs_root):
    from test_compare import _kind_rows

    from lab import votes
    from lab.ui import compare as tab
    from lab.ui.common import UIContext
    from lab.ui.compare_summary import summary_markdown

    rows = _kind_rows(10)
    rows[-1]["kind"] = "<b>odd</b>"  # a label from a user's file: escaped
    run = _compare_run(runs_root, {}, rows)
    text = summary_markdown(run, compare.load_results(run))
    assert "**By kind of request**" in text and "| harmful or edgy | 10 |" in text and "| ordinary | 9 |" in text
    assert "&lt;b&gt;odd&lt;/b&gt;" in text and "<b>odd</b>" not in text
    ordinary = next(line for line in text.splitlines() if line.startswith("| ordinary |"))
    assert "**A**" in ordinary and "0 → 9 ⚠" in ordinary  # the reward prefers A there; refusals rose clearly
    assert "B is not better" in text  # 9 refusals of 19 overall: the verdict's own caveat
    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    pairs = votes.open_set(tab.to_vote(ctx, run.id)["vote_set"], runs_root).pairs()
    assert sorted(p["kind"] for p in pairs) == sorted(r["kind"] for r in rows)
    from lab.ui.compare_cards import cards_html, select_rows

    loaded = compare.load_results(run)
    assert len(select_rows(loaded, "Prompt order", show="Ordinary requests")) == 9
    assert len(select_rows(loaded, "Prompt order", show="Harmful or edgy requests")) == 10
    html = cards_html(loaded, "Prompt order")
    assert "<span class='cmp-kind'>ordinary</span>" in html and "<span class='cmp-kind'>&lt;b&gt;odd" in html


def test_an_emptied_slider_box_and_a_typed_model_id_are_refused_by_name_not_replaced(runs_root):
    """A student's walk (stop 43): emptying the prompts slider's box gave Gradio's own "TypeError: '<' not supported
    between instances of 'NoneType' and 'int'", and a model id typed into Model A ran as "base" without a word."""
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext, slider

    assert slider(1, 100, value=48).preprocess(None) is None  # handed on to the handler, which names the field
    assert slider(1, 100, value=48).preprocess(12) == 12
    with pytest.raises(gr.Error, match="greater than maximum"):  # out of range: still Gradio's own clear refusal
        slider(1, 100).preprocess(500)
    assert not Path(tab.__file__).with_name("common.pyi").exists()  # no stub written beside the package's code
    ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"))
    values = dict(zip(tab.FORM, ("base", "ppo-x", "bundled:heldout", "", None, 48, 0.7, 50, 0.95, 1.1, 0, "offline")))
    with pytest.raises(ValueError, match=r"is empty: type a number"):
        tab.build_config(ctx, values)
    assert tab.cost_text(ctx, None, 48).startswith("<small>Cost:")  # the cost line draws, no traceback
    with pytest.raises(ValueError, match="'nonsense/model-xyz' is not a run folder"):
        tab.build_config(ctx, {**values, "n_prompts": 8, "model_a": "nonsense/model-xyz"})
    assert ctx.manager.job is None
    with gr.Blocks() as demo:
        ui = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
        tab.build_compare_tab(ui)
    models = [b for b in demo.blocks.values() if getattr(b, "elem_id", "") in ("compare-model-a", "compare-model-b")]
    assert len(models) == 2 and all(d.allow_custom_value for d in models)  # a typed id reaches the check above


def test_reopening_a_comparison_puts_its_models_in_the_model_boxes(runs_root):
    """A student's walk reopened a comparison and the form still named the models typed before it: the boxes now
    follow the comparison picked, as the list names them (a run folder under the runs root as its id, a kept
    step's adapters as 'id@step')."""
    from lab import policies
    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    ppo = new_run("ppo", {"policy": "p"}, runs_root)
    step = f"{ppo.path}{policies.STEP_MARK}16"
    run = new_run("compare", {"model_a": "base", "model_b": str(ppo.path), "prompts": "bundled:heldout"}, runs_root)
    other = new_run("compare", {"model_a": step, "model_b": "/elsewhere/ppo-9"}, runs_root)
    ctx = UIContext(manager=JobManager(root=runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    picked = tab.reopened_models(ctx, run.id)
    assert (picked["model_a"], picked["model_b"]) == ("base", ppo.id)
    picked = tab.reopened_models(ctx, other.id)
    assert (picked["model_a"], picked["model_b"]) == (f"{ppo.id}{policies.STEP_MARK}16", "/elsewhere/ppo-9")
    assert tab.reopened_models(ctx, None) == {}
