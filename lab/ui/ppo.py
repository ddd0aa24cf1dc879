"""The PPO tab: fine-tune the policy against a reward-model run, watch reward, KL and losses live, read the rollouts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gradio as gr

from lab import ppo
from lab.runs import ACTIVE, Run
from lab.config import fields_by_name
from lab.ui.common import JobTab, UIContext, esc, field_input, form_labels, plain_names, run_choices, start_job
from lab.ui.plots_common import length_warning
from lab.ui.plots_ppo import NOTES, all_figures, length_points, length_reward_figure

MAIN_FIELDS = ("advantage", "samples_per_prompt", "steps", "learning_rate", "batch_size", "mini_batch_size",
               "ppo_epochs", "init_kl_coef", "target", "output_min_length", "output_max_length")
ROLLOUTS_SHOWN = 16
TEXT_CHARS = 400
N_FIGURES = 8
VIEW = ("results", "rollouts", *(f"plot-{i}" for i in range(N_FIGURES)), "length_plot", "length_note")
REWARD_DONE = ("done", "stopped")  # reward runs with a saved model
KL_FULL = 1.0  # nats: a token whose |KL| is this or more gets the deepest shade
ESTIMATORS = {
    "gae": "GAE (a value head predicts the reward)",
    "rloo": "RLOO (k={k} answers per prompt, each against the others' mean: no value head)",
    "grpo": "GRPO (k={k} answers per prompt, each against its group's mean and spread: no value head)",
}
PPO_FIELDS = fields_by_name(ppo.PPOConfig)
FORM = ("reward_run", "prompts", "policy", *PPO_FIELDS)  # the form's inputs, passed to `start` by name
ADVANCED = tuple(name for name in PPO_FIELDS if name not in MAIN_FIELDS)  # folded away under Advanced settings

# ---------------------------------------------------------------- reading a run (pure: run folder in, text/figures out)


def _cut(text: str) -> str:
    text = str(text).strip()
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"


def _shade(kl: float) -> str:
    """The background of one token: orange where the policy made it likelier than the reference, blue where less."""
    alpha = min(abs(kl) / KL_FULL, 1.0) * 0.75
    colour = "245,133,24" if kl >= 0 else "76,120,168"
    return f"background:rgba({colour},{alpha:.2f})"


def shaded_response(sample: dict[str, Any]) -> str:
    """The response with each token's per-token KL as its shade; plain escaped text when the run logged no tokens."""
    tokens, kls = sample.get("tokens"), sample.get("token_kl")
    if not isinstance(tokens, list) or not isinstance(kls, list) or len(tokens) != len(kls) or not tokens:
        return esc(_cut(sample.get("response", "")))
    spans = []
    for token, kl in zip(tokens, kls):
        value = float(kl) if isinstance(kl, (int, float)) else 0.0
        spans.append(f"<span class='tok' style='{_shade(value)}' title='KL {value:+.3f}'>{esc(token)}</span>")
    return "".join(spans)


KL_SUM_NOTE = (
    "The KL column is log p(policy) − log p(reference) summed over the answer's tokens. One answer's sum can be "
    "negative (it used tokens the policy now finds less likely than the original model did); only the batch mean, in "
    "the KL plot, must stay at or above 0."
)
KL_LEGEND = (
    "Shading: each token's KL. <span class='tok' style='background:rgba(245,133,24,0.6)'>orange</span> = the policy "
    "now picks this token more readily than the original model did, "
    "<span class='tok' style='background:rgba(76,120,168,0.6)'>blue</span> = less readily; the deeper, the further it "
    "moved (hover a token for its value). "
)


def rollouts_html(samples: list[dict[str, Any]], k: int = ROLLOUTS_SHOWN) -> str:
    """The latest k rollouts (newest step first), every text and token escaped."""
    if not samples:
        return ""
    latest = samples[-k:][::-1]
    shaded = any(isinstance(s.get("tokens"), list) for s in latest)
    rows = "".join(
        f"<tr><td>{esc(s.get('step', ''))}</td><td>{esc(_cut(s.get('prompt', '')))}</td>"
        f"<td class='answer'>{shaded_response(s)}</td>"
        f"<td><b>{float(s.get('reward', 0)):+.3f}</b></td><td>{esc(s.get('length', '—'))}</td>"
        f"<td>{float(s.get('kl', 0)):+.3f}</td></tr>"
        for s in latest
    )
    legend = f"<div class='kl-legend'>{KL_LEGEND if shaded else ''}{KL_SUM_NOTE}</div>"
    return (
        f"<h4>Latest rollouts ({len(latest)})</h4>{legend}<table class='ppo-rollouts'><thead><tr><th>Step</th>"
        f"<th>Prompt</th><th>Response</th><th>Reward</th><th>Tokens</th><th>KL</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def _mean_of(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    return sum(values) / len(values) if values else None


def estimator_text(config: dict[str, Any]) -> str:
    name = str(config.get("advantage") or "gae").lower()
    return ESTIMATORS.get(name, name).format(k=config.get("samples_per_prompt", "?"))


def reward_model_name(path: Any) -> str:
    """The reward model as the visitor knows it: its run id, never the server's folder."""
    text = str(path or "?")
    parts = Path(text).parts
    return parts[-2] if len(parts) >= 2 and parts[-1] == "model" else Path(text).name or text


def summary_markdown(run: Run) -> str:
    status = run.status()
    state = status.get("status", "?")
    summary = status.get("summary") or {}
    config = run.config
    lines = [f"**Run** `{esc(run.id)}` — {esc(state)} · policy `{esc(config.get('policy', '?'))}` · "
             f"reward model `{esc(reward_model_name(config.get('reward_model')))}` · "
             f"estimator: {esc(estimator_text(config))}"]
    rows = run.metrics()
    if state in ACTIVE:
        step = rows[-1]["step"] if rows else 0
        lines.append(f"Training… step {step} of {config.get('steps', '?')}. The plots update every few seconds.")
    if isinstance(summary.get("reward_last"), (int, float)):
        first = _mean_of(rows[: ppo.WINDOW], "tokens/response_len_mean")
        last = _mean_of(rows[-ppo.WINDOW:], "tokens/response_len_mean")
        lengths = f", answers of {first:.0f} → {last:.0f} tokens on average" if first and last else ""
        lines.append(
            f"### Reward {summary['reward_first']:+.3f} → {summary['reward_last']:+.3f}\n"
            f"(mean of the first / last {ppo.WINDOW} steps{lengths}) · KL {summary['kl_last']:.3f} · "
            f"{summary['steps']} steps · {summary['seconds_per_step']:.1f} s per step\n\n"
            "<small>Reward numbers are comparable only between answers of similar length: this reward model scores "
            "length as well as content. The Compare tab's answers may be longer than these rollouts, so its "
            "rewards sit on another scale; compare base and RLHF there, on the same prompts and lengths.</small>"
        )
    if status.get("error"):
        lines.append(f"**Error:** {esc(status['error'])}")
    return "\n\n".join(lines)


def view(run: Run | None) -> dict[str, Any]:
    """Summary markdown, rollouts HTML, the figures, length figure and length warning of one run, by name."""
    if run is None:
        return dict(zip(VIEW, ("No PPO run yet: pick a reward model and start one.", "", *all_figures([], None),
                               length_reward_figure([]), "")))
    config = run.config
    target = config.get("target") if config.get("adap_kl_ctrl", True) else None
    samples = run.samples()
    warning = length_warning(length_points(samples), "the policy")
    return dict(zip(VIEW, (summary_markdown(run), rollouts_html(samples),
                           *all_figures(run.metrics(), target, str(config.get("advantage") or "gae").lower()),
                           length_reward_figure(samples),
                           f"<div class='warn-length'>{esc(warning)}</div>" if warning else "")))


# ---------------------------------------------------------------- handlers (plain functions, tested directly)


def reward_choices(ctx: UIContext) -> list[tuple[str, str]]:
    return run_choices("reward", ctx.manager.root, status=REWARD_DONE)


def build_config(ctx: UIContext, values: dict[str, Any]) -> dict[str, Any]:
    """The job config from the form's values by name (reward_run, prompts, policy and the PPOConfig fields):
    `ppo.prepare`; a refusal names each setting as the form shows it."""
    if not values.get("reward_run"):
        raise ValueError("pick a reward-model run first (train one on the Reward model tab)")
    form = {"reward_model": values["reward_run"], **{k: v for k, v in values.items() if k != "reward_run"}}
    try:
        return ppo.prepare(ctx.preset, form, ctx.allowed_dirs or None, ctx.manager.root)
    except ValueError as e:  # name the settings as the form shows them
        raise ValueError(plain_names(str(e), form_labels(PPO_FIELDS, list(PPO_FIELDS), ADVANCED,
                                                         "under Advanced settings"))) from None


def start(ctx: UIContext, visitor: str | None, values: dict[str, Any]) -> str:
    """Start a PPO job owned by this visitor; returns the new run's id."""
    return start_job(ctx, visitor, ppo.KIND, ppo.train_ppo, build_config(ctx, values))


def job_tab(ctx: UIContext) -> JobTab:
    """The tab's share of the job-tab skeleton: what it draws; its tick follows a PPO run someone starts."""
    return JobTab(ctx, ppo.KIND, view, VIEW, follow=True)


def newest_reward(ctx: UIContext) -> dict:
    """The reward-run dropdown on a page load: the finished runs, the newest chosen."""
    rewards = reward_choices(ctx)
    return gr.update(choices=rewards, value=rewards[0][1] if rewards else None)


# ---------------------------------------------------------------- the tab


def build_ppo_tab(ctx: UIContext) -> None:
    jt = job_tab(ctx)
    with jt.columns(_form, "Start PPO"):
        jt.add("results", gr.Markdown(elem_id="ppo-results"))
        for row in range(N_FIGURES // 2):
            with gr.Row():
                for i in range(2 * row, 2 * row + 2):
                    with gr.Column(min_width=300):
                        jt.add(f"plot-{i}", gr.Plot(elem_id=f"ppo-plot-{i}", show_label=False))
                        gr.Markdown(NOTES[i], elem_classes="explain")
        jt.add("length_plot", gr.Plot(elem_id="ppo-length-reward", show_label=False))
        jt.add("length_note", gr.HTML(elem_id="ppo-length-warning"))
        gr.Markdown("Each point is one answer of the latest steps: its length against its reward. If the points "
                    "climb to the right, the reward model is paying for length, and PPO will learn to write more "
                    "rather than better.", elem_classes="explain")
    jt.add("rollouts", gr.HTML(elem_id="ppo-rollouts"))
    jt.runs_row("PPO runs (pick one to reopen it)")
    jt.wire(start, FORM)
    jt.on(jt.components["reward_refresh"].click,
          lambda r: {"reward_run": gr.update(choices=reward_choices(ctx), value=r)}, ["reward_run"], ["reward_run"],
          api_visibility="private")
    if ctx.demo is not None:  # a reload lists the reward runs trained since, the newest chosen
        jt.on(ctx.demo.load, lambda: {"reward_run": newest_reward(ctx)}, [], ["reward_run"],
              api_visibility="private", show_progress="hidden")


def _form(jt: JobTab) -> None:
    """The reward run, prompts, policy and every PPOConfig field (the main ones first, the rest folded away)."""
    ctx, defaults, limits = jt.ctx, ppo.config_from(jt.ctx.preset), jt.ctx.preset.limits
    notes = {"steps": f"at most {limits.max_steps}", "batch_size": f"at most {limits.max_batch_size}"}
    ids = {"advantage": "ppo-advantage"}

    def add(name: str) -> None:
        jt.add(name, field_input(PPO_FIELDS[name], getattr(defaults, name), notes.get(name, ""),
                                 **({"elem_id": ids[name]} if name in ids else {})))

    jt.add("reward_run", gr.Dropdown(reward_choices(ctx), label="Reward model (a finished reward run)",
                                     elem_id="ppo-reward-run"))
    jt.add("reward_refresh", gr.Button("↻ Refresh reward runs", size="sm"))
    jt.add("prompts", gr.Textbox(ctx.preset.ppo_prompts, label="Prompts",
                                 info="'bundled', a .jsonl/.csv/.parquet file, or a hub id with a prompt column"))
    for name in PPO_FIELDS:  # in the config's order
        if name in MAIN_FIELDS:
            add(name)
    with gr.Accordion("Advanced settings", open=False):
        jt.add("policy", gr.Textbox(ctx.preset.policy, label="policy", info="the model to fine-tune (LoRA adapters)"))
        for name in ADVANCED:
            add(name)
