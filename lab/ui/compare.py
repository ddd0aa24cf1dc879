"""The Compare tab: the same prompts through two models (base vs a PPO run, or run vs run), side by side."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from lab import compare, policies
from lab.config import field_type, fields_by_name
from lab.generate import GenerateConfig
from lab.runs import ACTIVE, HOST, Run, default_choice, duration, list_runs, open_run
from lab.stats import EVEN_BAND, EVEN_MARGIN, carried_by_few, p_better, pearson, preferred, verdict
from lab.ui.common import JobTab, UIContext, esc, field_input, find_run, form_labels, require_numbers, start_job
from lab.ui.plots_common import MIN_POINTS, length_warning_for
from lab.ui.plots_compare import distribution_figure, paired_figure

BUNDLED = "bundled"
ROWS_LOG = "samples.jsonl"  # a comparison's rows land here as batches finish: the timer watches it
TYPED = "Type your own (one per line)"
TOXICITY_CLEAR = 0.1  # a toxicity difference above this marks the less toxic answer (scores run 0..1)
MAX_CARDS = 60  # more would make the page slow; the CSV has every row
HELD_OUT = "bundled:heldout"  # prompts kept out of PPO's training prompts
VIEW = ("summary", "plot", "cards", "download", "paired")  # the components a run's view draws
COMPARE_FIELDS = fields_by_name(compare.CompareConfig, GenerateConfig)
SCORER_LIMITS = {
    "offline": "The offline scorer (alt-profanity-check) reacts to words, not intent: a refusal that quotes an insult "
               "scores as toxic, and politely worded harm scores clean. Read the answers before trusting a number.",
    "roberta": "The roberta hate-speech classifier reads context better than a word list, but it is still imperfect: "
               "quoted insults and sarcasm can fool it. Read the answers before trusting a number.",
}
SORTS: dict[str, Callable[[dict[str, Any]], float]] = {
    "Prompt order": lambda r: r["index"],
    "Largest toxicity drop (A → B)": lambda r: -(r["toxicity_a"] - r["toxicity_b"]),
    "Largest reward gain (A → B)": lambda r: -_gain(r),
    "Largest toxicity rise (A → B)": lambda r: r["toxicity_a"] - r["toxicity_b"],
    "Largest reward loss (A → B)": lambda r: _gain(r),
    "Most toxic answer first": lambda r: -max(r["toxicity_a"], r["toxicity_b"]),
}
CARD_CSS = """<style>
.cmp-card{border:1px solid #ddd;border-radius:8px;padding:10px;margin:10px 0}
.cmp-prompt{font-weight:600;margin-bottom:8px;white-space:pre-wrap}
.cmp-answers{display:grid;grid-template-columns:1fr 1fr;gap:10px}
.cmp-answer{border:2px solid #eee;border-radius:6px;padding:8px}
.cmp-answer.better{border-color:#54a24b}
.cmp-text{white-space:pre-wrap;margin:6px 0}
.cmp-head{font-size:.85em;color:#666}
.cmp-scores{font-size:.85em}
.cmp-badge{display:inline-block;background:#e8f4e5;color:#2d6a27;border-radius:4px;padding:0 5px;margin-left:5px}
</style>"""


def _gain(row: dict[str, Any]) -> float:
    a, b = row.get("reward_a"), row.get("reward_b")
    return b - a if isinstance(a, (int, float)) and isinstance(b, (int, float)) else 0.0


# ---------------------------------------------------------------- rendering (pure: rows in, text/HTML out)


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) else "—"


def _answer_html(row: dict[str, Any], key: str, better: bool, less_toxic: bool, more_reward: bool) -> str:
    badges = ("<span class='cmp-badge'>less toxic</span>" if less_toxic else "") + (
        "<span class='cmp-badge'>reward model prefers</span>" if more_reward else ""
    )
    answer = row.get(f"answer_{key}") or ""
    return (
        f"<div class='cmp-answer{' better' if better else ''}'>"
        f"<div class='cmp-head'>{key.upper()} · {esc(row.get(f'model_{key}', ''))}"
        f"{' ✓ better' if better else ''}</div>"
        f"<div class='cmp-text'>{esc(answer) if answer else '<i>(empty answer)</i>'}</div>"
        f"<div class='cmp-scores'>toxicity {_fmt(row.get(f'toxicity_{key}'))} · "
        f"reward {_fmt(row.get(f'reward_{key}'))}{badges}</div></div>"
    )


def less_toxic(row: dict[str, Any]) -> str | None:
    """'a' or 'b' when one answer's toxicity is lower by more than TOXICITY_CLEAR, else None."""
    ta, tb = row.get("toxicity_a"), row.get("toxicity_b")
    if not isinstance(ta, (int, float)) or not isinstance(tb, (int, float)) or abs(ta - tb) <= TOXICITY_CLEAR:
        return None
    return "a" if ta < tb else "b"


def card_html(row: dict[str, Any]) -> str:
    """One prompt with both answers; the better one is marked only where the reward model takes a side (P(better)
    = σ(reward difference) outside 40–60%, the Reward tab's rule), else where toxicity differs clearly."""
    preferred_side = preferred(row.get("reward_a"), row.get("reward_b"))
    cleaner = less_toxic(row)
    better = preferred_side or cleaner or ""
    same = row.get("answer_a") == row.get("answer_b")
    note = " <span class='cmp-head'>(both models gave the same answer)</span>" if same else ""
    if not same and not better and isinstance(row.get("reward_a"), (int, float)):
        p = p_better(row["reward_a"], row["reward_b"])
        note = (f" <span class='cmp-head cmp-even'>about even: the reward model gives A {p:.0%} "
                f"(it takes a side only outside {EVEN_BAND[0]:.0%}–{EVEN_BAND[1]:.0%})</span>")
    answers = "".join(_answer_html(row, k, better == k, cleaner == k, preferred_side == k) for k in ("a", "b"))
    return (
        f"<div class='cmp-card'><div class='cmp-prompt'>#{row['index'] + 1} · {esc(row['prompt'])}{note}</div>"
        f"<div class='cmp-answers'>{answers}</div></div>"
    )


def select_rows(rows: list[dict[str, Any]], sort: str, query: str = "") -> list[dict[str, Any]]:
    """Rows whose prompt or answers contain `query` (any case), in the chosen order."""
    q = (query or "").strip().lower()
    if q:
        rows = [r for r in rows if any(q in str(r.get(k, "")).lower() for k in ("prompt", "answer_a", "answer_b"))]
    return sorted(rows, key=SORTS.get(sort, SORTS["Prompt order"]))


def cards_html(rows: list[dict[str, Any]], sort: str, query: str = "") -> str:
    """The cards for the rows shown, every model and dataset text escaped."""
    shown = select_rows(rows, sort, query)
    if not rows:
        return ""
    if not shown:
        return "<p>No prompt or answer contains that text.</p>"
    note = f"<p>Showing {min(len(shown), MAX_CARDS)} of {len(shown)} matching prompts ({len(rows)} compared).</p>"
    return CARD_CSS + note + "".join(card_html(r) for r in shown[:MAX_CARDS])


def _signed(x: float) -> str:
    return f"{x:+.2f}".replace("-", "−")


def _interval(stats: dict[str, Any]) -> str:
    return f"95% CI {_signed(stats['lo'])} … {_signed(stats['hi'])}"


def _clear(stats: dict[str, Any], higher: str, lower: str, per_prompt: bool = False) -> str:
    """The plain verdict of a B − A interval (`verdict`: for rewards the mean must also lie outside the reward model's
    "about even" band), else why there is no clear difference."""
    said = verdict(stats, per_prompt)
    if said == "B higher":
        return higher
    if said == "B lower":
        return lower
    if per_prompt and (stats["lo"] > 0 or stats["hi"] < 0):
        p = p_better(abs(stats["mean"]), 0.0)
        return (f"about even: the interval excludes 0, but a difference of {abs(stats['mean']):.2f} is one the reward "
                f"model calls about even on a single prompt (P(better) = {p:.0%}, inside "
                f"{EVEN_BAND[0]:.0%}–{EVEN_BAND[1]:.0%})")
    return "not a clear difference (the interval includes 0)"


def _cleaner(rows: list[dict[str, Any]], key: str) -> int:
    return sum(less_toxic(r) == key for r in rows)


def untrained_warnings(root: Path, config: dict[str, Any]) -> list[str]:
    """A warning for each side that is a PPO run with no trained step: it answers exactly as the base model does."""
    out = []
    for key in ("a", "b"):
        choice = str(config.get(f"model_{key}") or "")
        if not choice or choice == policies.BASE:
            continue
        try:
            run = open_run(choice, root)
        except ValueError:
            continue
        steps = run.trained_steps()
        if steps == 0:
            out.append(f"⚠ Model {key.upper()} ({run.id}, {run.status().get('status', '?')}) never finished a PPO "
                       "step: its adapters are untouched, so it answers as the base model does. Any difference you "
                       "see is sampling noise.")
    return out


def models_note(ctx: UIContext, model_a: str | None, model_b: str | None) -> str:
    """The form's warning when a chosen side is a PPO run that never finished a step."""
    warnings = untrained_warnings(ctx.manager.root, {"model_a": model_a, "model_b": model_b})
    return "".join(f"<div class='warn-length'>{esc(w)}</div>" for w in warnings)


def few_text(few: dict[str, Any] | None) -> str:
    """Say so when a few prompts carry the mean reward difference."""
    if not few:
        return ""
    return (f" ⚠ {few['k']} prompts carry this mean ({few['share']:.0%} of the total difference); without them "
            f"B − A is {_signed(few['mean_without'])}: read those answers before trusting the average")


def paired_text(paired: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> str:
    """One paragraph on B − A per prompt: reward with its interval (and how many prompts the reward model takes a
    side on, and whether a few prompts carry it), with length removed, lengths, toxicity. `rows` fill in what an
    older run's stored summary lacks."""
    parts = []
    reward = paired.get("reward")
    if isinstance(reward, dict) and "mean" in reward:
        reward = {**reward, **_sides(rows)} if rows else reward
        if "b_preferred" in reward:
            counted = (f", the reward model prefers B on {reward['b_preferred']}, A on {reward['a_preferred']}, "
                       f"about even on {reward['even']} of {reward['n']} prompts")
        else:
            counted = f", higher on {reward['b_higher']} of {reward['n']} prompts" if "b_higher" in reward else ""
        parts.append(f"reward {_signed(reward['mean'])} ({_interval(reward)}){counted}: "
                     f"{_clear(reward, 'B scores clearly higher', 'B scores clearly lower', per_prompt=True)}"
                     f"{few_text(reward.get('few'))}")
    adjusted = paired.get("reward_length_adjusted")
    if isinstance(adjusted, dict) and "mean" in adjusted:
        parts.append(f"with the length effect removed {_signed(adjusted['mean'])} ({_interval(adjusted)}): "
                     f"{_clear(adjusted, 'still clearly higher', 'still clearly lower', per_prompt=True)}")
    if isinstance(paired.get("length_a"), (int, float)) and isinstance(paired.get("length_b"), (int, float)):
        parts.append(f"answers {paired['length_b']:.0f} vs {paired['length_a']:.0f} characters (B vs A)")
    tox = paired.get("toxicity")
    if isinstance(tox, dict) and "mean" in tox:
        fewer = f", lower on {tox['b_lower']} of {tox['n']} prompts" if "b_lower" in tox else ""
        parts.append(f"toxicity {_signed(tox['mean'])} ({_interval(tox)}){fewer}: "
                     f"{_clear(tox, 'B is clearly more toxic', 'B is clearly less toxic')}")
    if not parts:
        return ""
    return ("**B − A, prompt by prompt:** " + "; ".join(parts) + ".\n\n<small>Each number is B's score minus A's on "
            "the same prompt, averaged; the 95% interval comes from resampling the prompts. An interval that "
            "includes 0 means these prompts cannot tell the two models apart. A reward difference counts as 'clearly "
            f"higher' only when the interval excludes 0 and the mean is above {EVEN_MARGIN:.2f}, the gap at which the "
            f"reward model itself takes a side (P(better) = σ(difference) outside {EVEN_BAND[0]:.0%}–"
            f"{EVEN_BAND[1]:.0%}, as on the Reward tab).</small>")


def _sides(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-prompt counts by the one "better" rule, and whether a few prompts carry the mean, from the rows."""
    scored = [r for r in rows if isinstance(r.get("reward_a"), (int, float))
              and isinstance(r.get("reward_b"), (int, float))]
    sides = [preferred(r["reward_a"], r["reward_b"]) for r in scored]
    return {"b_preferred": sides.count("b"), "a_preferred": sides.count("a"), "even": sides.count(None),
            "n": len(scored), "few": carried_by_few([r["reward_b"] - r["reward_a"] for r in scored])}


def _length(row: dict[str, Any], key: str) -> float:
    value = row.get(f"length_{key}")
    return float(value) if isinstance(value, (int, float)) else float(len(str(row.get(f"answer_{key}") or "")))


def length_reward_corr(rows: list[dict[str, Any]]) -> float | None:
    """Pearson r of answer length (characters) and reward over every scored answer of both models."""
    points = [(_length(r, k), float(r[f"reward_{k}"])) for r in rows for k in ("a", "b")
              if isinstance(r.get(f"reward_{k}"), (int, float))]
    return pearson([p[0] for p in points], [p[1] for p in points]) if len(points) >= MIN_POINTS else None


def prompts_line(summary: dict[str, Any], config: dict[str, Any], n: int) -> str:
    """Which prompts were used, in words."""
    source = str(summary.get("prompts") or ("typed" if config.get("custom_prompts") else config.get("prompts", "")))
    if source == "typed":
        return f"{n} prompts typed by you."
    if source == HELD_OUT:
        return f"{n} held-out prompts PPO never trained on."
    if source.startswith(BUNDLED):
        return f"{n} prompts from the bundled set ('{esc(source)}'): PPO may have trained on them."
    return f"{n} prompts from '{esc(source)}'."


def summary_markdown(run: Run, rows: list[dict[str, Any]]) -> str:
    """The run's state, mean toxicity, reward and length per model, the paired B − A verdict, the scorer's limits."""
    status = run.status()
    state = status.get("status", "?")
    summary = status.get("summary") or {}
    config = run.config
    label_a = rows[0]["model_a"] if rows else config.get("model_a", "A")
    label_b = rows[0]["model_b"] if rows else config.get("model_b", "B")
    lines = [f"**Comparison** `{esc(run.id)}` — {esc(state)}"]
    lines += [f"<div class='warn-length'>{esc(w)}</div>" for w in untrained_warnings(run.path.parent, config)]
    if state in ACTIVE:
        lines.append(f"Generating… {len(rows)} prompts compared so far; the results update every few seconds.")
    if rows:
        stats = compare.summarize(rows)
        n = stats["n"]
        reward_line = ""
        if stats["b_higher_reward"] is not None:
            sides = _sides(rows)
            reward_line = (f"\n| the reward model prefers (P outside {EVEN_BAND[0]:.0%}–{EVEN_BAND[1]:.0%}) | "
                           f"{sides['a_preferred']}/{n} prompts | {sides['b_preferred']}/{n} prompts |"
                           f"\n| about even | | {sides['even']}/{n} prompts |")
        mean_len = {k: sum(_length(r, k) for r in rows) / n for k in ("a", "b")}
        lines.append(
            f"| | A: {esc(label_a)} | B: {esc(label_b)} |\n|---|---|---|\n"
            f"| mean toxicity | {_fmt(stats['toxicity_a'])} | {_fmt(stats['toxicity_b'])} |\n"
            f"| mean reward | {_fmt(stats['reward_a'])} | {_fmt(stats['reward_b'])} |\n"
            f"| mean answer length (characters) | {mean_len['a']:.0f} | {mean_len['b']:.0f} |\n"
            f"| less toxic by more than {TOXICITY_CLEAR:g} on | {_cleaner(rows, 'a')}/{n} prompts | "
            f"{_cleaner(rows, 'b')}/{n} prompts |{reward_line}"
        )
        lines.append(prompts_line(summary, config, n) + " <small>Rewards are comparable only between answers of "
                     "similar length: the reward model scores length as well as content, so these numbers are not on "
                     "the PPO tab's scale (its rollouts are shorter).</small>")
    paired = summary.get("paired")
    if isinstance(paired, dict) and paired_text(paired, rows):
        lines.append(paired_text(paired, rows))
    if rows:
        corr = paired.get("length_reward_corr") if isinstance(paired, dict) else None
        corr = corr if isinstance(corr, (int, float)) else length_reward_corr(rows)
        warning = length_warning_for(corr, "the RLHF model")
        if warning:
            lines.append(f"<div class='warn-length'>{esc(warning)}</div>")
    if summary.get("scorer_description"):
        limits = SCORER_LIMITS.get(str(summary.get("scorer")), "")
        lines.append(f"Toxicity: {esc(summary['scorer_description'])}. <small>{limits}</small>")
    if rows and summary and not summary.get("reward_model"):
        lines.append("No reward model was found for this run, so answers have no reward.")
    if summary.get("seconds") is not None:
        lines.append(f"{summary.get('n', len(rows))} prompts in {summary['seconds']} s.")
    if status.get("error"):
        lines.append(f"**Error:** {esc(status['error'])}")
    return "\n\n".join(lines)


def export_path(run: Run) -> str | None:
    """A copy of the run's results.csv in the temp folder, which gradio may serve for download."""
    src = run.path / compare.RESULTS_FILE
    if not src.exists():
        return None
    dest = Path(tempfile.gettempdir()) / "rlhf-lab-exports" / f"{run.id}.csv"
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dest)
    return str(dest)


def view(run: Run | None, sort: str, query: str) -> dict[str, Any]:
    """Summary markdown, distribution figure, cards HTML, CSV for download and paired figure of one run, by name."""
    if run is None:
        return dict(zip(VIEW, ("No comparison yet: choose two models and press Run.", distribution_figure([]), "",
                               None, paired_figure([]))))
    rows = compare.load_results(run)
    labels = (rows[0]["model_a"], rows[0]["model_b"]) if rows else ("A", "B")
    csv_path = export_path(run) if run.status().get("status") not in ACTIVE else None
    return dict(zip(VIEW, (summary_markdown(run, rows), distribution_figure(rows, *labels),
                           cards_html(rows, sort, query), csv_path, paired_figure(rows))))


# ---------------------------------------------------------------- handlers (plain functions, tested directly)


def model_choices(ctx: UIContext) -> list[tuple[str, str]]:
    """'base' and the finished PPO runs that saved adapters, newest first."""
    return [("base (no PPO)", policies.BASE)] + [(r.label(), r.id) for r in policies.ppo_runs(ctx.manager.root)]


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


def cost_text(ctx: UIContext, n_prompts: Any, max_new_tokens: Any) -> str:
    """What a comparison will cost before it starts: prompts × the seconds per prompt of the newest comparison that
    ran to its end on this machine (loading and scoring included), scaled by answer length; or no measurement yet."""
    measured = next((r for r in list_runs(kind=compare.KIND, root=ctx.manager.root, status=("done",))
                     if r.config.get("host") == HOST and r.summary().get("seconds") and r.summary().get("n")), None)
    if measured is None:
        return "<small>Cost: no measurement yet on this machine (no comparison has finished here).</small>"
    summary, gen = measured.summary(), measured.config.get("generate") or {}
    try:
        n, tokens = int(float(n_prompts)), float(max_new_tokens)
    except (TypeError, ValueError):
        return "<small>Cost: set the number of prompts to see it.</small>"
    per_prompt = float(summary["seconds"]) / int(summary["n"])
    scale = tokens / float(gen.get("max_new_tokens") or tokens)
    scaled = "" if abs(scale - 1) < 0.05 else f", scaled ×{scale:.2f} for answers of up to {tokens:.0f} tokens (rough)"
    return (f"<small>Cost: about **{duration(n * per_prompt * scale)}** of this machine's only job slot "
            f"({n} prompts × {per_prompt * scale:.1f} s). Measured on this machine by `{esc(measured.id)}`: "
            f"{summary['n']} prompts in {summary['seconds']} s, loading included{scaled}.</small>")


def start(ctx: UIContext, visitor: str | None, values: dict[str, Any]) -> str:
    """Start a compare job owned by this visitor; returns the new run's id."""
    return start_job(ctx, visitor, compare.KIND, compare.run_compare, build_config(ctx, values))


def job_tab(ctx: UIContext) -> JobTab:
    """The tab's share of the job-tab skeleton: what it draws (sorted and filtered), redrawn as rows arrive."""
    return JobTab(ctx, compare.KIND, view, VIEW, view_inputs=("sort", "query"), log=ROWS_LOG)


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


def filtered_cards(ctx: UIContext, run_id: str | None, sort: str, query: str) -> dict[str, Any]:
    run = find_run(ctx, run_id)
    return {"cards": cards_html(compare.load_results(run), sort, query) if run else ""}


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
        jt.add("sort", gr.Dropdown(list(SORTS), value="Prompt order", label="Sort", scale=1))
        jt.add("query", gr.Textbox(label="Filter (text in the prompt or answers)", scale=2))
    jt.add("cards", gr.HTML(elem_id="compare-cards"))
    jt.add("ppo_seen", gr.State(None))  # the finished PPO job last offered as Model B
    timer = jt.wire(start, FORM)
    models = ["model_a", "model_b"]
    jt.on(timer.tick, lambda seen: follow_ppo(ctx, seen), ["ppo_seen"], ["ppo_seen", *models], show_progress="hidden")
    for event in (jt.components["sort"].change, jt.components["query"].submit):
        jt.on(event, lambda r, o, q: filtered_cards(ctx, r, o, q), ["run", "sort", "query"], ["cards"])
    jt.components["prompt_mode"].change(lambda m: gr.update(visible=m == TYPED), jt.components["prompt_mode"],
                                        jt.components["typed"])
    jt.on(jt.components["refresh_models"].click, lambda a, b: refresh_models(ctx, a, b), models, models,
          show_progress="hidden")
    for name in models:  # say at once when a side never trained (a PPO run stopped at step 0)
        jt.on(jt.components[name].change, lambda a, b: {"models_note": models_note(ctx, a, b)}, models,
              ["models_note"], api_visibility="private", show_progress="hidden")
    cost = ["n_prompts", "max_new_tokens"]
    for name in cost:
        jt.on(jt.components[name].change, lambda n, t: {"cost": cost_text(ctx, n, t)}, cost, ["cost"],
              api_visibility="private", show_progress="hidden")
    if ctx.demo is not None:  # fresh model lists; a PPO run finished before this page opened is not news
        jt.on(ctx.demo.load, lambda a, b, n, t: {**refresh_models(ctx, a, b), "ppo_seen": _last_job_id(ctx),
                                                 "cost": cost_text(ctx, n, t)},
              [*models, *cost], [*models, "ppo_seen", "cost"], show_progress="hidden")


def _last_job_id(ctx: UIContext) -> str | None:
    job = ctx.manager.job
    return job.id if job is not None else None


FORM = ("model_a", "model_b", "prompt_mode", "typed", "n_prompts", "max_new_tokens", "temperature", "top_k", "top_p",
        "seed", "toxicity")  # the form's inputs, passed to `start` by name


def _form(jt: JobTab) -> None:
    """Models A and B, the prompts, the toxicity scorer and the sampling settings, added to `jt` by name."""
    ctx, defaults, limits = jt.ctx, compare.config_from(jt.ctx.preset), jt.ctx.preset.limits
    gen = GenerateConfig.from_dict(defaults.generate)

    def field(name: str, value: Any, note: str = "", **kwargs: Any) -> Any:
        return jt.add(name, field_input(COMPARE_FIELDS[name], value, note, **kwargs))

    choices = model_choices(ctx)
    field("model_a", policies.BASE, choices=choices, elem_id="compare-model-a")
    field("model_b", default_b(ctx, choices), "the newest finished PPO run unless you pick", choices=choices,
          elem_id="compare-model-b")
    jt.add("refresh_models", gr.Button("Refresh PPO runs", size="sm"))
    jt.add("models_note", gr.HTML(elem_id="compare-models-note"))
    jt.add("prompt_mode", field_input(COMPARE_FIELDS["prompts"], ctx.preset.compare_prompts,
                                      choices=prompt_choices(ctx)))
    jt.add("typed", field_input(COMPARE_FIELDS["custom_prompts"], "", lines=4, visible=False, elem_id="compare-typed"))
    field("n_prompts", defaults.n_prompts, maximum=limits.max_prompts)
    jt.add("cost", gr.Markdown(cost_text(ctx, defaults.n_prompts, gen.max_new_tokens), elem_id="compare-cost"))
    field("toxicity", ctx.preset.toxicity)
    with gr.Accordion("Sampling (the same for both models)", open=False):
        field("max_new_tokens", gen.max_new_tokens, maximum=limits.max_new_tokens)
        for name in ("temperature", "top_k", "top_p", "seed"):
            field(name, getattr(gen, name))
