"""The PPO tab: fine-tune the policy against a reward-model run, watch reward, KL and losses live, read the rollouts."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

import gradio as gr

from lab import ppo
from lab.runs import ACTIVE, Run
from lab.ui.common import UIContext, current_run_id, esc, find_run, guard, job_banner, run_choices
from lab.ui.common import run_signature, start_job, stop_job
from lab.ui.plots_ppo import all_figures

MAIN_FIELDS = ("steps", "learning_rate", "batch_size", "mini_batch_size", "ppo_epochs", "init_kl_coef", "target",
               "output_min_length", "output_max_length")
ROLLOUTS_SHOWN = 16
TEXT_CHARS = 400
N_FIGURES = 8
REWARD_DONE = ("done", "stopped")  # reward runs with a saved model

# ---------------------------------------------------------------- reading a run (pure: run folder in, text/figures out)


def _cut(text: str) -> str:
    text = str(text).strip()
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"


def rollouts_html(samples: list[dict[str, Any]], k: int = ROLLOUTS_SHOWN) -> str:
    """The latest k rollouts (newest step first), every text escaped."""
    if not samples:
        return ""
    latest = samples[-k:][::-1]
    rows = "".join(
        f"<tr><td>{esc(s.get('step', ''))}</td><td>{esc(_cut(s.get('prompt', '')))}</td>"
        f"<td class='answer'>{esc(_cut(s.get('response', '')))}</td>"
        f"<td><b>{float(s.get('reward', 0)):+.3f}</b></td><td>{float(s.get('kl', 0)):.3f}</td></tr>"
        for s in latest
    )
    return (
        f"<h4>Latest rollouts ({len(latest)})</h4><table class='ppo-rollouts'><thead><tr><th>Step</th><th>Prompt</th>"
        f"<th>Response</th><th>Reward</th><th>KL</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def summary_markdown(run: Run) -> str:
    status = run.status()
    state = status.get("status", "?")
    summary = status.get("summary") or {}
    config = run.config
    lines = [f"**Run** `{esc(run.id)}` — {esc(state)} · policy `{esc(config.get('policy', '?'))}` · "
             f"reward model `{esc(config.get('reward_model', '?'))}`"]
    rows = run.metrics()
    if state in ACTIVE:
        step = rows[-1]["step"] if rows else 0
        lines.append(f"Training… step {step} of {config.get('steps', '?')}. The plots update every few seconds.")
    if isinstance(summary.get("reward_last"), (int, float)):
        lines.append(
            f"### Reward {summary['reward_first']:+.3f} → {summary['reward_last']:+.3f}\n"
            f"(mean of the first / last {ppo.WINDOW} steps) · KL {summary['kl_last']:.3f} · "
            f"{summary['steps']} steps · {summary['seconds_per_step']:.1f} s per step"
        )
    if status.get("error"):
        lines.append(f"**Error:** {esc(status['error'])}")
    return "\n\n".join(lines)


def view(run: Run | None) -> tuple:
    """(summary markdown, rollouts HTML, *figures) of one run."""
    if run is None:
        return ("No PPO run yet: pick a reward model and start one.", "", *all_figures([], None))
    config = run.config
    target = config.get("target") if config.get("adap_kl_ctrl", True) else None
    return summary_markdown(run), rollouts_html(run.samples()), *all_figures(run.metrics(), target)


# ---------------------------------------------------------------- handlers (plain functions, tested directly)


def reward_choices(ctx: UIContext) -> list[tuple[str, str]]:
    return run_choices("reward", ctx.manager.root, status=REWARD_DONE)


def build_config(ctx: UIContext, reward_run: str | None, prompts: str, policy: str, *values: Any) -> dict[str, Any]:
    """The job config from the form (reward run, prompts, policy, then every PPOConfig field): `ppo.prepare`."""
    form = {"reward_model": reward_run, "prompts": prompts, "policy": policy,
            **{f.name: v for f, v in zip(fields(ppo.PPOConfig), values)}}
    return ppo.prepare(ctx.preset, form, ctx.allowed_dirs or None, ctx.manager.root)


def start(ctx: UIContext, visitor: str | None, *form: Any) -> str:
    """Start a PPO job owned by this visitor; returns the new run's id."""
    return start_job(ctx, visitor, ppo.KIND, ppo.train_ppo, build_config(ctx, *form))


def stop(ctx: UIContext, visitor: str | None) -> str:
    """Ask this visitor's job to stop (within the current PPO step)."""
    return stop_job(ctx, visitor, ppo.KIND)


def tick(ctx: UIContext, visitor: str | None, run_id: str | None, seen: str) -> tuple:
    """Timer: the banner always; the run's plots, rollouts and the runs list only when its files changed."""
    banner = job_banner(ctx.manager, visitor, ppo.KIND)
    active = ctx.manager.active()
    if active is not None and active.kind == ppo.KIND and active.id != run_id:
        run_id = active.id  # someone started a run: follow it
    run = find_run(ctx, run_id)
    signature = run_signature(run)
    if signature == seen:
        return (banner, run_id, seen, *(gr.skip() for _ in range(N_FIGURES + 3)))
    choices = gr.update(choices=run_choices(ppo.KIND, ctx.manager.root), value=run.id if run else None)
    return (banner, run_id, signature, *view(run), choices)


# ---------------------------------------------------------------- the tab


def _component(f: Any, default: Any, limits: Any) -> gr.components.Component:
    """A form input for one PPOConfig field, labelled by its name and explained by its help."""
    label, info = f.name, f.metadata["help"]
    if f.type == "bool":
        return gr.Checkbox(default, label=label, info=info)
    if f.name == "kl_penalty":
        return gr.Dropdown(list(ppo.KL_PENALTIES), value=default, label=label, info=info)
    if f.name == "steps":
        return gr.Number(default, label=f"{label} (≤ {limits.max_steps})", info=info, minimum=1,
                         maximum=limits.max_steps, precision=0)
    if f.name == "batch_size":
        return gr.Number(default, label=f"{label} (≤ {limits.max_batch_size})", info=info, minimum=1,
                         maximum=limits.max_batch_size, precision=0)
    if f.type == "int":
        return gr.Number(default, label=label, info=info, precision=0)
    return gr.Number(default, label=label, info=info)


def build_ppo_tab(ctx: UIContext) -> None:
    defaults = ppo.config_from(ctx.preset)
    limits = ctx.preset.limits
    run_state = gr.State(None)  # the PPO run this browser is looking at
    seen_state = gr.State("")  # run_signature last drawn

    banner = gr.Markdown(elem_id="ppo-banner")
    with gr.Row():
        with gr.Column(scale=1, min_width=320):
            with gr.Row():
                reward_dd = gr.Dropdown(reward_choices(ctx), label="Reward model (a finished reward run)", scale=4,
                                        elem_id="ppo-reward-run")
                reward_refresh = gr.Button("↻", scale=0, min_width=40, size="sm")
            prompts = gr.Textbox(ctx.preset.ppo_prompts, label="Prompts",
                                 info="'bundled', a .jsonl/.csv/.parquet file, or a hub id with a prompt column")
            inputs: dict[str, gr.components.Component] = {}
            for f in fields(ppo.PPOConfig):
                if f.name in MAIN_FIELDS:
                    inputs[f.name] = _component(f, getattr(defaults, f.name), limits)
            with gr.Accordion("Advanced settings", open=False):
                policy = gr.Textbox(ctx.preset.policy, label="policy", info="the model to fine-tune (LoRA adapters)")
                for f in fields(ppo.PPOConfig):
                    if f.name not in MAIN_FIELDS:
                        inputs[f.name] = _component(f, getattr(defaults, f.name), limits)
            with gr.Row():
                start_btn = gr.Button("Start PPO", variant="primary", elem_id="ppo-start")
                stop_btn = gr.Button("Stop", variant="stop", elem_id="ppo-stop")
        with gr.Column(scale=2):
            results = gr.Markdown(elem_id="ppo-results")
            plots = []
            for row in range(N_FIGURES // 2):
                with gr.Row():
                    plots += [gr.Plot(elem_id=f"ppo-plot-{2 * row + i}", show_label=False) for i in range(2)]
    rollouts = gr.HTML(elem_id="ppo-rollouts")
    with gr.Row():
        runs_dd = gr.Dropdown(run_choices(ppo.KIND, ctx.manager.root), label="PPO runs (pick one to reopen it)",
                              scale=4, elem_id="ppo-runs")
        refresh_btn = gr.Button("Refresh list", scale=1, size="sm")
    timer = gr.Timer(1.5)

    form = [reward_dd, prompts, policy, *(inputs[f.name] for f in fields(ppo.PPOConfig))]
    view_outputs = [results, rollouts, *plots]

    @guard(2)
    def on_start(visitor: str | None, *values: Any) -> tuple:
        return start(ctx, visitor, *values), ""

    @guard(1)
    def on_stop(visitor: str | None) -> str:
        return stop(ctx, visitor)

    def on_select(run_id: str | None) -> tuple:
        run = find_run(ctx, run_id)
        return run_id, run_signature(run), *view(run)

    def on_load(visitor: str | None) -> tuple:
        run_id = current_run_id(ctx, ppo.KIND)
        run = find_run(ctx, run_id)
        runs = gr.update(choices=run_choices(ppo.KIND, ctx.manager.root), value=run_id)
        rewards = reward_choices(ctx)
        return (run_id, run_signature(run), job_banner(ctx.manager, visitor, ppo.KIND), *view(run), runs,
                gr.update(choices=rewards, value=rewards[0][1] if rewards else None))

    start_btn.click(on_start, [ctx.visitor, *form], [run_state, seen_state])
    stop_btn.click(on_stop, ctx.visitor, banner)
    timer.tick(lambda v, r, s: tick(ctx, v, r, s), [ctx.visitor, run_state, seen_state],
               [banner, run_state, seen_state, *view_outputs, runs_dd], show_progress="hidden")
    runs_dd.input(on_select, runs_dd, [run_state, seen_state, *view_outputs])
    refresh_btn.click(lambda r: gr.update(choices=run_choices(ppo.KIND, ctx.manager.root), value=r), run_state, runs_dd)
    reward_refresh.click(lambda r: gr.update(choices=reward_choices(ctx), value=r), reward_dd, reward_dd)
    if ctx.demo is not None:  # a reload reattaches to the running (or last) PPO job
        ctx.demo.load(on_load, ctx.visitor, [run_state, seen_state, banner, *view_outputs, runs_dd, reward_dd])
