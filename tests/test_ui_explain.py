"""The on-screen explanations (issues 15 and 16): verdicts, warnings, shading, labels and messages, read as text."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest

from lab.data import load_pairs, resolve_path
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.runs import new_run


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


# ---------------------------------------------------------------- Reward tab


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


# ---------------------------------------------------------------- PPO tab


def _samples(n_steps: int, per_step: int, slope: float) -> list[dict]:
    rows = []
    for step in range(1, n_steps + 1):
        for i in range(per_step):
            length = 4 + 3 * i + step
            rows.append({"step": step, "prompt": "p", "response": "r " * length, "length": length,
                         "reward": slope * length + (0.3 if (i + step) % 2 else -0.3), "kl": -0.5})
    return rows


def test_length_scatter_warns_when_reward_rises_with_length():
    from lab.ui.plots_ppo import length_points, length_reward_figure
    from lab.ui.plots_common import length_warning

    rising = _samples(3, 4, 0.5)
    warning = length_warning(length_points(rising))
    assert warning.startswith("⚠ Reward rises with length (r = 0.") and "ramble" in warning
    fig = length_reward_figure(rising)
    assert "(r = 0." in fig.layout.title.text and len(fig.data[0].x) == 12
    assert fig.layout.xaxis.title.text == "answer length (tokens)"
    assert length_warning(length_points(_samples(3, 4, 0.0))) == ""  # no link between length and reward
    assert length_warning(length_points(rising[:5])) == ""  # too few points to say
    assert "latest" not in length_reward_figure([]).layout.title.text and length_reward_figure([]).layout.annotations
    assert len(length_points(_samples(15, 2, 0.1), last_steps=10)) == 20  # only the latest steps


def test_kl_shading_escapes_every_token_and_explains_negative_kl():
    from lab.ui.ppo import rollouts_html

    sample = {"step": 3, "prompt": "<b>hi</b>", "response": "<script>x</script> ok", "reward": 0.5, "kl": -0.767,
              "length": 3, "tokens": ["<script>", "x</script>", " ok"], "token_kl": [0.9, -0.4, 0.0]}
    html = rollouts_html([sample])
    assert "<script>" not in html and "&lt;script&gt;" in html and "x&lt;/script&gt;" in html
    assert html.count("class='tok'") >= 3 and "rgba(245,133,24,0.68)" in html  # 0.9 nats: a deep orange
    assert "rgba(76,120,168,0.30)" in html  # -0.4: blue, lighter
    assert "can be negative" in html and "batch mean" in html and "-0.767" in html
    old = rollouts_html([{k: v for k, v in sample.items() if k not in ("tokens", "token_kl", "length")}])
    assert "&lt;script&gt;x&lt;/script&gt; ok" in old and "Shading" not in old and "can be negative" in old


def test_kl_weight_axis_starts_at_zero():
    from lab.ui.plots_ppo import kl_coef_figure

    fig = kl_coef_figure([{"step": 1, "objective/kl_coef": 0.2}, {"step": 2, "objective/kl_coef": 0.1994}])
    low, high = fig.layout.yaxis.range
    assert low == 0 and high >= 0.3 and "slowly" in fig.layout.title.text


def test_plots_without_a_value_head_say_so():
    from lab.ui.plots_ppo import all_figures

    rows = [{"step": s, "ppo/loss/policy": 0.1, "ppo/policy/clipfrac": 0.05, "env/reward_mean": 0.0} for s in (1, 2)]
    figures = all_figures(rows, 6.0, "rloo")
    texts = [a.text for fig in figures for a in fig.layout.annotations]
    assert sum("no value head (RLOO)" in t for t in texts) == 2
    assert not any("no value head" in t for fig in all_figures(rows, 6.0, "gae") for t in
                   [a.text for a in fig.layout.annotations])


def _ppo_run(root: Path, **config) -> object:
    run = new_run("ppo", {"policy": "embedded:smollm2-135m-instruct", "steps": 2,
                          "reward_model": str(root / "reward-20261124-230920-a271" / "model"), **config}, root)
    for step in (1, 2):
        run.log_metrics({"step": step, "env/reward_mean": -2.0 + step, "tokens/response_len_mean": 10.0 + step,
                         "objective/kl": 0.5})
    run.set_status("done", summary={"steps": 2, "reward_first": -1.5, "reward_last": -1.0, "kl_last": 0.5,
                                    "seconds_per_step": 2.0})
    return run


def test_ppo_summary_names_the_reward_run_the_estimator_and_the_answer_length(tmp_path):
    from lab.ui.ppo import summary_markdown

    text = summary_markdown(_ppo_run(tmp_path, advantage="rloo", samples_per_prompt=4))
    assert "reward-20261124-230920-a271" in text and str(tmp_path) not in text
    assert "RLOO (k=4 answers per prompt" in text and "tokens on average" in text and "comparable only" in text
    assert "GAE" in summary_markdown(_ppo_run(tmp_path / "old"))  # runs from before the estimator: GAE


def test_ppo_refusals_name_settings_as_the_form_shows_them(runs_root):
    import gradio as gr

    from lab import ppo
    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    assert tab.LABELS["init_kl_coef"] == "KL weight β (init_kl_coef)" and tab.LABELS["lam"] == "GAE λ (lam)"
    assert tab.LABELS["whiten_rewards"] == "normalise rewards per batch (whiten_rewards)"
    reward = new_run("reward", {"backbone": "x"}, runs_root)
    (reward.model_dir).mkdir()
    (reward.model_dir / "config.json").write_text("{}")
    reward.set_status("done")
    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    cfg = ppo.config_from(ctx.preset)
    values = {**cfg.__dict__, "mini_batch_size": 4, "gradient_accumulation_steps": 4}
    with pytest.raises(ValueError) as e:
        tab.build_config(ctx, reward.id, "bundled", "", *values.values())
    assert "'rollouts per gradient pass (mini_batch_size)'" in str(e.value)
    assert "(gradient_accumulation_steps), under Advanced settings'" in str(e.value)
    with pytest.raises(ValueError, match=r"'training steps \(steps\)' 999 is above this machine's limit of 200"):
        tab.build_config(ctx, reward.id, "bundled", "", *{**cfg.__dict__, "steps": 999}.values())


def test_on_phase_reports_what_a_step_is_doing(tiny_lm_dir):
    import torch

    from lab import ppo

    model, tokenizer = ppo.load_trainable_policy(str(tiny_lm_dir), False, {"r": 4, "alpha": 8, "dropout": 0.0})
    head = ppo.new_value_head(model)
    cfg = ppo.PPOConfig(steps=1, batch_size=2, mini_batch_size=2, ppo_epochs=1, output_min_length=2,
                        output_max_length=3)
    phases: list[str] = []
    torch.manual_seed(0)
    ppo.run_ppo(model, head, tokenizer, ["hi", "yo"], lambda p, r: [0.0] * len(p), cfg, on_phase=phases.append)
    assert [p.split(" ")[0] for p in phases] == ["generating", "scoring", "log-probs", "optimising"]


# ---------------------------------------------------------------- Compare tab

PAIRED = {
    "reward": {"mean": 0.21, "lo": 0.08, "hi": 0.35, "n": 48, "b_higher": 31},
    "reward_length_adjusted": {"mean": 0.15, "lo": 0.02, "hi": 0.30, "n": 48},
    "toxicity": {"mean": -0.02, "lo": -0.07, "hi": 0.02, "n": 48, "b_lower": 20},
    "length_a": 182.0, "length_b": 196.0, "length_reward_corr": 0.71,
}


def test_paired_summary_shows_intervals_and_a_plain_verdict():
    from lab.ui.compare import paired_text

    text = paired_text(PAIRED)
    assert "reward +0.21 (95% CI +0.08 … +0.35), higher on 31 of 48 prompts: B scores clearly higher" in text
    assert "with the length effect removed +0.15 (95% CI +0.02 … +0.30): still clearly higher" in text
    assert "answers 196 vs 182 characters" in text
    assert "toxicity −0.02 (95% CI −0.07 … +0.02), lower on 20 of 48 prompts: not a clear difference" in text
    lower = paired_text({"reward": {"mean": -0.3, "lo": -0.5, "hi": -0.1, "n": 10}})
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
    from lab.ui.compare import summary_markdown, view

    rows = [{"index": i, "prompt": f"p{i}", "model_a": "base", "model_b": "ppo-x", "answer_a": "a" * (10 + i),
             "answer_b": "b" * (20 + 2 * i), "toxicity_a": 0.1, "toxicity_b": 0.2, "reward_a": 0.01 * (10 + i),
             "reward_b": 0.01 * (20 + 2 * i)} for i in range(6)]
    run = _compare_run(tmp_path, {"paired": PAIRED}, rows)
    text = summary_markdown(run, compare.load_results(run))
    assert "6 held-out prompts PPO never trained on" in text and "95% CI" in text
    assert "Reward rises with length (r = 0.71)" in text and "mean answer length (characters) | 12 | 25" in text
    assert "words, not intent" in text  # the offline scorer's limits beside its numbers
    old = _compare_run(tmp_path / "old", {}, rows)  # a run from before the paired summary: r from the rows
    text = summary_markdown(old, compare.load_results(old))
    assert "95% CI" not in text and "Reward rises with length (r = 1.00)" in text
    paired_fig = view(old, "Prompt order", "")[4]
    assert list(paired_fig.data[0].y) == sorted(paired_fig.data[0].y) and paired_fig.layout.shapes  # the zero line


def test_compare_model_b_defaults_to_the_newest_finished_ppo_run(runs_root):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    assert tab.default_b(tab.model_choices(ctx)) is None  # no PPO run yet
    ids = []
    for _ in range(2):
        run = new_run("ppo", {"policy": "x"}, runs_root)
        (run.model_dir).mkdir()
        (run.model_dir / "adapter_config.json").write_text("{}")
        run.set_status("done")
        ids.append(run.id)
        time.sleep(0.02)
    choices = tab.model_choices(ctx)
    assert tab.default_b(choices) == ids[-1] and tab.default_b(choices, "base") == ids[-1]
    assert tab.default_b(choices, ids[0]) == ids[0]  # a choice the visitor made stays
    assert all(len(label) < 60 for label, _ in choices)


# ---------------------------------------------------------------- refused paths, banner, search


@pytest.mark.parametrize("source", ["/etc/passwd", "runs/../../../etc/shadow", "../../etc/shadow"])
def test_a_refused_path_says_so_without_a_server_path(tmp_path, source):
    allowed = [tmp_path / "data", Path.cwd() / "assets"]
    with pytest.raises(ValueError) as e:
        resolve_path(source, allowed)
    message = str(e.value)
    assert message.startswith(f"'{source}' is not in a folder this lab may read")
    assert str(tmp_path) not in message and str(Path.cwd()) not in message and "assets/" in message


def test_compare_prompt_source_refuses_a_dotted_path_like_a_path(runs_root):
    import gradio as gr

    from lab.ui import compare as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"),
                        allowed_dirs=[runs_root])
    with pytest.raises(ValueError, match="is not in a folder this lab may read") as e:
        tab.build_config(ctx, "base", "x", "runs/../../../etc/shadow", "", 2, 8, 0.7, 50, 0.95, 0, "offline")
    assert "hub" not in str(e.value) and str(runs_root) not in str(e.value)


def test_banner_says_running_once(runs_root):
    import threading

    from lab.ui.common import job_banner, running_tab

    manager = JobManager(runs_root)
    release = threading.Event()

    def job(ctx):
        ctx.set_progress(0.07, "step 4/60")
        release.wait(10)
        return {}

    manager.start("reward", job, {}, owner="v1")
    time.sleep(0.2)
    banner = job_banner(manager, "v1", "reward")
    assert banner.startswith("**Running** — reward job") and banner.lower().count("running") == 1
    assert "7% · step 4/60" in banner
    assert running_tab(manager, ["data", "reward", "ppo"]) == "reward"
    release.set()
    manager.wait(10)
    assert running_tab(manager, ["data", "reward"]) is None and "done" in job_banner(manager, "v1")


def test_search_finds_british_and_american_spellings():
    from lab.ui.data import filter_indices

    pairs = load_pairs("bundled")
    text = " ".join(p.prompt + p.chosen + p.rejected for p in pairs.pairs).lower()
    if "neighbor" in text:
        assert filter_indices(pairs, "neighbour", "all") == filter_indices(pairs, "NEIGHBOR", "all") != []
    assert filter_indices(pairs, "Apologise", "all") == filter_indices(pairs, "apologize", "all")
