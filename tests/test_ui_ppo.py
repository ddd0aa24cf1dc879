"""The PPO tab (lab/ui/ppo.py): its handlers, the job-tab skeleton wired to it, plots, rollouts and labels."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest
from test_ppo import reward_run  # noqa: F401 (a fixture)

from lab import cli, evaluate, ppo, ppo_metrics
from lab.config import label_of
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.runs import Run, new_run, open_run


def test_the_form_and_the_flags_prepare_the_same_job(tiny_lm_dir, reward_run):
    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    ctx = UIContext(manager=JobManager(root=reward_run.parent, mark_interrupted=False), preset=get_preset("cpu"))
    cfg = ppo.config_from(get_preset("cpu"), steps=3, batch_size=4, mini_batch_size=2, learning_rate=1e-3,
                          advantage="rloo", samples_per_prompt=2, reward_norm=True, adap_kl_ctrl=False)
    numbers = {k: float(v) if type(v) is int else v for k, v in asdict(cfg).items()}  # a form's Number gives floats
    form = tab.build_config(ctx, {"reward_run": reward_run.name, "prompts": "bundled", "policy": str(tiny_lm_dir),
                                  **numbers})
    flags = cli.prepared(["--preset", "cpu", "ppo", "--reward-model", str(reward_run), "--prompts", "bundled",
                          "--policy", str(tiny_lm_dir), "--steps", "3", "--batch-size", "4", "--mini-batch-size", "2",
                          "--learning-rate", "1e-3", "--advantage", "rloo", "--samples-per-prompt", "2",
                          "--reward-norm", "--no-adap-kl-ctrl"])
    assert form == flags
    assert flags["reward_model"] == str(reward_run) and flags["advantage"] == "rloo" and flags["steps"] == 3
    assert ppo.config_from_dict(flags) == cfg


def test_ppo_tab_builds_starts_a_run_and_shows_it(tiny_lm_dir, reward_run):
    import gradio as gr

    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    manager = JobManager(root=reward_run.parent, mark_interrupted=False)
    with gr.Blocks() as demo:
        ctx = UIContext(manager=manager, preset=get_preset("cpu"), demo=demo, visitor=gr.State("v1"),
                        data_source=gr.State("bundled"))
        tab.build_ppo_tab(ctx)
    assert [run_id for _, run_id in tab.reward_choices(ctx)] == [reward_run.name]
    cfg = ppo.PPOConfig(steps=2, batch_size=4, mini_batch_size=2, output_min_length=3, output_max_length=5,
                        learning_rate=1e-3)
    evals = evaluate.config_from(get_preset("cpu")).__dict__  # the form's evaluation settings, as it shows them
    form = {"reward_run": reward_run.name, "prompts": "bundled", "policy": str(tiny_lm_dir), **cfg.__dict__, **evals}
    assert set(form) == set(tab.FORM)
    with pytest.raises(ValueError, match="not divisible"):
        tab.start(ctx, "v1", {**form, "mini_batch_size": 3})
    with pytest.raises(ValueError, match="pick a reward-model run"):
        tab.start(ctx, "v1", {**form, "reward_run": None})
    run_id = tab.start(ctx, "v1", form)
    jt = tab.job_tab(ctx)
    with pytest.raises(ValueError, match="only the visitor who started"):
        jt.stop("v2")
    manager.wait(180)
    assert manager.job.status == "done", manager.job.error
    out = jt.load("v1")  # a reload reattaches to it
    assert out["run"] == run_id and "Reward" in out["results"] and "<table" in out["rollouts"]
    assert set(out) == {"run", "banner", "seen", *tab.VIEW, "runs"} and len(tab.VIEW) == 16
    assert [r["step"] for r in evaluate.load_evals(open_run(run_id, reward_run.parent).path)] == [0, 2]
    # the proxy and the judge the cpu preset's reward stage trains on its own quarter of the pairs
    assert [t.name for t in out["eval_scores"].data] == ["proxy", "judge"]
    assert "From step 0 to step 2" in out["eval_note"] and out["timeline"].count("<table") == 3
    reward_fig, kl_fig = out["plot-0"], out["plot-1"]
    assert len(reward_fig.data[1].x) == 2  # band + mean, two steps
    assert [t.name for t in reward_fig.data][2:] == ["share of degenerate answers (0–1)"]  # logged every step
    assert kl_fig.layout.shapes  # the target line
    assert len(out["length_plot"].data[0].x) >= 8  # every rollout of both steps
    assert set(jt.tick("v1", run_id, out["seen"])) == {"banner"}  # unchanged: not redrawn
    assert (open_run(run_id, reward_run.parent).model_dir / "adapter_config.json").exists()


def test_rollouts_table_escapes_model_text():
    from lab.ui.ppo import rollouts_html

    html = rollouts_html([{"step": 1, "prompt": "<b>hi</b>", "response": "<script>x</script> & co", "reward": 1.0,
                           "kl": 0.1}])
    assert "<script>" not in html and "&lt;script&gt;" in html and "&lt;b&gt;" in html and "&amp; co" in html


def test_empty_ppo_plots_say_what_will_appear_there():
    from lab.ui.plots_ppo import all_figures

    empty = all_figures([], target=6.0)
    waiting = ["The curves appear after the first PPO step."]
    assert len(empty) == 8  # and no KL target line on empty axes:
    assert all([a.text for a in f.layout.annotations] == waiting and not f.layout.shapes for f in empty)
    drawn = all_figures([{"step": 1, "env/reward_mean": 0.1, "objective/kl": 0.5}], target=6.0)
    assert [a.text for a in drawn[1].layout.annotations] == ["target 6"] and list(drawn[0].data[1].y) == [0.1]


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
    fixed = kl_coef_figure([{"step": 1, "objective/kl_coef": 0.3}], adaptive=False)
    assert "fixed" in fixed.layout.title.text and "slowly" not in fixed.layout.title.text


def test_plots_without_a_value_head_say_so():
    from lab.ui.plots_ppo import all_figures

    rows = [{"step": s, "ppo/loss/policy": 0.1, "ppo/policy/clipfrac": 0.05, "env/reward_mean": 0.0} for s in (1, 2)]
    figures = all_figures(rows, 6.0, "rloo")
    notes = [[a.text for a in fig.layout.annotations if "no value head" in a.text] for fig in figures]
    assert notes[3] == ["no value head (RLOO): no value-loss curve"]  # on the losses plot, and only there
    assert sum(map(len, notes)) == 1
    assert [t.name for t in figures[4].data] == ["policy"]  # the clip-fraction plot lists no empty value line
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

    labels = {name: label_of(f) for name, f in tab.PPO_FIELDS.items()}
    assert labels["init_kl_coef"] == "KL weight β (init_kl_coef)" and labels["lam"] == "GAE λ (lam)"
    assert labels["whiten_rewards"] == "normalise rewards per batch (whiten_rewards)"
    reward = new_run("reward", {"backbone": "x"}, runs_root)
    (reward.model_dir).mkdir()
    (reward.model_dir / "config.json").write_text("{}")
    reward.set_status("done")
    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    cfg = ppo.config_from(ctx.preset)
    values = {**cfg.__dict__, "mini_batch_size": 3, "gradient_accumulation_steps": 4}
    with pytest.raises(ValueError) as e:
        tab.build_config(ctx, {"reward_run": reward.id, "prompts": "bundled", "policy": "", **values})
    assert "'rollouts per gradient pass (mini_batch_size)'" in str(e.value)
    assert "(gradient_accumulation_steps), under Advanced settings'" in str(e.value)
    with pytest.raises(ValueError, match=r"'training steps \(steps\)' 999 is above this machine's limit of 200"):
        tab.build_config(ctx, {"reward_run": reward.id, "prompts": "bundled", "policy": "", **cfg.__dict__, "steps": 999})
    # the evaluation settings are in the form too: they reach the job, and a bad one is named where it is
    form = {"reward_run": reward.id, "prompts": "bundled", "policy": "", **cfg.__dict__}
    config = tab.build_config(ctx, {**form, "eval_n_prompts": 4, "eval_every": 8})
    assert config["evaluate"]["eval_n_prompts"] == 4 and config["evaluate"]["eval_every"] == 8
    assert "eval_n_prompts" not in config and set(tab.EVAL_FIELDS) <= set(tab.FORM)
    with pytest.raises(ValueError, match=r"\(eval_every\), under Evaluation while training'"):
        tab.build_config(ctx, {**form, "eval_every": -1})
    with pytest.raises(ValueError, match=r"\(eval_n_prompts\), under Evaluation while training' 500 is above this "
                                         r"machine's limit of 100"):
        tab.build_config(ctx, {**form, "eval_n_prompts": 500})


def test_emoji_rollouts_are_shaded_by_whole_characters():
    from lab.ui.ppo import rollouts_html

    sample = {"step": 1, "prompt": "Say hi", "response": "Hi 🎉!", "reward": 0.1, "kl": 0.3, "length": 5,
              "tokens": ["Hi", " 🎉", "!"], "span_len": [1, 3, 1], "token_kl": [0.1, 0.2, 0.4, 0.9, 0.0]}
    html = rollouts_html([sample])
    assert "\ufffd" not in html and html.count("class='tok'") >= 3 and ">&#x27;" not in html
    assert "> 🎉</span>" in html and "3 tokens: mean KL +0.500, largest +0.900" in html
    old = {**sample, "tokens": ["Hi", " \ufffd", "\ufffd", "\ufffd", "!"], "token_kl": [0.1, 0.2, 0.4, 0.9, 0.0]}
    del old["span_len"]  # an older run decoded each token alone: its text is shown plain, never as "���"
    plain = rollouts_html([old])
    assert "\ufffd" not in plain and "Hi 🎉!" in plain


def test_a_short_run_compares_disjoint_ends_and_a_single_step_says_too_few(tmp_path):
    from lab.ui.ppo import summary_markdown

    run = new_run("ppo", {"policy": "p", "steps": 6, "reward_model": "r"}, tmp_path)
    for step in range(1, 7):
        run.log_metrics({"step": step, "env/reward_mean": float(step), "objective/kl": 0.1, "time/step": 1.0,
                         "tokens/response_len_mean": 10.0})
    old_summary = {"steps": 6, "reward_first": 3.0, "reward_last": 4.0, "kl_last": 0.1, "seconds_per_step": 1.0}
    run.set_status("done", summary=old_summary)  # an older run's summary: windows of 5 that overlapped
    text = summary_markdown(run)
    assert "Rollout reward +1.500 → +5.500" in text and "mean of steps 1–2 → steps 5–6" in text
    assert "short run" in text
    assert "a change of +4.00 against ±1.41 of noise: beyond its noise" in text  # ends' means ± 2 standard errors
    flat = new_run("ppo", {"policy": "p", "steps": 6, "reward_model": "r"}, tmp_path / "flat")
    for step, reward in enumerate((0.2, -0.9, 1.1, 0.4, -0.6, 0.9), 1):  # a wobble, not a rise
        flat.log_metrics({"step": step, "env/reward_mean": reward, "objective/kl": 0.1, "time/step": 1.0})
    flat.set_status("done", summary=ppo_metrics.summarize(flat.metrics()))
    assert "within its noise" in summary_markdown(flat)
    one = new_run("ppo", {"policy": "p", "steps": 1, "reward_model": "r"}, tmp_path / "one")
    one.log_metrics({"step": 1, "env/reward_mean": 1.0, "objective/kl": 0.1, "time/step": 1.0})
    one.set_status("stopped", summary=ppo_metrics.summarize(one.metrics()))
    assert "too few to say whether the reward rose" in summary_markdown(one)


def test_entropy_is_plotted_per_token_and_older_runs_say_theirs_is_summed():
    from lab.ui.plots_ppo import NOTES, entropy_figure

    fig = entropy_figure([{"step": 1, "objective/entropy": 30.0, "objective/entropy_per_token": 1.5}])
    assert list(fig.data[0].y) == [1.5] and fig.layout.yaxis.title.text == "nats per token"
    old = entropy_figure([{"step": 1, "objective/entropy": 30.0}])
    assert list(old.data[0].y) == [30.0] and "summed per answer" in old.layout.annotations[0].text
    assert "per token" in NOTES[5] and "summed" not in NOTES[5]


def test_stopped_reward_runs_are_listed_but_never_the_default_and_empty_numbers_refused(runs_root):
    import time

    import gradio as gr

    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    runs = []
    for status in ("done", "stopped"):
        run = new_run("reward", {"backbone": "x"}, runs_root)
        run.model_dir.mkdir()
        (run.model_dir / "config.json").write_text("{}")
        run.set_status(status, summary={"steps": 20, "eval_accuracy": 0.9})
        runs.append(run)
        time.sleep(0.02)
    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    choices = tab.reward_choices(ctx)
    assert [v for _, v in choices] == [runs[1].id, runs[0].id] and "STOPPED after 20 steps" in choices[0][0]
    assert tab.newest_reward(ctx)["value"] == runs[0].id  # the finished one, not the newer stopped one
    cfg = ppo.config_from(ctx.preset)
    with pytest.raises(ValueError, match=r"'training steps \(steps\)' is empty"):
        tab.build_config(ctx, {"reward_run": runs[0].id, "prompts": "bundled", "policy": "", **cfg.__dict__,
                               "steps": None})
    with pytest.raises(ValueError, match="is not a number"):
        tab.build_config(ctx, {"reward_run": runs[0].id, "prompts": "bundled", "policy": "", **cfg.__dict__,
                               "learning_rate": "abc"})
    assert ctx.manager.job is None


def test_the_form_says_what_a_run_will_cost_from_this_machines_pace(runs_root):
    import gradio as gr

    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    assert "no measurement yet on this machine" in tab.cost_text(ctx, 64, 8, 32)
    run = new_run("ppo", {"batch_size": 8, "output_max_length": 32}, runs_root)
    with open(run.path / "metrics.jsonl", "w") as fh:
        fh.writelines(f'{{"time": {100 + 15 * s}, "step": {s}}}\n' for s in (1, 2, 3))
    run.set_status("done")
    text = tab.cost_text(ctx, 64, 8, 32)
    assert "about **16 min**" in text and "64 steps × 15.0 s per step" in text and run.id in text
    assert "scaled ×2.00" in tab.cost_text(ctx, 64, 16, 32)  # twice the rollouts: a rough guess, said so
    assert "type the training steps" in tab.cost_text(ctx, None, 8, 32)
    # a run that says how long it took in all: what it spent outside its steps (loading) is added, and named
    timed = new_run("ppo", {"batch_size": 8, "output_max_length": 32}, runs_root)
    with open(timed.path / "metrics.jsonl", "w") as fh:
        fh.writelines(f'{{"time": {100 + 6 * s}, "step": {s}}}\n' for s in range(1, 33))
    timed.set_status("done", summary={"steps": 32}, seconds=32 * 6 + 21)
    text = tab.cost_text(ctx, 32, 8, 32)
    assert "32 steps × 6.0 s per step + 21 s loading the models and saving" in text and "about **4 min**" in text


def test_the_cost_line_uses_a_pace_measured_against_a_reward_model_on_the_chosen_ones_backbone(runs_root):
    """Every rollout is scored, so the reward model's size is part of a PPO step (7.4 s against 5.9 s a step with a
    135M reward model instead of the 22M one): a pace measured against another backbone is used only when there is
    no other, and then named."""
    import gradio as gr

    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    with gr.Blocks():
        ctx = UIContext(manager=JobManager(runs_root), preset=get_preset("cpu"), visitor=gr.State("v"))
    small = new_run("reward", {"backbone": "embedded:all-minilm-l6-v2"}, runs_root)
    big = new_run("reward", {"backbone": "embedded:smollm2-135m-instruct"}, runs_root)

    def timed_ppo(reward: Run, seconds: float) -> Run:
        run = new_run("ppo", {"batch_size": 8, "output_max_length": 32, "reward_model": str(reward.path)}, runs_root)
        with open(run.path / "metrics.jsonl", "w") as fh:
            fh.writelines(f'{{"time": {100 + seconds * s}, "step": {s}}}\n' for s in (1, 2, 3))
        run.set_status("done")
        return run

    first = timed_ppo(small, 15)
    same = tab.cost_text(ctx, 64, 8, 32, small.id)
    assert "64 steps × 15.0 s per step" in same and "its reward model was on" not in same
    other = tab.cost_text(ctx, 64, 8, 32, big.id)  # only the small one's pace: used, and said so
    assert "64 steps × 15.0 s per step" in other and first.id in other
    assert ("its reward model was on `embedded:all-minilm-l6-v2`, yours is on `embedded:smollm2-135m-instruct`"
            in other)
    second = timed_ppo(big, 20)
    assert "64 steps × 20.0 s per step" in tab.cost_text(ctx, 64, 8, 32, big.id)
    older = tab.cost_text(ctx, 64, 8, 32, small.id)  # the older run on its backbone, not the newest run
    assert "64 steps × 15.0 s per step" in older and first.id in older and second.id not in older
    assert "64 steps × 20.0 s per step" in tab.cost_text(ctx, 64, 8, 32, "no-such-run")  # unknown: the newest


def test_a_summary_missing_numbers_still_draws(tmp_path):
    from lab.ui.ppo import summary_markdown

    run = new_run("ppo", {"policy": "p", "reward_model": "r"}, tmp_path)
    for step in (1, 2):
        run.log_metrics({"step": step, "env/reward_mean": 0.1 * step, "objective/kl": 0.01})
    run.set_status("stopped", summary={"steps": 2})  # a summary written by hand, or by an older lab
    text = summary_markdown(run)
    assert "step 1 → step 2" in text and "KL 0.010" in text


def test_the_summary_reports_the_kl_compare_shows_the_mean_of_the_last_five_steps(tmp_path):
    """A student read the summary's last-step KL beside Compare's mean of the last 5 steps as two figures for one run:
    both tabs now give the same mean, and the last step beside it."""
    from lab.compare import run_kl
    from lab.policies import Side
    from lab.ui.ppo import summary_markdown

    run = new_run("ppo", {"policy": "p", "reward_model": "r"}, tmp_path)
    for step, kl in enumerate([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0], start=1):
        run.log_metrics({"step": step, "env/reward_mean": 0.1 * step, "objective/kl": kl})
    run.set_status("done", summary={"steps": 7, "kl_last": 10.0})
    text = summary_markdown(run)
    assert "KL 4.800 nats (mean of the last 5 steps, the figure Compare shows; last step 10.000)" in text
    (run.path / "model").mkdir()
    assert run_kl(Side("b", run.id, "p", run.path / "model", "")) == 4.8


def _eval_rows(steps, reward, judge, refusal):
    return [{"step": s, "n": 4, "eval/reward": r, "eval/reward_se": 0.05, "eval/judge": j, "eval/judge_se": 0.05,
             "eval/refusal": f, "eval/degenerate": 0.0,
             "answers": [{"prompt": f"prompt {i}", "answer": f"answer <b>{i}</b> at {s}", "reward": r, "judge": j,
                          "refusal": f > 0.5, "degenerate": False} for i in range(4)]}
            for s, r, j, f in zip(steps, reward, judge, refusal)]


def test_eval_curves_overlay_two_runs_and_the_timeline_shows_each_evaluation(runs_root):
    from lab.ui import ppo as tab

    default = new_run("ppo", {"policy": "p", "evaluate": {"eval_every": 16, "eval_pinned": 2}}, runs_root)
    beta0 = new_run("ppo", {"policy": "p", "init_kl_coef": 0.0}, runs_root)
    for run, rows in ((default, _eval_rows([0, 16, 32], [0.0, 0.3, 0.5], [0.0, 0.2, 0.3], [0.1, 0.1, 0.1])),
                      (beta0, _eval_rows([0, 16, 32], [0.0, 0.9, 1.8], [0.0, -0.2, -0.6], [0.1, 0.6, 0.9]))):
        for row in rows:
            evaluate.append_row(run.path, row)
    out = tab.eval_view(default, [beta0.id], runs_root)
    scores, rates = out["eval_scores"], out["eval_rates"]
    assert [t.name for t in scores.data] == [f"{default.id} · proxy", f"{default.id} · judge",
                                             f"{beta0.id} · proxy", f"{beta0.id} · judge"]
    assert list(scores.data[2].y) == [0.0, 0.9, 1.8] and scores.data[1].line.dash == "dash"
    assert scores.data[0].line.color != scores.data[2].line.color  # one colour per run
    assert list(rates.data[2].y) == [0.1, 0.6, 0.9]
    alone = tab.eval_view(default, [], runs_root)
    assert [t.name for t in alone["eval_scores"].data] == ["proxy", "judge"]
    html = out["timeline"]
    assert html.count("<table") == 2 and "answer &lt;b&gt;0&lt;/b&gt; at 32" in html and "<b>0</b>" not in html
    assert "proxy reward rose by +0.50 from step 0 to step 32" in out["eval_note"]
    assert "refusals 10% → 10%" in out["eval_note"]
    assert "(4 answers each: a change of one or two answers may be noise" in out["eval_note"]  # says what it misses
    note = tab.eval_view(beta0, [], runs_root)["eval_note"]
    assert "judge reward fell" in note and "refusals 10% → 90%" in note
    empty = tab.eval_view(None, [], runs_root)
    assert not empty["eval_scores"].data and empty["timeline"] == ""
    assert "Different reward models" not in out["eval_note"]  # both scored by the same (here: none named)


def test_an_overlay_of_a_run_scored_by_another_reward_model_says_its_curves_are_on_another_scale(runs_root):
    """Stop 43's walk: ppo-16 overlaid on ppo-15 read as better from step 0 on, where only its reward model (rm-16
    against rm-15) differed."""
    from lab.ui import ppo as tab

    rm_a, rm_b = new_run("reward", {}, runs_root), new_run("reward", {}, runs_root)
    mine = new_run("ppo", {"reward_model": str(rm_a.model_dir)}, runs_root)
    same = new_run("ppo", {"reward_model": str(rm_a.model_dir)}, runs_root)
    other = new_run("ppo", {"reward_model": str(rm_b.model_dir)}, runs_root)
    for run in (mine, same, other):
        for row in _eval_rows([0, 16], [0.0, 0.3], [0.0, 0.1], [0.1, 0.1]):
            evaluate.append_row(run.path, row)
    assert "Different reward models" not in tab.eval_view(mine, [same.id], runs_root)["eval_note"]
    note = tab.eval_view(mine, [same.id, other.id], runs_root)["eval_note"]
    assert f"this run trained against {rm_a.id}, {other.id} against {rm_b.id}" in note
    assert same.id not in note.split("Different reward models")[1] and "on different scales" in note
    assert str(runs_root) not in note  # run ids, never the server's paths


def test_a_reward_run_that_rewards_refusing_is_marked_and_warned_about(runs_root):
    """The refusal check of a reward run (its summary's refusal_preference) reaches the PPO tab's picker and the
    warning PPO gives before it trains; a balanced run gets neither."""
    from lab.reward_model import refusal_warning
    from lab.ui import ppo as tab

    one_sided = new_run("reward", {"backbone": "x"}, runs_root)
    one_sided.set_status("done", summary={"refusal_preference": 1.0, "eval_accuracy": 0.6, "data": "hh.jsonl.gz",
                                          "subsets": {"train": {"hh.jsonl.gz": 1000, "broken-text": 500}}})
    balanced = new_run("reward", {"backbone": "x"}, runs_root)
    balanced.set_status("done", summary={"refusal_preference": 0.0625})
    assert "100% of its comparisons on ordinary requests" in refusal_warning(one_sided.path)
    # the model folder finds its run too; the fix repeats the 83 helpful pairs to about the 1,000 others, and the 83
    # written declines to about a third of them
    assert "'hh.jsonl.gz+bundled:helpful*12+bundled:harmless*4'" in refusal_warning(one_sided.model_dir)
    assert refusal_warning(balanced.path) == "" and refusal_warning(runs_root / "missing") == ""
    # hh-rlhf's own helpful subsets count as helpful, as lab.augment's evasion pairs count them: only the 1,000
    # harmless-base pairs ask for a balance
    from lab.reward_model import balanced_mix
    hub = {"harmless-base": 1000, "helpful-base": 300, "helpful-online": 200, "evasion": 400}
    assert balanced_mix("Anthropic/hh-rlhf", hub) == "Anthropic/hh-rlhf+bundled:helpful*12+bundled:harmless*4"
    assert balanced_mix("hh.jsonl.gz", {"hh.jsonl.gz": 747}) == "hh.jsonl.gz+bundled:helpful*9+bundled:harmless*3"
    assert balanced_mix("", None) == "DATA+bundled:helpful+bundled:harmless"
    assert tab.reward_label(one_sided).endswith("⚠ rewards refusing")
    assert "⚠" not in tab.reward_label(balanced)


def test_a_balanced_reward_run_that_rewards_refusing_is_not_blamed_on_its_data(runs_root):
    """Seed 17 of the cpu defaults on the bundled pairs (83 ordinary-request pairs beside 83 harmful ones) gave a
    reward model that preferred a canned refusal on 42% of the ordinary probes (stop 40). The data was balanced, so
    the warning must not call it one-sided or offer a mix: it names the balance and the fixes that worked (another
    seed; more evasion pairs). The Reward tab's check says the same."""
    from lab.reward_model import refusal_warning
    from lab.ui.reward import checks_lines

    train = {"harmless": 83, "helpful": 83, "broken-text": 83, "evasion": 42, "refusal-over-harm": 42}
    run = new_run("reward", {"backbone": "x"}, runs_root)
    run.set_status("done", summary={"refusal_preference": 0.42, "data": "bundled", "subsets": {"train": train}})
    warning = refusal_warning(run.path)
    assert "42% of its comparisons on ordinary requests" in warning
    assert "not one-sided (83 ordinary-request pairs beside 83 others)" in warning
    assert "another seed" in warning and "evasion_pairs 0.5" in warning
    assert "harmless-base" not in warning and "bundled:helpful" not in warning
    line = checks_lines({"refusal_preference": 0.42, "subsets": {"train": train}}, "bundled")[0]
    assert "⚠" in line and "not one-sided" in line and "bundled:helpful" not in line
    assert "in **20 of 48** comparisons (42%)" in line  # a count, not a percent of 16 requests it cannot be
    assert "refusal-over-harm pairs" in warning  # the run had them: the likely cause is named
    helpful_only = checks_lines({"refusal_preference": 0.5, "subsets": {"train": {"helpful": 80}}}, "bundled:helpful")
    assert "not one-sided" in helpful_only[0] and "refusal-over-harm" not in helpful_only[0]  # no such pairs: no blame
    broken = runs_root / "broken-status"
    broken.mkdir()
    (broken / "status.json").write_text("{cut off")
    assert refusal_warning(broken) == ""  # an unreadable status: no warning, and no crash before PPO
    # one-sided data still gets the mix, in the tab as in the warning
    hh = checks_lines({"refusal_preference": 1.0, "subsets": {"train": {"hh.jsonl.gz": 1000}}}, "hh.jsonl.gz")[0]
    assert "one-sided" in hh and "hh.jsonl.gz+bundled:helpful*12+bundled:harmless*4" in hh


def test_the_summary_line_names_what_ppo_maximised_besides_the_reward_model(runs_root):
    from lab.ui import ppo as tab

    plain = new_run("ppo", {"policy": "p"}, runs_root)
    heavy = new_run("ppo", {"policy": "p", "relevance_coef": 10.0}, runs_root)
    alone = new_run("ppo", {"policy": "p", "reward_model_coef": 0.0, "relevance_coef": 5.0}, runs_root)
    assert "score:" not in tab.summary_markdown(plain)  # the reward model alone: nothing to add
    assert "score: reward model + 10 × relevance" in tab.summary_markdown(heavy)
    assert "score: 5 × relevance" in tab.summary_markdown(alone)
    echo = new_run("ppo", {"policy": "p", "relevance_coef": 5.0, "relevance_echo_discount": True}, runs_root)
    assert "score: reward model + 5 × relevance (restated requests discounted)" in tab.summary_markdown(echo)
    gated = new_run("ppo", {"policy": "p", "relevance_coef": 5.0, "relevance_on_harmful": False}, runs_root)
    assert "score: reward model + 5 × relevance (not on harmful requests)" in tab.summary_markdown(gated)
    gated.set_status("done", summary={"relevance_left_out": [52, 148]})
    assert "5 × relevance (not on harmful requests: 52 of 148 prompts)" in tab.summary_markdown(gated)
    gated.set_status("done", summary={"relevance_left_out": [0, 40]})
    assert "none of the prompts is labelled harmful, so every answer had it" in tab.summary_markdown(gated)
    penalised = new_run("ppo", {"policy": "p", "relevance_coef": 5.0, "degenerate_penalty": 2.0}, runs_root)
    assert "score: reward model + 5 × relevance − 2 for a degenerate answer" in tab.summary_markdown(penalised)
    alone = new_run("ppo", {"policy": "p", "degenerate_penalty": 1.5}, runs_root)
    assert "score: reward model − 1.5 for a degenerate answer" in tab.summary_markdown(alone)


def test_a_reward_run_on_pairs_of_ones_own_offers_their_requests_to_ppo(runs_root, tmp_path):
    """A reward model trained on a user's own pairs (a file, a hub id) beside the demo set's: PPO on the demo prompts
    alone never meets their kind of request, so the PPO tab says so under Prompts with a button that joins them
    (`bundled+FILE`), and `lab ppo` prints the same as a note. The demo set's own runs, feedback votes and prompts
    that already name the file get nothing."""
    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    own = tmp_path / "hh <train>.jsonl"
    own.write_text('{"chosen": "\\n\\nHuman: rob a bank?\\n\\nAssistant: No.", "rejected": "\\n\\nHuman: rob a bank?'
                   '\\n\\nAssistant: Sure."}\n')
    mixed = new_run("reward", {"backbone": "x", "data": f"{own}+bundled:helpful*11+bundled:harmless*4"}, runs_root)
    demo = new_run("reward", {"backbone": "x", "data": "bundled"}, runs_root)
    votes = new_run("reward", {"backbone": "x", "data": "feedback:class-1+bundled"}, runs_root)
    # by run id; the file has no `subset` and the mix balances it with the demo set's helpful pairs: labelled
    assert ppo.own_requests(mixed.path.name, "bundled", runs_root) == ([str(own)], f"bundled+{own}=harmless-base")
    mixed.model_dir.mkdir(parents=True, exist_ok=True)
    assert ppo.own_requests(str(mixed.model_dir), " bundled ", runs_root)[1] == f"bundled+{own}=harmless-base"
    for prompts in (f"bundled+{own}=harmless-base", f"{own}", "bundled++"):  # named already; unreadable: no offer
        assert ppo.own_requests(str(mixed.path), prompts, runs_root) == ([], None)
    for run in (demo, votes):
        assert ppo.own_requests(str(run.path), "bundled", runs_root) == ([], None)
    assert ppo.own_requests(str(runs_root / "missing"), "bundled", runs_root) == ([], None)
    assert ppo.own_requests(str(mixed.path), "allenai/real-toxicity-prompts", runs_root)[1] == \
        f"allenai/real-toxicity-prompts+{own}=harmless-base"
    alone = new_run("reward", {"backbone": "x", "data": str(own)}, runs_root)  # not balanced: no label guessed
    assert ppo.own_requests(str(alone.path), "bundled", runs_root)[1] == f"bundled+{own}"
    assert "append '=harmless-base'" in ppo.own_requests_note(*ppo.own_requests(str(alone.path), "bundled"))
    hub = new_run("reward", {"backbone": "x", "data": "Anthropic/hh-rlhf+bundled:helpful*12"}, runs_root)
    assert ppo.own_requests(str(hub.path), "bundled", runs_root)[1] == "bundled+Anthropic/hh-rlhf"  # folders label it
    assert ppo.default_prompts(get_preset("cpu"), str(hub.path), runs_root) == "bundled"  # offered, not joined unasked
    # a file outside the folders the app may read is neither offered nor joined (Start would refuse it)
    assert ppo.own_requests(str(mixed.path), "bundled", runs_root, allowed_dirs=[runs_root]) == ([], None)
    assert ppo.own_requests(str(mixed.path), "bundled", runs_root, allowed_dirs=[tmp_path])[0] == [str(own)]
    gone = new_run("reward", {"backbone": "x", "data": f"{tmp_path / 'moved.jsonl'}+bundled:helpful"}, runs_root)
    assert ppo.own_requests(str(gone.path), "bundled", runs_root) == ([], None)  # its data moved since: no offer
    assert ppo.default_prompts(get_preset("cpu"), str(gone.path), runs_root) == "bundled"

    ctx = UIContext(manager=JobManager(runs_root, mark_interrupted=False), preset=get_preset("cpu"))
    note, shown = tab.own_requests_view(ctx, mixed.path.name, "bundled")
    assert shown and "`hh &lt;train&gt;.jsonl`" in note and "<train>" not in note  # the file's name, escaped
    assert "&#x27;=harmless-base&#x27; labels them as requests to decline" in note and "seeds" in note
    assert tab.own_requests_view(ctx, demo.path.name, "bundled") == ("", False)
    assert tab.own_requests_view(ctx, None, "bundled") == ("", False)
    # the joined source is one PPO reads: the demo prompts and the file's request, interleaved
    from lab.data import load_prompt_rows, load_prompts
    joined = load_prompts(ppo.own_requests(mixed.path.name, "bundled", runs_root)[1])
    assert len(joined) == 149 and joined[1] == "rob a bank?"
    assert load_prompt_rows(ppo.own_requests(mixed.path.name, "bundled", runs_root)[1], labels=True)[1] == \
        ("rob a bank?", "harmless-base")  # PPO leaves relevance out on it

    missing, suggestion = ppo.own_requests(str(mixed.path), "bundled")
    assert f"--prompts 'bundled+{own}=harmless-base'" in ppo.own_requests_note(missing, suggestion)


def test_on_the_cpu_preset_ppo_defaults_to_the_reward_models_own_requests(tiny_lm_dir, reward_run, tmp_path):
    """Stop 54: the hh mix with its hh file's requests among PPO's prompts read ahead on hh-rlhf's harmful requests
    in 3 of 3 seeds (258–198; 210–219 without). So on the cpu preset a reward run trained on pairs of the user's own
    makes PPO's default prompts `bundled+FILE=harmless-base` (flags without --prompts, and the tab's Prompts box when
    that run is picked); a typed source stays as typed, the demo set's runs keep `bundled`, and the Space's preset
    keeps the seed's real-toxicity-prompts."""
    import json
    import shutil

    from lab.ui import ppo as tab
    from lab.ui.common import UIContext

    own = tmp_path / "hh.jsonl"
    own.write_text('{"chosen": "\\n\\nHuman: rob a bank?\\n\\nAssistant: No.", "rejected": "\\n\\nHuman: rob a bank?'
                   '\\n\\nAssistant: Sure."}\n')
    root = tmp_path / "runs"
    mixed = root / "reward-mixed"
    shutil.copytree(reward_run, mixed)
    config = json.loads((mixed / "config.json").read_text())
    (mixed / "config.json").write_text(json.dumps({**config, "data": f"{own}+bundled:helpful*11"}))
    shutil.copytree(reward_run, root / reward_run.name)  # the demo set's run
    joined = f"bundled+{own}=harmless-base"
    assert ppo.default_prompts(get_preset("cpu"), str(mixed)) == joined
    assert ppo.default_prompts(get_preset("cpu"), str(reward_run)) == "bundled"
    assert ppo.default_prompts(get_preset("a100"), str(mixed)) == "allenai/real-toxicity-prompts"

    flags = ["--preset", "cpu", "ppo", "--reward-model", str(mixed), "--policy", str(tiny_lm_dir), "--steps", "2"]
    assert cli.prepared(flags)["prompts"] == joined
    assert cli.prepared([*flags, "--prompts", "bundled"])["prompts"] == "bundled"  # asked for: kept

    ctx = UIContext(manager=JobManager(root=root, mark_interrupted=False), preset=get_preset("cpu"))
    picked = tab.reward_picked(ctx, "reward-mixed", "bundled", "bundled")
    assert picked["prompts"] == joined and picked["prompts_auto"] == joined
    assert "these prompts hold the requests of this reward model's own pairs (`hh.jsonl`)" in picked["prompts_note"]
    back = tab.reward_picked(ctx, reward_run.name, joined, joined)  # the demo run: back to the preset's
    assert back["prompts"] == "bundled" and back["prompts_note"] == ""
    typed = tab.reward_picked(ctx, "reward-mixed", "my_prompts.jsonl", "bundled")  # typed: kept, the join offered
    assert typed["prompts"] == "my_prompts.jsonl" and "The button adds them" in typed["prompts_note"]
