"""The PPO tab: fine-tune the policy against a reward-model run, watch reward, KL and losses live, read the rollouts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import gradio as gr

from lab import evaluate, ppo, ppo_metrics
from lab.reward_model import refusal_warning, reward_backbone
from lab.config import field_type, fields_by_name
from lab.runs import (ACTIVE, Run, default_choice, duration, list_runs, measured_pace, open_run,
                      reward_model_name, seconds_outside_steps)
from lab.ui.common import (JobTab, UIContext, esc, field_input, find_run, form_labels, plain_names, require_numbers,
                           start_job)
from lab.ui.plots_eval import EVAL_NOTES, rates_figure, scores_figure
from lab.ui.plots_common import length_warning
from lab.ui.plots_ppo import NOTES, all_figures, length_points, length_reward_figure

MAIN_FIELDS = ("advantage", "samples_per_prompt", "steps", "learning_rate", "batch_size", "mini_batch_size",
               "ppo_epochs", "init_kl_coef", "kl_cap", "target", "output_min_length", "output_max_length")
ROLLOUTS_SHOWN = 16
TEXT_CHARS = 400
N_FIGURES = 8
EVAL_VIEW = ("eval_scores", "eval_rates", "eval_note", "timeline")
VIEW = ("results", "rollouts", *(f"plot-{i}" for i in range(N_FIGURES)), "length_plot", "length_note", *EVAL_VIEW)
REWARD_DONE = ("done", "stopped")  # reward runs with a saved model
KL_FULL = 1.0  # nats: a token whose |KL| is this or more gets the deepest shade
ESTIMATORS = {
    "gae": "GAE (a value head predicts the reward)",
    "rloo": "RLOO (k={k} answers per prompt, each against the others' mean: no value head)",
    "grpo": "GRPO (k={k} answers per prompt, each against its group's mean and spread: no value head)",
}
PPO_FIELDS = fields_by_name(ppo.PPOConfig)
EVAL_FIELDS = fields_by_name(evaluate.EvalConfig)  # folded away under "Evaluation while training"
FORM = ("reward_run", "prompts", "policy", *PPO_FIELDS, *EVAL_FIELDS)  # the form's inputs, passed to `start` by name
ADVANCED = tuple(name for name in PPO_FIELDS if name not in MAIN_FIELDS)  # folded away under Advanced settings
EVAL_TITLE = "Evaluation while training"
COST_INPUTS = ("steps", "batch_size", "output_max_length", "reward_run")  # what the cost line reads from the form

# ---------------------------------------------------------------- reading a run (pure: run folder in, text/figures out)


def _cut(text: str) -> str:
    text = str(text).strip()
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"


def _shade(kl: float) -> str:
    """The background of one token: orange where the policy made it likelier than the reference, blue where less."""
    alpha = min(abs(kl) / KL_FULL, 1.0) * 0.75
    colour = "245,133,24" if kl >= 0 else "76,120,168"
    return f"background:rgba({colour},{alpha:.2f})"


def _spans(sample: dict[str, Any]) -> list[tuple[str, list[float]]] | None:
    """(text, per-token KLs) for each decoded span of the response; None when the run logged no usable tokens, or
    only single tokens that cut characters in half (older runs decoded each token alone: "������" for an emoji)."""
    tokens, kls = sample.get("tokens"), sample.get("token_kl")
    if not isinstance(tokens, list) or not isinstance(kls, list) or not tokens:
        return None
    sizes = sample.get("span_len")
    if not isinstance(sizes, list):  # an older run: one token per entry
        if any("\ufffd" in str(t) for t in tokens):
            return None
        sizes = [1] * len(tokens)
    if len(sizes) != len(tokens) or sum(sizes) != len(kls):
        return None
    values = [float(v) if isinstance(v, (int, float)) else 0.0 for v in kls]
    out, start = [], 0
    for text, size in zip(tokens, sizes):
        out.append((str(text), values[start:start + size]))
        start += size
    return out


def shaded_response(sample: dict[str, Any]) -> str:
    """The response with each span's per-token KL as its shade (a character made of several tokens, an emoji, is
    one span: the mean KL of its tokens shades it, the largest is in its title); plain escaped text when the run
    logged no usable tokens."""
    spans = _spans(sample)
    if spans is None:
        return esc(_cut(sample.get("response", "")))
    out = []
    for text, values in spans:
        mean = sum(values) / len(values) if values else 0.0
        title = f"KL {mean:+.3f}" if len(values) <= 1 else (
            f"{len(values)} tokens: mean KL {mean:+.3f}, largest {max(values, key=abs):+.3f}")
        out.append(f"<span class='tok' style='{_shade(mean)}' title='{title}'>{esc(text)}</span>")
    return "".join(out)


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


def score_terms(config: dict[str, Any], summary: dict[str, Any] | None = None) -> str:
    """' · score: reward model + 10 × relevance': what PPO maximised besides the reward model, so two runs that differ
    only there read apart (stop 43's walk could not tell a relevance-10 run from the default's). `summary`: the
    finished run's, for how many requests relevance was left out on."""
    terms = []
    for key, name in (("reward_model_coef", "reward model"), ("relevance_coef", "relevance"),
                      ("plausibility_coef", "plausibility")):
        value = config.get(key, 1.0 if key == "reward_model_coef" else 0.0)
        if isinstance(value, (int, float)) and value:
            echo = " (restated requests discounted)" if key == "relevance_coef" and config.get(
                "relevance_echo_discount") else ""
            if key == "relevance_coef" and config.get("relevance_on_harmful") is False:
                echo += left_out_text((summary or {}).get("relevance_left_out"))
            terms.append(name if key == "reward_model_coef" and value == 1 else f"{value:g} × {name}{echo}")
    text = f" · score: {' + '.join(terms)}" if terms and terms != ["reward model"] else ""
    penalty = config.get("degenerate_penalty")
    if isinstance(penalty, (int, float)) and penalty > 0:
        text = (text or " · score: reward model") + f" − {penalty:g} for a degenerate answer"
    imitation = config.get("imitation_coef")
    if isinstance(imitation, (int, float)) and imitation > 0:  # not a score: a loss on the reward run's chosen answers
        text += f" · imitating the chosen answers ({imitation:g} × their nll)"
    return text


def kl_words(steps: list[dict[str, Any]], kl_last: Any) -> str:
    """' · KL 2.31 nats (mean of the last 5 steps, the figure Compare shows; last step 4.27)': the same window as
    Compare's KL (lab.compare.run_kl), so the two tabs agree on one run (a student's walk read the last step here and
    the last-5 mean there as two different KLs)."""
    kls = [r["objective/kl"] for r in steps if isinstance(r.get("objective/kl"), (int, float))]
    if not kls:
        return f" · KL {kl_last:.3f}" if isinstance(kl_last, (int, float)) else ""
    window = min(ppo_metrics.KL_WINDOW, len(kls))
    if window == 1:
        return f" · KL {kls[-1]:.3f} nats"
    return (f" · KL {statistics.fmean(kls[-window:]):.3f} nats (mean of the last {window} steps, the figure Compare "
            f"shows; last step {kls[-1]:.3f})")


def left_out_text(left_out: Any) -> str:
    """' (not on harmful requests: 52 of 148)'; with none labelled harmful it says the setting changed nothing."""
    if not (isinstance(left_out, list) and len(left_out) == 2):
        return " (not on harmful requests)"
    harmful, total = left_out
    if not harmful:
        return " (not on harmful requests: none of the prompts is labelled harmful, so every answer had it)"
    return f" (not on harmful requests: {harmful} of {total} prompts)"


def summary_markdown(run: Run) -> str:
    status = run.status()
    state = status.get("status", "?")
    summary = status.get("summary") or {}
    config = run.config
    lines = [f"**Run** `{esc(run.id)}` — {esc(state)} · policy `{esc(config.get('policy', '?'))}` · "
             f"reward model `{esc(reward_model_name(config.get('reward_model')))}` · "
             f"estimator: {esc(estimator_text(config))}" + score_terms(config, summary)]
    rows = run.metrics()
    if state in ACTIVE:
        step = rows[-1]["step"] if rows else 0
        lines.append(f"Training… step {step} of {config.get('steps', '?')}. The plots update every few seconds.")
    steps = [r for r in rows if isinstance(r.get("env/reward_mean"), (int, float))]
    if summary and steps and state not in ACTIVE and not isinstance(summary.get("window"), int):
        ends = ("window", "reward_first", "reward_last", "reward_rise_se")  # an older run's: windows that overlapped
        summary = {**ppo_metrics.summarize(steps), **{k: v for k, v in summary.items() if k not in ends}}
    if summary and state not in ACTIVE and len(steps) < 2:
        lines.append(f"### {len(steps)} step{'' if len(steps) == 1 else 's'}: too few to say whether the reward rose")
    elif isinstance(summary.get("reward_last"), (int, float)):
        window = summary.get("window") or ppo_metrics.summary_window(len(steps))
        first = _mean_of(steps[:window], "tokens/response_len_mean")
        last = _mean_of(steps[-window:], "tokens/response_len_mean")
        lengths = f", answers of {first:.0f} → {last:.0f} tokens on average" if first and last else ""
        n = len(steps)
        ends = f"step 1 → step {n}" if window == 1 else f"mean of steps 1–{window} → steps {n - window + 1}–{n}"
        short = (f"; a short run: each end is {window} step{'' if window == 1 else 's'}, so this is noisy"
                 if window < ppo_metrics.WINDOW else "")
        seconds = summary.get("seconds_per_step")
        pace = f" · {seconds:.1f} s per step" if isinstance(seconds, (int, float)) else ""
        kl = kl_words(steps, summary.get("kl_last"))
        rise, se = summary["reward_last"] - summary["reward_first"], summary.get("reward_rise_se")
        noise = ""
        if isinstance(se, (int, float)) and se > 0:  # each step's prompts are new: the ends carry sampling noise
            where = "beyond" if abs(rise) > 2 * se else "within"
            noise = (f" · a change of {rise:+.2f} against ±{2 * se:.2f} of noise: {where} its noise (the evaluation "
                     f"on fixed prompts below is the steadier measure)")
        lines.append(
            f"### Rollout reward {summary['reward_first']:+.3f} → {summary['reward_last']:+.3f}\n"
            f"({ends}{lengths}{short}){kl} · {summary.get('steps', n)} steps{pace}{noise}\n\n"
            "<small>Reward numbers are comparable only between answers of similar length: this reward model scores "
            "length as well as content. The Compare tab's answers may be longer than these rollouts, so its "
            "rewards sit on another scale; compare base and RLHF there, on the same prompts and lengths.</small>"
        )
    cap_note = ppo_metrics.kl_cap_note(steps, float(config.get("kl_cap") or 0.0))
    if cap_note:
        lines.append(esc(cap_note))
    if status.get("error"):
        lines.append(f"**Error:** {esc(status['error'])}")
    return "\n\n".join(lines)


def timeline_html(rows: list[dict[str, Any]], pinned: int = 3) -> str:
    """The pinned prompts, each with its answer at every evaluation (step, answer, proxy, judge, flags), escaped."""
    lines = evaluate.timeline(rows, pinned)
    if not lines:
        return ""
    blocks = []
    for line in lines:
        cells = "".join(
            f"<tr><td>{esc(a['step'])}</td><td class='answer'>{esc(_cut(a.get('answer') or '')) or '<i>(empty)</i>'}"
            f"</td><td>{_score(a.get('reward'))}</td><td>{_score(a.get('judge'))}</td>"
            f"<td>{'refusal ' if a.get('refusal') else ''}{'degenerate' if a.get('degenerate') else ''}</td></tr>"
            for a in line["answers"])
        blocks.append(f"<div class='ppo-timeline-prompt'><b>{esc(_cut(line['prompt']))}</b><table class='ppo-rollouts'>"
                      f"<thead><tr><th>Step</th><th>Answer</th><th>Proxy</th><th>Judge</th><th>Flags</th></tr></thead>"
                      f"<tbody>{cells}</tbody></table></div>")
    prompts = rows[0].get("prompts")  # rows from before stop 47 have one answer a prompt and no count
    k = int(rows[0].get("n") or 0) // int(prompts) if prompts else 1
    which = f" Shown: the first of each prompt's {k} answers." if k > 1 else ""
    return ("<h4>Timeline: the same prompts at each evaluation</h4><div class='kl-legend'>Each answer is sampled with "
            f"the same seed, so a change is the model's, not chance's.{which}</div>" + "".join(blocks))


def _score(value: Any) -> str:
    return f"{value:+.3f}" if isinstance(value, (int, float)) else "—"


def _rate(row: dict[str, Any], key: str) -> str:
    """One evaluation's rate of `key` (refusal, degenerate), with the count: "8% (1 of 12)"."""
    rate, n = row.get(f"eval/{key}"), int(row.get("n") or 0)
    return f"{rate:.0%} ({round(rate * n)} of {n})" if isinstance(rate, (int, float)) and n else "—"


def eval_note(rows: list[dict[str, Any]], config: dict[str, Any]) -> str:
    """What the evaluations say, in words: the proxy's and the judge's change against their noise, the rates."""
    if not rows:
        every = (config.get("evaluate") or {}).get("eval_every")
        return (f"No evaluation yet: this run evaluates every {every} steps." if every else
                "This run made no evaluations on fixed prompts (evaluation was off or it predates them).")
    parts = [evaluate.trend_sentence(rows, "reward"), evaluate.trend_sentence(rows, "judge")]
    first, last = rows[0], rows[-1]
    rates = [f"{name} {first.get(f'eval/{key}') or 0:.0%} → {last.get(f'eval/{key}') or 0:.0%}"
             for key, name in (("refusal", "refusals"), ("degenerate", "degenerate answers"))]
    n = int(last.get("n") or 0)
    # measured: refusals went 2 -> 7 of Compare's 48 answers while 8 evaluation answers showed 0% -> 0% (README, hh
    # alone); a rate moved by one or two answers out of a few dozen is within sampling noise
    few = (f" ({n} answers each: a change of one or two answers may be noise; Compare's larger sample sees more)"
           if 0 < n < 40 else "")
    parts.append(f"From step {first['step']} to step {last['step']}: " + ", ".join(rates) + few + ".")
    by_kind = [f"{kind} {_rate(k[0], 'refusal')} → {_rate(k[-1], 'refusal')}"
               for kind, k in ((kind, evaluate.only_kind(rows, kind)) for kind in evaluate.kinds_of(rows))]
    if by_kind:
        parts.append("Refusals by kind of request: " + ", ".join(by_kind) + ".")
    warnings = evaluate.rate_warnings(rows)
    if warnings:
        parts.append(f"⚠ Watch: {' and '.join(warnings)}: read the answers (timeline, Compare).")
    if len(rows) == 1:
        parts.append("One evaluation so far: the curve needs a second to say whether anything moved.")
    return " ".join(p for p in parts if p)


def eval_view(run: Run | None, overlay: list[str] | None = None, root: Path | None = None) -> dict[str, Any]:
    """The evaluation curves of a run, with the runs in `overlay` drawn beside it, its note and its timeline."""
    series = [(run.id, evaluate.load_evals(run.path))] if run is not None else []
    overlaid = [found for other in overlay or [] if (found := find_run_at(other, root)) is not None
                and (run is None or found.id != run.id)]
    series += [(found.id, evaluate.load_evals(found.path)) for found in overlaid]
    rows = series[0][1] if run is not None else []
    pinned = int((run.config.get("evaluate") or {}).get("eval_pinned", 3)) if run is not None else 3
    note = eval_note(rows, run.config) if run is not None else ""
    if run is not None:
        note = " ".join(p for p in (note, scales_warning(run, overlaid)) if p)
    return {"eval_scores": scores_figure(series), "eval_rates": rates_figure(series), "eval_note": note,
            "timeline": timeline_html(rows, pinned)}


def scales_warning(run: Run, others: list[Run]) -> str:
    """Overlaid runs scored by other reward models: their proxy and judge curves are on other scales (a student read
    ppo-16 as better from step 0 on, where only its reward model differed: stop 43's walk)."""
    def scored_by(r: Run) -> str:
        try:
            return reward_model_name(r.config.get("reward_model"))
        except (json.JSONDecodeError, OSError):
            return "?"

    mine = scored_by(run)
    apart = [(other.id, rm) for other in others if (rm := scored_by(other)) != mine]
    if not apart:
        return ""
    names = ", ".join(f"{esc(o)} against {esc(rm)}" for o, rm in apart)
    return (f"⚠ Different reward models: this run trained against {esc(mine)}, {names}. Each run's proxy and judge "
            "are its own reward run's, so those curves are on different scales (even at step 0, the same base "
            "model): compare their refusal and degeneration rates here, or the runs' answers in Compare.")


def find_run_at(run_id: str, root: Path | None) -> Run | None:
    try:
        return open_run(run_id, root)
    except ValueError:
        return None


def view(run: Run | None, overlay: list[str] | None = None, root: Path | None = None) -> dict[str, Any]:
    """Summary markdown, rollouts HTML, the figures, length figure and length warning of one run, and its
    evaluation curves (with the `overlay` runs) and timeline, by name."""
    if run is None:
        return dict(zip(VIEW, ("No PPO run yet: pick a reward model and start one.", "", *all_figures([], None),
                               length_reward_figure([]), "", *eval_view(None, overlay, root).values())))
    config = run.config
    target = config.get("target") if config.get("adap_kl_ctrl", True) else None
    samples = run.samples()
    warning = length_warning(length_points(samples), "the policy")
    return dict(zip(VIEW, (summary_markdown(run), rollouts_html(samples),
                           *all_figures(run.metrics(), target, str(config.get("advantage") or "gae").lower(),
                                       float(config.get("kl_cap") or 0.0)),
                           length_reward_figure(samples),
                           f"<div class='warn-length'>{esc(warning)}</div>" if warning else "",
                           *eval_view(run, overlay, root).values())))


# ---------------------------------------------------------------- handlers (plain functions, tested directly)


def reward_choices(ctx: UIContext) -> list[tuple[str, str]]:
    return [(reward_label(r), r.id) for r in list_runs(kind="reward", root=ctx.manager.root, status=REWARD_DONE)]


def build_config(ctx: UIContext, values: dict[str, Any]) -> dict[str, Any]:
    """The job config from the form's values by name (reward_run, prompts, policy and the PPOConfig fields):
    `ppo.prepare`; a refusal names each setting as the form shows it."""
    if not values.get("reward_run"):
        raise ValueError("pick a reward-model run first (train one on the Reward model tab)")
    form = {"reward_model": values["reward_run"], **{k: v for k, v in values.items() if k != "reward_run"}}
    fields = {**PPO_FIELDS, **EVAL_FIELDS}
    labels = {**form_labels(PPO_FIELDS, list(PPO_FIELDS), ADVANCED, "under Advanced settings"),
              **form_labels(EVAL_FIELDS, list(EVAL_FIELDS), list(EVAL_FIELDS), f"under {EVAL_TITLE}")}
    require_numbers({k: v for k, v in values.items() if k in fields and field_type(fields[k]) in (int, float)}, labels)
    try:
        return ppo.prepare(ctx.preset, form, ctx.allowed_dirs or None, ctx.manager.root)
    except ValueError as e:  # name the settings as the form shows them
        raise ValueError(plain_names(str(e), labels)) from None


def cost_text(ctx: UIContext, steps: Any, batch_size: Any, max_length: Any, reward_run: Any = None) -> str:
    """What a run will cost before it starts: steps × the seconds per step measured on this machine (by the newest
    PPO run here, one against a reward model on the chosen one's backbone where there is one: every rollout is
    scored, and a PPO step against a 135M reward model took 7.4 s against 5.9 s with the 22M one), scaled by
    rollouts × answer length when those differ; says so when nothing was measured yet."""
    root = ctx.manager.root
    backbone = reward_backbone(reward_run, root)
    pace = measured_pace(ppo.KIND, root, where=lambda cfg: reward_backbone(cfg.get("reward_model"), root) == backbone
                         ) if backbone else None
    other = None  # the backbone behind a pace measured against a reward model on another one
    if pace is None:
        pace = measured_pace(ppo.KIND, root)
        if pace is not None and backbone:
            other = reward_backbone(pace["config"].get("reward_model"), root) or "an unknown backbone"
    if pace is None:
        return ("<small>Cost: no measurement yet on this machine (no PPO run has finished a step here). Start with "
                "a few steps to measure it.</small>")
    cfg = pace["config"]
    try:
        steps, batch, length = int(float(steps)), float(batch_size), float(max_length)
    except (TypeError, ValueError):
        return "<small>Cost: type the training steps, rollouts per step and longest answer to see it.</small>"
    measured = float(cfg.get("batch_size") or batch) * float(cfg.get("output_max_length") or length)
    scale = batch * length / measured if measured > 0 else 1.0
    per_step = pace["seconds_per_step"] * scale
    scaled = "" if abs(scale - 1) < 0.05 else (f", scaled ×{scale:.2f} for {batch:.0f} rollouts of up to {length:.0f} "
                                               "tokens (a rough guess)")
    if other:  # the reward model scores every rollout: its size is part of the step
        scaled += (f"; its reward model was on `{esc(other)}`, yours is on `{esc(backbone)}`: every rollout is "
                   "scored, so a step's time grows with the reward model's size")
    overhead = seconds_outside_steps(pace, pace["summary"].get("steps"))  # loading, the last save
    extra = (f" + {overhead:.0f} s loading the models and saving, as run `{esc(pace['run'])}` spent them"
             if overhead >= 1 else ", plus loading the models")
    return (f"<small>Cost: about **{duration(steps * per_step + overhead)}** of this machine's only job slot "
            f"({steps} steps × {per_step:.1f} s per step{extra}). Measured on this machine by run "
            f"`{esc(pace['run'])}`: {pace['seconds_per_step']:.1f} s per step with {cfg.get('batch_size', '?')} "
            f"rollouts of up to {cfg.get('output_max_length', '?')} tokens{scaled}.</small>")


def own_requests_view(ctx: UIContext, reward_run: Any, prompts: Any) -> tuple[str, bool]:
    """The note under Prompts when the chosen reward run learned from pair sets of the user's own whose requests the
    prompts leave out (`ppo.own_requests`), and whether to show the button that adds them; ('', False) otherwise."""
    missing, suggestion = ppo.own_requests(str(reward_run or ""), str(prompts or ""), ctx.manager.root,
                                           ctx.allowed_dirs or None)
    if not suggestion:
        named = ppo.own_parts_named(str(reward_run or ""), str(prompts or ""), ctx.manager.root)
        if not named:
            return "", False
        names = ", ".join(f"`{esc(Path(part).name or part)}`" for part in named)
        return (f"<small>**Note:** these prompts hold the requests of this reward model's own pairs ({names}) "
                f"beside the preset's, the default where a reward model learned from pairs of your own. "
                f"{esc(ppo.OWN_REQUESTS_READ)}. Type `{esc(ctx.preset.ppo_prompts)}` to leave them out.</small>"), False
    names = ", ".join(f"`{esc(Path(part).name or part)}`" for part in missing)
    return (f"<small>⚑ This reward model learned from pairs in {names}, whose requests these prompts leave out: PPO "
            f"never meets the kind of request those pairs judge. The button adds them: `{esc(suggestion)}`. "
            f"{esc(ppo.own_requests_label_note(suggestion))} {esc(ppo.OWN_REQUESTS_READ)}.</small>"), True


def reward_picked(ctx: UIContext, reward_run: Any, prompts: Any, auto: Any) -> dict[str, Any]:
    """A reward run picked: Prompts left as filled in (the preset's, or what the last pick filled in) take this run's
    default (`ppo.default_prompts`: on the cpu preset the reward model's own requests joined); typed ones stay."""
    fresh = ppo.default_prompts(ctx.preset, str(reward_run or ""), ctx.manager.root, ctx.allowed_dirs or None)
    current = str(prompts or "").strip()
    if current in (ctx.preset.ppo_prompts, str(auto or "").strip()):
        current = fresh
    note, visible = own_requests_view(ctx, reward_run, current)
    return {"prompts": current, "prompts_auto": fresh, "prompts_note": note, "prompts_add": gr.update(visible=visible)}


def _own_view(ctx: UIContext, reward_run: Any, prompts: Any) -> tuple[str, Any]:
    note, visible = own_requests_view(ctx, reward_run, prompts)
    return note, gr.update(visible=visible)


def start(ctx: UIContext, visitor: str | None, values: dict[str, Any]) -> str:
    """Start a PPO job owned by this visitor; returns the new run's id. A reward model that rewards refusing is
    allowed (a lesson in itself) but said so first."""
    config = build_config(ctx, values)
    warning = refusal_warning(config["reward_model"])
    if warning:
        gr.Warning("Started, but " + warning, duration=None)
    return start_job(ctx, visitor, ppo.KIND, ppo.train_ppo, config)


def reward_label(run: Run) -> str:
    """A reward run's dropdown label, with a mark when it rewards refusing ordinary requests."""
    return run.label() + (" · ⚠ rewards refusing" if refusal_warning(run.path) else "")


def job_tab(ctx: UIContext) -> JobTab:
    """The tab's share of the job-tab skeleton: what it draws (the evaluation curves with the overlaid runs, and the
    cost line, measured afresh when a run ends); its tick follows a PPO run someone starts."""

    def draw(run: Run | None, *inputs: Any) -> dict[str, Any]:
        cost_inputs, overlay = inputs[: len(COST_INPUTS)], inputs[len(COST_INPUTS):]
        return {**view(run, overlay[0] if overlay else None, ctx.manager.root),
                **({"cost": cost_text(ctx, *cost_inputs)} if cost_inputs else {})}

    return JobTab(ctx, ppo.KIND, draw, (*VIEW, "cost"), view_inputs=(*COST_INPUTS, "overlay"), follow=True)


def overlay_choices(ctx: UIContext) -> list[tuple[str, str]]:
    """PPO runs that made evaluations, newest first: the ones worth overlaying."""
    return [(r.label(), r.id) for r in list_runs(kind=ppo.KIND, root=ctx.manager.root)
            if (r.path / evaluate.EVALS_FILE).exists()]


def default_reward(ctx: UIContext, choices: list[tuple[str, str]], current: str | None = None) -> str | None:
    """The reward run picked for the visitor: the current one while listed, else the newest that ran to its end
    (a stopped run is listed, labelled, but never picked)."""
    return default_choice(choices, list_runs(kind="reward", root=ctx.manager.root), current)


def newest_reward(ctx: UIContext) -> dict:
    """The reward-run dropdown on a page load: the reward runs with a model, the newest finished one chosen."""
    rewards = reward_choices(ctx)
    return gr.update(choices=rewards, value=default_reward(ctx, rewards))


# ---------------------------------------------------------------- the tab


def _refreshed_rewards(ctx: UIContext, current: str | None) -> dict:
    rewards = reward_choices(ctx)
    return gr.update(choices=rewards, value=default_reward(ctx, rewards, current))


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
    # the id on a Column inside the Group: Gradio 6 renders a Group's elem_id on two nested elements
    with gr.Group(), gr.Column(elem_id="ppo-eval"):
        gr.Markdown("### Evaluation on fixed held-out prompts")
        jt.add("eval_note", gr.Markdown(elem_id="ppo-eval-note"))
        with gr.Row():
            with gr.Column(min_width=300):
                jt.add("eval_scores", gr.Plot(elem_id="ppo-eval-scores", show_label=False))
                gr.Markdown(EVAL_NOTES["scores"], elem_classes="explain")
            with gr.Column(min_width=300):
                jt.add("eval_rates", gr.Plot(elem_id="ppo-eval-rates", show_label=False))
                gr.Markdown(EVAL_NOTES["rates"], elem_classes="explain")
        jt.add("overlay", gr.Dropdown(overlay_choices(ctx), value=[], multiselect=True, elem_id="ppo-overlay",
                                      label="Overlay other runs' evaluation curves (e.g. a β = 0 run against the "
                                            "default: proxy up, judge and fluency down is over-optimisation)"))
        jt.add("timeline", gr.HTML(elem_id="ppo-timeline"))
    jt.add("rollouts", gr.HTML(elem_id="ppo-rollouts"))
    jt.runs_row("PPO runs (pick one to reopen it)")
    jt.wire(start, FORM)
    jt.on(jt.components["overlay"].change, lambda r, o: eval_view(find_run(ctx, r), o, ctx.manager.root),
          ["run", "overlay"], list(EVAL_VIEW), api_visibility="private", show_progress="hidden")
    jt.on(jt.components["overlay"].focus, lambda o: {"overlay": gr.update(choices=overlay_choices(ctx), value=o)},
          ["overlay"], ["overlay"], api_visibility="private", show_progress="hidden")
    jt.on(jt.components["reward_refresh"].click,
          lambda r: {"reward_run": _refreshed_rewards(ctx, r)}, ["reward_run"], ["reward_run"],
          api_visibility="private")
    jt.on(jt.components["reward_run"].change, lambda r, p, a: reward_picked(ctx, r, p, a),
          ["reward_run", "prompts", "prompts_auto"], ["prompts", "prompts_auto", "prompts_note", "prompts_add"],
          api_visibility="private", show_progress="hidden")
    jt.on(jt.components["prompts"].change, lambda r, p: dict(zip(("prompts_note", "prompts_add"), _own_view(ctx, r, p))),
          ["reward_run", "prompts"], ["prompts_note", "prompts_add"], api_visibility="private",
          show_progress="hidden")
    jt.on(jt.components["prompts_add"].click,
          lambda r, p: {"prompts": ppo.own_requests(r or "", p or "", ctx.manager.root, ctx.allowed_dirs or None)[1]
                        or p},
          ["reward_run", "prompts"], ["prompts"], api_visibility="private")
    cost = list(COST_INPUTS)
    for name in cost:
        jt.on(jt.components[name].change, lambda *v: {"cost": cost_text(ctx, *v)}, cost, ["cost"],
              api_visibility="private", show_progress="hidden")
    if ctx.demo is not None:  # a reload lists the reward runs trained since, the newest finished one chosen
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

    rewards = reward_choices(ctx)
    chosen = default_reward(ctx, rewards)
    jt.add("reward_run", gr.Dropdown(rewards, value=chosen,
                                     label="Reward model (a reward run with a saved model; a stopped one says so)",
                                     elem_id="ppo-reward-run"))
    jt.add("reward_refresh", gr.Button("↻ Refresh reward runs", size="sm"))
    auto = ppo.default_prompts(ctx.preset, chosen or "", ctx.manager.root, ctx.allowed_dirs or None)
    jt.add("prompts_auto", gr.State(auto))  # the prompts last filled in for a reward run, replaced on the next pick
    jt.add("prompts", gr.Textbox(auto, label="Prompts",
                                 info="'bundled', a .jsonl/.csv/.parquet file, or a hub id with a prompt column; join "
                                      "them with '+' (bundled+pairs.jsonl: the demo prompts and a pair set's own "
                                      "requests)"))
    note, add_visible = own_requests_view(ctx, chosen, auto)
    jt.add("prompts_note", gr.Markdown(note, elem_id="ppo-prompts-note"))
    jt.add("prompts_add", gr.Button("+ Add their requests to the prompts", size="sm", visible=add_visible,
                                    elem_id="ppo-prompts-add"))
    for name in PPO_FIELDS:  # in the config's order
        if name in MAIN_FIELDS:
            add(name)
    jt.add("cost", gr.Markdown(cost_text(ctx, defaults.steps, defaults.batch_size, defaults.output_max_length),
                               elem_id="ppo-cost"))
    with gr.Accordion("Advanced settings", open=False):
        jt.add("policy", gr.Textbox(ctx.preset.policy, label="policy", info="the model to fine-tune (LoRA adapters)"))
        for name in ADVANCED:
            add(name)
    evals = evaluate.config_from(ctx.preset)
    with gr.Accordion(EVAL_TITLE, open=False, elem_id="ppo-eval-settings"):
        gr.Markdown("<small>Fixed held-out prompts answered with a fixed seed at step 0 and every N steps: the curves "
                    "and the timeline below. Each evaluation costs about as much as a step or two; fewer prompts "
                    "are cheaper and noisier.</small>")
        for name in EVAL_FIELDS:
            jt.add(name, field_input(EVAL_FIELDS[name], getattr(evals, name),
                                     f"at most {limits.max_prompts}" if name == "eval_n_prompts" else ""))
