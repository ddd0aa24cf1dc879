"""The Feedback tab: vote blind on two answers to a prompt; the votes become preference pairs for the reward model."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr

from lab import feedback, policies, sources, votes
from lab.config import field_type, fields_by_name
from lab.generate import GenerateConfig
from lab.runs import default_choice
from lab.ui.common import JobTab, UIContext, esc, field_input, form_labels, require_numbers, start_job

DEFAULT_SET = "workshop"
FEEDBACK_FIELDS = fields_by_name(feedback.FeedbackConfig, GenerateConfig)
FORM = ("name", "model_a", "model_b", "prompts", "n_pairs", "max_new_tokens")  # passed to `start` by name
VISITORS_SHOWN = 8


# ---------------------------------------------------------------- rendering (pure: set and votes in, text/HTML out)


def pair_html(pair: dict[str, Any] | None, queued: int = 0) -> str:
    """The prompt once, then the two answers side by side with no model names: every text escaped."""
    if pair is None:
        why = "you have judged every pair in this set" if queued else "this set has no pairs yet"
        return f"<div class='pair-card'><i>No pair to judge: {why}. Generate more pairs (left).</i></div>"
    answers = "".join(
        f"<div class='answer'><div class='answer-label'>Answer {k.upper()}</div>{esc(pair[f'answer_{k}'])}</div>"
        for k in ("a", "b")
    )
    return (f"<div class='pair-card'><div class='dialogue'><div class='turn turn-human'><b>Prompt</b>"
            f"<div>{esc(pair['prompt'])}</div></div></div><div class='answers'>{answers}</div></div>")


def reveal_markdown(row: dict[str, Any]) -> str:
    """After a vote: which model wrote which answer, and what the vote said about them."""
    a, b = esc(row["model_a"]), esc(row["model_b"])
    said = {"a": f"you preferred **{a}**", "b": f"you preferred **{b}**", "tie": "you called it a tie",
            "both_bad": "you found both bad"}[row["choice"]]
    return f"Last pair: A was written by **{a}**, B by **{b}**: {said}."


def _short(visitor: str) -> str:
    """An anonymous visitor id, shortened (ids are random hex)."""
    return esc(visitor if len(visitor) <= 10 else visitor[:6] + "…")


def _n(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _pct(rate: dict[str, Any]) -> str:
    lo, hi = rate["ci95"]
    return f"{rate['wins']} of {rate['n']}: **{rate['rate']:.0%}** (95% interval {lo:.0%}–{hi:.0%})"


def tally_markdown(fs: votes.FeedbackSet, visitor: str | None) -> str:
    """The live tallies of a set: counts, per visitor, win rates with intervals, agreement."""
    t = votes.tally(fs.votes())
    per = sorted(t["per_visitor"].items(), key=lambda kv: -kv[1])
    people = " · ".join(f"{'**you**' if v == visitor else _short(v)} {n}" for v, n in per[:VISITORS_SHOWN])
    lines = [f"### {_n(t['votes'], 'vote')} from {_n(t['visitors'], 'visitor')} on {_n(len(fs.pairs()), 'pair')}",
             f"A better {t['a']} · B better {t['b']} · tie {t['tie']} · both bad {t['both_bad']}"
             + (f"  \nVotes per visitor: {people}" if per else "")]
    if t["b_over_a"]["n"]:
        lines.append(f"**B over A** {_pct(t['b_over_a'])}. Left and right are shuffled, so far from 50% means the "
                     "side sways voters.")
    for m in t["models"]:
        lines.append(f"**{esc(m['y'])}** over **{esc(m['x'])}** {_pct(m)}.")
    for m in t["per_prompt"]:  # several votes a prompt (answers drawn several times, several readers): pooled
        lines.append(f"**Per prompt** (each of {m['prompts']} prompts once, for the model that won more of its "
                     f"votes): **{esc(m['y'])}** ahead on {m['y_ahead']}, **{esc(m['x'])}** on {m['x_ahead']}, "
                     f"even on {m['even']}; **{esc(m['y'])}** {_pct(m)} of the prompts not even. One vote on one "
                     "pair carries the luck of that answer and that reader; a prompt's votes together carry less.")
    for part in t["by_kind"]:  # a model can win the ordinary requests and lose the harmful ones
        lines += [f"On **{esc(part['kind'])}** requests: **{esc(m['y'])}** over **{esc(m['x'])}** {_pct(m)}."
                  for m in part["models"]]
    if t["shared_pairs"]:
        lines.append(f"**Agreement**: on {t['shared_pairs']} pairs judged by two or more visitors, all chose the same "
                     f"on {t['agreed_pairs']} ({t['agreement']:.0%}).")
    return "\n\n".join(lines)


def howto_markdown(name: str) -> str:
    return (f"**Train a reward model on these votes**: in the *Reward model* tab use training pairs "
            f"`feedback:{esc(name)}` (or `feedback:{esc(name)}+bundled` to add the demo pairs), then PPO against it "
            "and compare. Ties and both-bad votes stay in the log but are not pairs. The run records which votes "
            "it read.")


# ---------------------------------------------------------------- handlers (plain functions, tested directly)


def find_set(ctx: UIContext, name: str | None) -> votes.FeedbackSet | None:
    """The set with this name, or None (no name, or not made yet); a bad name raises ValueError."""
    if not (name or "").strip() or votes.check_name(name) not in votes.list_sets(ctx.manager.root):
        return None
    return votes.open_set(name, ctx.manager.root)


def show(ctx: UIContext, name: str | None, visitor: str | None) -> dict[str, Any]:
    """This visitor's next pair in the set: its id, HTML, the tallies, the how-to and the set's signature, by name."""
    fs = find_set(ctx, name)
    if fs is None:
        return {"pair_id": None, "pair": pair_html(None), "tallies": f"No set '{esc(name or '')}' yet: generate pairs "
                "for it.", "howto": "", "seen": "none"}
    pair = votes.next_pair(fs, visitor)
    return {"pair_id": pair["id"] if pair else None, "pair": pair_html(pair, len(fs.pairs())),
            "tallies": tally_markdown(fs, visitor), "howto": howto_markdown(fs.name), "seen": fs.signature()}


def cast(ctx: UIContext, choice: str, name: str | None, pair_id: str | None, reason: str,
         visitor: str | None) -> dict[str, Any]:
    """Record the vote, reveal the models, empty the reason box and move on to the next pair."""
    fs = find_set(ctx, name)
    if fs is None or not pair_id:
        raise ValueError("no pair to vote on: choose a set with pairs, or generate some")
    row = votes.vote(fs, pair_id, choice, visitor, reason)
    return {"reveal": reveal_markdown(row), "reason": "", **show(ctx, name, visitor)}


def start(ctx: UIContext, visitor: str | None, values: dict[str, Any]) -> dict[str, Any]:
    """Start generating pairs into the set (made now if new) from the form's values by name (FORM); the set dropdown
    then shows it."""
    numbers = {k: v for k, v in values.items() if k in FEEDBACK_FIELDS and field_type(FEEDBACK_FIELDS[k]) in (int, float)}
    require_numbers(numbers, form_labels(FEEDBACK_FIELDS, list(FEEDBACK_FIELDS)))
    form = {k: v for k, v in values.items() if k != "max_new_tokens"}
    config = feedback.prepare(ctx.preset, {**form, "generate": {"max_new_tokens": values.get("max_new_tokens")}},
                              ctx.manager.root)
    fs = votes.create_set(config["name"], ctx.manager.root)
    start_job(ctx, visitor, feedback.KIND, feedback.generate_pairs, config)
    return {"name": gr.update(choices=votes.list_sets(ctx.manager.root), value=fs.name)}


def tick(ctx: UIContext, name: str | None, visitor: str | None, pair_id: str | None, seen: str) -> dict[str, Any]:
    """Timer: the banner always; tallies (and a first pair, if none is shown) only when the set changed."""
    banner = {"banner": job_tab(ctx).banner(visitor)}
    try:
        view = show(ctx, name, visitor)
    except ValueError:  # a half-typed set name: nothing to redraw
        return banner
    if view["seen"] == seen:
        return banner
    first = {"pair_id": view["pair_id"], "pair": view["pair"]} if pair_id is None else {}
    return {**banner, "seen": view["seen"], "tallies": view["tallies"], **first}


def job_tab(ctx: UIContext) -> JobTab:
    """The tab's share of the job-tab skeleton: the banner of the pair-generation job, and wiring by name."""
    return JobTab(ctx, feedback.KIND)


def export_files(ctx: UIContext, name: str | None) -> list[str]:
    """The set's pairs as hh-rlhf and as prompt/chosen/rejected JSON lines, in a fresh temporary folder."""
    fs = find_set(ctx, name)
    if fs is None:
        raise ValueError("choose a feedback set first")
    folder = Path(tempfile.mkdtemp(prefix="rlhf-lab-feedback-"))
    paths = [folder / f"{fs.name}-{fmt}.jsonl" for fmt in votes.FORMATS]
    if sum(votes.write_export(fs, p, fmt) for p, fmt in zip(paths, votes.FORMATS)) == 0:
        raise ValueError(f"set '{fs.name}' has no 'A is better' or 'B is better' vote yet: nothing to export")
    return [str(p) for p in paths]


def model_choices(ctx: UIContext) -> list[tuple[str, str]]:
    return [("base — the policy with adapters off", policies.BASE)] + [
        (r.label(), r.id) for r in policies.ppo_runs(ctx.manager.root)]


# ---------------------------------------------------------------- the tab


def build_feedback_tab(ctx: UIContext) -> None:
    jt = job_tab(ctx)
    jt.add("visitor", ctx.visitor)
    jt.add("pair_id", gr.State(None))  # the pair id this browser shows
    jt.add("seen", gr.State(""))  # the set signature last drawn
    jt.add("banner", gr.Markdown(elem_id="feedback-banner"))
    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            _generate_form(jt)
        with gr.Column(scale=2):
            _vote_column(jt)
    view = ["pair_id", "pair", "tallies", "howto", "seen"]
    for choice in votes.CHOICES:
        jt.on(jt.components[f"vote-{choice}"].click, functools.partial(cast, ctx, choice),
              ["name", "pair_id", "reason", "visitor"], ["reveal", "reason", *view], api_name=f"feedback_vote_{choice}")
    jt.on(jt.components["name"].change, lambda n, v: show(ctx, n, v), ["name", "visitor"], view,
          api_name="feedback_show")
    jt.on(jt.components["generate"].click, lambda v, *values: start(ctx, v, dict(zip(FORM, values))),
          ["visitor", *FORM], ["name"], api_name="feedback_generate")
    for event in ctx.ticks(ctx.timer(2)):
        jt.on(event, lambda n, v, p, s: tick(ctx, n, v, p, s), ["name", "visitor", "pair_id", "seen"],
              ["banner", "seen", "tallies", "pair_id", "pair"], show_progress="hidden", api_visibility="private")
    jt.on(jt.components["export"].click, lambda n: {"files": gr.update(value=export_files(ctx, n), visible=True)},
          ["name"], ["files"], api_name="feedback_export")
    jt.add("data_source", ctx.data_source)  # the Reward tab's training pairs follow it
    jt.on(jt.components["use"].click, lambda n: {"data_source": f"{sources.SOURCE_PREFIX}{votes.check_name(n)}"},
          ["name"], ["data_source"], api_visibility="private")
    if ctx.vote_set is not None:  # Compare's "vote blind on these answers": show that set
        jt.add("vote_set", ctx.vote_set)
        jt.on(ctx.vote_set.change, lambda s, v: {"name": gr.update(choices=votes.list_sets(ctx.manager.root),
                                                                   value=s)} if s else {},
              ["vote_set", "visitor"], ["name"], api_visibility="private", show_progress="hidden")
    if ctx.demo is not None:  # fresh lists and this visitor's next pair on every page load
        jt.on(ctx.demo.load, lambda n, v: {**fresh_lists(ctx), **show(ctx, n, v)}, ["name", "visitor"],
              ["name", "model_a", "model_b", *view], api_visibility="private")


def default_model_b(ctx: UIContext, choices: list[tuple[str, str]]) -> str:
    """Model 2 for a fresh page: the newest PPO run that ran to its end (a stopped one is listed, never picked), else
    base (two samples of it)."""
    return default_choice(choices, policies.ppo_runs(ctx.manager.root)) or policies.BASE


def fresh_lists(ctx: UIContext) -> dict[str, Any]:
    """On a page load: the sets and models there are now, Model 2 the newest finished PPO run."""
    models = model_choices(ctx)
    return {"name": gr.update(choices=votes.list_sets(ctx.manager.root) or [DEFAULT_SET]),
            "model_a": gr.update(choices=models), "model_b": gr.update(choices=models,
                                                                       value=default_model_b(ctx, models))}


def _generate_form(jt: JobTab) -> None:
    """1. The set, the two models and the prompts to generate blind pairs from."""
    ctx, limits = jt.ctx, jt.ctx.preset.limits
    gr.Markdown("#### 1. Blind pairs: two models answer the same prompts")
    sets = votes.list_sets(ctx.manager.root) or [DEFAULT_SET]

    def field(name: str, value: Any, **kwargs: Any) -> Any:
        return jt.add(name, field_input(FEEDBACK_FIELDS[name], value, **kwargs))

    field("name", sets[0], choices=sets, allow_custom_value=True, elem_id="feedback-set")
    choices = model_choices(ctx)
    field("model_a", policies.BASE, choices=choices, elem_id="feedback-model-a", allow_custom_value=True)  # checked
    field("model_b", default_model_b(ctx, choices), choices=choices, elem_id="feedback-model-b",  # at Start
          allow_custom_value=True)
    field("prompts", ctx.preset.compare_prompts, choices=list(dict.fromkeys([ctx.preset.compare_prompts, "bundled"])),
          allow_custom_value=True)
    field("n_pairs", FEEDBACK_FIELDS["n_pairs"].default, maximum=limits.max_prompts)
    field("max_new_tokens", min(64, limits.max_new_tokens), maximum=limits.max_new_tokens)
    jt.add("generate", gr.Button("Generate pairs", elem_id="feedback-generate"))


def _vote_column(jt: JobTab) -> None:
    """2. The blind pair, the vote buttons, the reveal, the tallies and the export."""
    gr.Markdown("#### 2. Which answer is better? The models are named after your vote")
    jt.add("pair", gr.HTML(elem_id="feedback-pair"))
    with gr.Row():
        for c, label in votes.CHOICES.items():
            jt.add(f"vote-{c}", gr.Button(label, variant="primary" if c in ("a", "b") else "secondary",
                                          elem_id=f"feedback-vote-{c}"))
    jt.add("reason", gr.Textbox(label="Why? (optional)", max_length=votes.MAX_REASON, elem_id="feedback-reason"))
    jt.add("reveal", gr.Markdown(elem_id="feedback-reveal"))
    jt.add("tallies", gr.Markdown(elem_id="feedback-tallies"))
    jt.add("howto", gr.Markdown(elem_id="feedback-howto"))
    with gr.Row():
        jt.add("export", gr.Button("Export votes as preference pairs", size="sm", elem_id="feedback-export"))
        jt.add("use", gr.Button("Use these votes in the Reward tab", size="sm", elem_id="feedback-use"))
    jt.add("files", gr.File(label="hh-rlhf and prompt/chosen/rejected JSON lines", file_count="multiple",
                            interactive=False, visible=False, elem_id="feedback-files"))
