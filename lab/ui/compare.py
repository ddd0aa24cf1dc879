"""The Compare tab: the same prompts through two models (base vs a PPO run, or run vs run), side by side."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from lab import compare, policies
from lab.config import field_type, fields_by_name
from lab.generate import GenerateConfig
from lab.runs import ACTIVE, HOST, Run, default_choice, duration, list_runs
from lab.ui.common import JobTab, UIContext, esc, field_input, find_run, form_labels, require_numbers, start_job
from lab.ui.compare_cards import ALL, SHOW, SORTS, cards_html
from lab.ui.compare_summary import BUNDLED, HELD_OUT, summary_markdown, untrained_warnings
from lab.ui.plots_compare import distribution_figure, paired_figure

ROWS_LOG = "samples.jsonl"  # a comparison's rows land here as batches finish: the timer watches it
TYPED = "Type your own (one per line)"
VIEW = ("summary", "plot", "cards", "download", "paired")  # the components a run's view draws
COMPARE_FIELDS = fields_by_name(compare.CompareConfig, GenerateConfig)
BEST_OF_CHOICE = 4  # "base best-of-4": 0.64 nats from the base, about where the default PPO run ends


def models_note(ctx: UIContext, model_a: str | None, model_b: str | None) -> str:
    """The form's warning when a chosen side is a PPO run that never finished a step."""
    warnings = untrained_warnings(ctx.manager.root, {"model_a": model_a, "model_b": model_b})
    return "".join(f"<div class='warn-length'>{esc(w)}</div>" for w in warnings)


def reopened_models(ctx: UIContext, run_id: str | None) -> dict[str, Any]:
    """A comparison picked from the list: the model boxes show its two models, so the form never names other models
    than the cards below it (a student's walk reopened one and read it as the form's pair). A run folder under the
    runs root shows as its id, as the list offers it; anything else as stored."""
    run = find_run(ctx, run_id)
    if run is None:
        return {}
    root = Path(ctx.manager.root).resolve()
    out = {}
    for key in ("model_a", "model_b"):
        value = str(run.config.get(key) or "")
        folder, mark, step = value.partition(policies.STEP_MARK)
        path = Path(folder)
        if path.is_absolute() and path.parent.resolve() == root:  # the folder itself may be a link
            value = path.name + mark + step
        if value:
            out[key] = value
    return {**out, "models_note": models_note(ctx, out.get("model_a"), out.get("model_b"))}


def export_path(run: Run) -> str | None:
    """A copy of the run's results.csv in the temp folder, which gradio may serve for download."""
    src = run.path / compare.RESULTS_FILE
    if not src.exists():
        return None
    dest = Path(tempfile.gettempdir()) / "rlhf-lab-exports" / f"{run.id}.csv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest)


def view(run: Run | None, sort: str, query: str, show: str = ALL) -> dict[str, Any]:
    """Summary markdown, distribution figure, cards HTML, CSV for download and paired figure of one run, by name."""
    if run is None:
        return dict(zip(VIEW, ("No comparison yet: choose two models and press Run.", distribution_figure([]), "",
                               None, paired_figure([]))))
    rows = compare.load_results(run)
    labels = (rows[0]["model_a"], rows[0]["model_b"]) if rows else ("A", "B")
    csv_path = export_path(run) if run.status().get("status") not in ACTIVE else None
    return dict(zip(VIEW, (summary_markdown(run, rows), distribution_figure(rows, *labels),
                           cards_html(rows, sort, query, show), csv_path, paired_figure(rows))))


# ---------------------------------------------------------------- handlers (plain functions, tested directly)


def model_choices(ctx: UIContext) -> list[tuple[str, str]]:
    """'base', the base's best of 4 answers by the reward model (what PPO approximates at its best, no training), and
    the finished PPO runs that saved adapters, newest first, each followed by the steps whose adapters it kept at its
    evaluations ("ppo-3 @ step 32")."""
    out = [("base (no PPO)", policies.BASE)]
    runs = policies.ppo_runs(ctx.manager.root)
    if runs:  # it needs a run on the other side: that run's policy, and the reward model it trained against
        out.append(("base, best of 4 by the reward model (no PPO)", policies.best_of_label(BEST_OF_CHOICE)))
    for run in runs:
        out.append((run.label(), run.id))
        out += [(f"{run.id} @ step {step}", f"{run.id}{policies.STEP_MARK}{step}")
                for step in policies.kept_steps(run.path)]
    return out


def default_b(ctx: UIContext, choices: list[tuple[str, str]], current: str | None = None) -> str | None:
    """Model B: the current choice while it is still offered (base only if nothing else is), else the newest PPO run
    that ran to its end (a stopped one is listed, labelled, never picked), else the current one or None."""
    ids = [value for _, value in choices]
    if current and current in ids and current != policies.BASE:
        return current
    picked = default_choice(choices, policies.ppo_runs(ctx.manager.root))
    return picked or (current if current in ids else None)


PROMPT_LABELS = {HELD_OUT: "held-out prompts (PPO never trained on them)",
                 BUNDLED: "bundled prompts (the ones PPO trains on)"}


def prompt_choices(ctx: UIContext) -> list[tuple[str, str]]:
    """(label, source) pairs: the preset's source first, then the bundled prompts and typing your own."""
    sources = list(dict.fromkeys([ctx.preset.compare_prompts, BUNDLED, TYPED]))
    return [(PROMPT_LABELS.get(src, src), src) for src in sources]


def build_config(ctx: UIContext, values: dict[str, Any]) -> dict[str, Any]:
    """The job config from the form's values by name (FORM): `compare.prepare`; bad input raises ValueError."""
    numbers = {k: v for k, v in values.items() if k in COMPARE_FIELDS and field_type(COMPARE_FIELDS[k]) in (int, float)}
    require_numbers(numbers, form_labels(COMPARE_FIELDS, list(COMPARE_FIELDS)))
    typed = values.get("prompt_mode") == TYPED
    custom = [line.strip() for line in (values.get("typed") or "").splitlines() if line.strip()] if typed else []
    if typed and not custom:
        raise ValueError("type at least one prompt, one per line")
    form = {k: v for k, v in values.items() if k not in ("prompt_mode", "typed")}
    form.update({"prompts": None if typed else values.get("prompt_mode"), "custom_prompts": custom,
                 "n_prompts": len(custom) if custom else values.get("n_prompts")})
    return compare.prepare(ctx.preset, form, ctx.allowed_dirs or None, ctx.manager.root)


def cost_text(ctx: UIContext, n_prompts: Any, max_new_tokens: Any, answers_per_prompt: Any = 1) -> str:
    """What a comparison will cost before it starts: answer pairs (prompts × answers per prompt) × the seconds per
    pair of the newest comparison that ran to its end on this machine (loading and scoring included), scaled by
    answer length; or no measurement yet."""
    measured = next((r for r in list_runs(kind=compare.KIND, root=ctx.manager.root, status=("done",))
                     if r.config.get("host") == HOST and r.summary().get("seconds") and r.summary().get("n")), None)
    if measured is None:
        return "<small>Cost: no measurement yet on this machine (no comparison has finished here).</small>"
    summary, gen = measured.summary(), measured.config.get("generate") or {}
    try:
        n, tokens, k = int(float(n_prompts)), float(max_new_tokens), int(float(answers_per_prompt or 1))
    except (TypeError, ValueError):
        return "<small>Cost: set the number of prompts to see it.</small>"
    pairs = int(summary.get("answers") or summary["n"])
    per_pair = float(summary["seconds"]) / pairs
    scale = tokens / float(gen.get("max_new_tokens") or tokens)
    scaled = "" if abs(scale - 1) < 0.05 else f", scaled ×{scale:.2f} for answers of up to {tokens:.0f} tokens (rough)"
    what = f"{n} prompts" + (f" × {k} answers" if k > 1 else "")
    measured_what = f"{summary['n']} prompts" + (f" × {pairs // int(summary['n'])} answers" if pairs > summary["n"]
                                                 else "")
    return (f"<small>Cost: about **{duration(n * k * per_pair * scale)}** of this machine's only job slot "
            f"({what} × {per_pair * scale:.1f} s). Measured on this machine by `{esc(measured.id)}`: "
            f"{measured_what} in {summary['seconds']} s, loading included{scaled}.</small>")


def start(ctx: UIContext, visitor: str | None, values: dict[str, Any]) -> str:
    """Start a compare job owned by this visitor; returns the new run's id."""
    return start_job(ctx, visitor, compare.KIND, compare.run_compare, build_config(ctx, values))


def job_tab(ctx: UIContext) -> JobTab:
    """The tab's share of the job-tab skeleton: what it draws (sorted and filtered), redrawn as rows arrive."""
    return JobTab(ctx, compare.KIND, view, VIEW, view_inputs=("sort", "query", "show"), log=ROWS_LOG)


def follow_ppo(ctx: UIContext, seen_ppo: str | None) -> dict[str, Any]:
    """Timer: when a PPO job of this process has just finished, offer it, and make it Model B if it ran to its end
    (once per run)."""
    job = ctx.manager.job
    if job is None or job.kind != policies.PPO_KIND or job.active or job.id == seen_ppo:
        return {}
    new = model_choices(ctx)
    if job.id not in [value for _, value in new]:  # failed, or saved no adapters: nothing to offer
        return {"ppo_seen": job.id}
    if job.status != "done":  # stopped or failed with adapters: listed (labelled), never picked for the visitor
        return {"ppo_seen": job.id, "model_a": gr.update(choices=new), "model_b": gr.update(choices=new)}
    return {"ppo_seen": job.id, "model_a": gr.update(choices=new), "model_b": gr.update(choices=new, value=job.id)}


def refresh_models(ctx: UIContext, a: str | None, b: str | None) -> dict[str, Any]:
    """Both model lists refreshed; Model B the newest finished PPO run unless the visitor chose one."""
    new = model_choices(ctx)
    return {"model_a": gr.update(choices=new, value=a), "model_b": gr.update(choices=new, value=default_b(ctx, new, b))}


def filtered_cards(ctx: UIContext, run_id: str | None, sort: str, query: str, show: str = ALL) -> dict[str, Any]:
    run = find_run(ctx, run_id)
    return {"cards": cards_html(compare.load_results(run), sort, query, show) if run else ""}


def to_vote(ctx: UIContext, run_id: str | None) -> dict[str, Any]:
    """This comparison's answer pairs into a feedback set for a blind vote; the Feedback tab opens on it."""
    run = find_run(ctx, run_id)
    if run is None:
        raise ValueError("run a comparison first: its answers become the pairs to vote on")
    if run.status().get("status") in ACTIVE:
        raise ValueError("the comparison is still running: vote when it has finished")
    name, added = compare.to_feedback(run, ctx.manager.root)
    return {"vote_set": name, "vote_note": f"Feedback set **{esc(name)}**: {added} new pairs, sides shuffled. "
                                           "Vote in the Feedback tab (it opens on this set)."}


# ---------------------------------------------------------------- the tab


def build_compare_tab(ctx: UIContext) -> None:
    jt = job_tab(ctx)
    with jt.columns(_form, "Run comparison", "compare-run"):
        jt.add("summary", gr.Markdown(elem_id="compare-summary"))
        jt.add("plot", gr.Plot(show_label=False, elem_id="compare-plot"))
        gr.Markdown("How the answers' scores spread, A in blue and B in orange: toxicity on the left (mind the "
                    "scorer's limits above), reward on the right. What RLHF aims for: B's reward to the right of "
                    "A's, its toxicity to the left.", elem_classes="explain")
        jt.add("paired", gr.Plot(show_label=False, elem_id="compare-paired"))
        gr.Markdown("Each bar is one prompt: B's reward minus A's on the same prompt. Bars above the line are "
                    "prompts where B scored higher; if they are as many and as tall as those below, the models "
                    "are about even.", elem_classes="explain")
        with gr.Row():
            jt.runs_dropdown("Comparisons (reopen one)", scale=3)
            jt.add("download", gr.DownloadButton("Export CSV", value=None, scale=1, elem_id="compare-export"))
    with gr.Row():
        jt.add("vote", gr.Button("Vote blind on these answers (Feedback tab)", size="sm", elem_id="compare-vote",
                                 scale=1))
        jt.add("vote_note", gr.Markdown(elem_id="compare-vote-note"))
    with gr.Row():
        jt.add("sort", gr.Dropdown(list(SORTS), value="Prompt order", label="Sort", scale=1))
        jt.add("show", gr.Dropdown(list(SHOW), value=ALL, label="Show", scale=1, elem_id="compare-show"))
        jt.add("query", gr.Textbox(label="Filter (text in the prompt or answers)", scale=2))
    jt.add("cards", gr.HTML(elem_id="compare-cards"))
    jt.add("ppo_seen", gr.State(None))  # the finished PPO job last offered as Model B
    models = ["model_a", "model_b"]
    jt.wire(start, FORM, also=(lambda seen: follow_ppo(ctx, seen), ["ppo_seen"], ["ppo_seen", *models]))
    for event in (jt.components["sort"].change, jt.components["query"].submit, jt.components["show"].change):
        jt.on(event, lambda r, o, q, w: filtered_cards(ctx, r, o, q, w), ["run", "sort", "query", "show"], ["cards"])
    if ctx.vote_set is not None:  # the Feedback tab follows it; the click then opens that tab
        jt.add("vote_set", ctx.vote_set)
        jt.components["vote"].click(lambda r: _vote_or_error(jt, ctx, r), [jt.components["run"]],
                                    [jt.components["vote_set"], jt.components["vote_note"]], api_name="compare_vote"
                                    ).success(None, js=OPEN_FEEDBACK)
    jt.components["prompt_mode"].change(lambda m: gr.update(visible=m == TYPED), jt.components["prompt_mode"],
                                        jt.components["typed"])
    jt.on(jt.components["runs"].input, lambda r: reopened_models(ctx, r), ["runs"], [*models, "models_note"],
          show_progress="hidden")
    jt.on(jt.components["refresh_models"].click, lambda a, b: refresh_models(ctx, a, b), models, models,
          show_progress="hidden")
    for name in models:  # say at once when a side never trained (a PPO run stopped at step 0)
        jt.on(jt.components[name].change, lambda a, b: {"models_note": models_note(ctx, a, b)}, models,
              ["models_note"], api_visibility="private", show_progress="hidden")
    cost = ["n_prompts", "max_new_tokens", "answers_per_prompt"]
    for name in cost:
        jt.on(jt.components[name].change, lambda n, t, k: {"cost": cost_text(ctx, n, t, k)}, cost, ["cost"],
              api_visibility="private", show_progress="hidden")
    if ctx.demo is not None:  # fresh model lists; a PPO run finished before this page opened is not news
        jt.on(ctx.demo.load, lambda a, b, n, t, k: {**refresh_models(ctx, a, b), "ppo_seen": _last_job_id(ctx),
                                                    "cost": cost_text(ctx, n, t, k)},
              [*models, *cost], [*models, "ppo_seen", "cost"], show_progress="hidden")


OPEN_FEEDBACK = "() => { const b = document.querySelector('#tab-feedback-button') || " \
                "[...document.querySelectorAll('button[role=tab]')].find(x => x.textContent.trim() === 'Feedback'); " \
                "if (b) b.click(); }"


def _vote_or_error(jt: JobTab, ctx: UIContext, run_id: str | None) -> dict[Any, Any]:
    """to_vote by component; a ValueError is shown as an error, so the Feedback tab does not open."""
    try:
        return {jt.components[k]: v for k, v in to_vote(ctx, run_id).items()}
    except ValueError as e:
        raise gr.Error(str(e)) from None


def _last_job_id(ctx: UIContext) -> str | None:
    job = ctx.manager.job
    return job.id if job is not None else None


FORM = ("model_a", "model_b", "prompt_mode", "typed", "n_prompts", "max_new_tokens", "temperature", "top_k", "top_p",
        "repetition_penalty", "seed", "toxicity", "answers_per_prompt")  # the form's inputs, passed to `start` by name


def _form(jt: JobTab) -> None:
    """Models A and B, the prompts, the toxicity scorer and the sampling settings, added to `jt` by name."""
    ctx, defaults, limits = jt.ctx, compare.config_from(jt.ctx.preset), jt.ctx.preset.limits
    gen = GenerateConfig.from_dict(defaults.generate)

    def field(name: str, value: Any, note: str = "", **kwargs: Any) -> Any:
        return jt.add(name, field_input(COMPARE_FIELDS[name], value, note, **kwargs))

    choices = model_choices(ctx)
    # typed values pass (the help offers "a PPO run (folder or id)") and are checked at Run, refused by name: a
    # dropdown without custom values put its old value back on blur, so a typed id ran as "base" unsaid (stop 43)
    field("model_a", policies.BASE, choices=choices, elem_id="compare-model-a", allow_custom_value=True)
    field("model_b", default_b(ctx, choices), "the newest finished PPO run unless you pick", choices=choices,
          elem_id="compare-model-b", allow_custom_value=True)
    jt.add("refresh_models", gr.Button("Refresh PPO runs", size="sm"))
    jt.add("models_note", gr.HTML(elem_id="compare-models-note"))
    jt.add("prompt_mode", field_input(COMPARE_FIELDS["prompts"], ctx.preset.compare_prompts,
                                      choices=prompt_choices(ctx)))
    jt.add("typed", field_input(COMPARE_FIELDS["custom_prompts"], "", lines=4, visible=False, elem_id="compare-typed"))
    field("n_prompts", defaults.n_prompts, maximum=limits.max_prompts)
    field("answers_per_prompt", defaults.answers_per_prompt, "more answers, narrower intervals; the cards show each")
    jt.add("cost", gr.Markdown(cost_text(ctx, defaults.n_prompts, gen.max_new_tokens, defaults.answers_per_prompt),
                               elem_id="compare-cost"))
    field("toxicity", ctx.preset.toxicity)
    with gr.Accordion("Sampling (the same for both models)", open=False):
        field("max_new_tokens", gen.max_new_tokens, maximum=limits.max_new_tokens)
        for name in ("temperature", "top_k", "top_p", "repetition_penalty", "seed"):
            field(name, getattr(gen, name))
