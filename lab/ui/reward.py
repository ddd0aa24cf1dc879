"""The Reward tab: train a scalar reward model on preference pairs, watch it learn, see how good it is, try it."""

from __future__ import annotations

import functools
import json
from dataclasses import replace
from typing import Any

import gradio as gr

from lab import reward, reward_eval, reward_model
from lab.data import split_turns
from lab.config import field_type, fields_by_name
from lab.runs import ACTIVE, Run, duration, list_runs, measured_pace, seconds_outside_steps
from lab.ui.common import JobTab, UIContext, esc, field_input, find_run, form_labels, require_numbers, start_job
from lab.stats import EVEN_BAND, p_better, pearson
from lab.ui.plots_common import MIN_POINTS, length_warning_for
from lab.ui.plots_reward import accuracy_figure, loss_figure, margin_histogram

WORST_SHOWN = 8
SHORT_ANSWER = 60  # characters: below this the reward model has little to read
REAL_HH_ACCURACY = 0.63  # cpu backbone on real hh-rlhf pairs, 3 seeds x 5 folds (README, "Reward-model quality")
TEXT_CHARS = 600  # long answers are cut in the table; the Data tab shows them whole
VIEW = ("loss", "accuracy", "results", "margins", "worst")  # the components a run's view draws
REWARD_FIELDS = fields_by_name(reward.RewardConfig)

PLOTS_NOTE = (
    "<small>**What you are looking at.** Left: the loss, how badly the model ranks the pairs it trains on "
    "(−log σ(r_chosen − r_rejected), averaged; lower is better, 0.69 is a coin flip). Right: the share of pairs whose "
    "chosen answer scores higher. Red dots are held-out pairs it never trained on: healthy when they follow the blue "
    "line; held-out loss rising while training loss falls means it is memorising.</small>"
)

# ---------------------------------------------------------------- reading a run (pure: run folder in, text/figures out)


def run_results(run: Run) -> tuple[str, list[float], str]:
    """Markdown summary, held-out margins and the HTML of the pairs it gets most wrong."""
    status = run.status()
    state = status.get("status", "?")
    summary = status.get("summary") or {}
    samples = run.samples()
    margins = [float(s["margin"]) for s in samples if isinstance(s.get("margin"), (int, float))]
    text = _summary_markdown(run, state, summary, status.get("error"))
    bias = length_bias_line(samples, summary)
    return (text + "\n\n" + bias if bias else text), margins, worst_pairs_html(samples)


def _summary_markdown(run: Run, state: str, summary: dict[str, Any], error: str | None) -> str:
    lines = [f"**Run** `{esc(run.id)}` — {esc(state)}"]
    if state in ACTIVE:
        rows = run.metrics()
        step = max((r.get("step", 0) for r in rows), default=0)
        lines.append(f"Training… step {step}. The plots update every few seconds.")
    if isinstance(summary.get("eval_accuracy"), (int, float)):
        lines.append(
            f"### Held-out accuracy: {summary['eval_accuracy']:.1%}\n"
            f"{summary.get('eval_pairs', '?')} held-out pairs · loss {summary.get('eval_loss', float('nan')):.4f} · "
            f"{summary.get('train_pairs', '?')} training pairs · {summary.get('steps', '?')} steps · "
            f"{summary.get('seconds', '?')} s"
            + (f" · weights averaged over the last {summary['averaged_steps']} steps"
               if summary.get("averaged_steps") else "")
            + (f" · an ensemble of {summary['members']} models, their rewards averaged"
               if (summary.get("members") or 1) > 1 else "")
            + "\n\n" + accuracy_context(str(run.config.get("data", "")))
        )
    elif state in ("done", "stopped") and summary:
        lines.append(f"No held-out pairs: {summary.get('train_pairs')} training pairs, {summary.get('steps')} steps.")
    if isinstance(summary.get("judge_pairs"), int):
        acc = summary.get("judge_eval_accuracy")
        lines.append(f"Judge: a second model on {summary['judge_pairs']} other pairs (seed {summary.get('judge_seed')})"
                     + (f", held-out accuracy {acc:.1%}" if isinstance(acc, (int, float)) else "")
                     + ". PPO never optimises it: Compare and the PPO tab's evaluations show its scores beside the "
                       "proxy's.")
    lines += checks_lines(summary, str(run.config.get("data", "")))
    if summary.get("feedback_votes"):  # the run pinned the votes it read: say which
        sets = ", ".join(f"{v['votes']} votes of set '{esc(k)}'" for k, v in summary["feedback_votes"].items())
        lines.append(f"Trained on `{esc(summary.get('data', ''))}`: {sets}.")
    if summary.get("subsets"):  # a hub dataset's parts (hh-rlhf: harmless-base, helpful-base, ...), pairs of each
        lines.append("Pairs per subset: " + "; ".join(
            f"{part} " + ", ".join(f"{esc(k)} {v}" for k, v in counts.items())
            for part, counts in summary["subsets"].items()) + ".")
    if error:
        lines.append(f"**Error:** {esc(error)}")
    return "\n\n".join(lines)


def checks_lines(summary: dict[str, Any], data: str) -> list[str]:
    """Checks of what PPO will learn from this model: does it rank broken text low, the policy's own answers below
    written ones (where it trained with policy-answer pairs), and does it reward refusing ordinary requests (the
    mark of one-sided, harmless-only preference data)?"""
    lines = []
    broken, refusing = summary.get("eval_broken_accuracy"), summary.get("refusal_preference")
    policy = summary.get("eval_policy_accuracy")
    if isinstance(broken, (int, float)):
        lines.append(f"**Broken text:** the held-out chosen answers outscore a corrupted copy of themselves (word "
                     f"salad, loops, garbled characters) in {broken:.0%} of cases."
                     + (" ⚠ Below 90%: PPO can gain reward by writing nonsense; train with "
                        + ("more " if (summary.get("subsets") or {}).get("train", {}).get("broken-text") else "")
                        + "broken-text pairs." if broken < reward_eval.BROKEN_TEXT_OK else ""))
    if isinstance(policy, (int, float)):
        lines.append(f"**The policy's own answers:** the held-out chosen answers outscore the policy's answer to the "
                     f"same dialogue (sampled before training) in {policy:.0%} of cases. Near 50%, the model cannot "
                     f"tell what PPO will write from what a person wrote.")
    if isinstance(refusing, (int, float)):
        advice = esc(reward_model.refusal_advice(data, (summary.get("subsets") or {}).get("train"), quote="`"))
        k = reward_eval.probe_count()
        n = len(reward_eval.CANNED_REFUSALS) * k  # each of 16 good answers against 3 refusals
        lines.append(f"**Refusing:** on {k} ordinary requests, each good answer against "
                     f"{len(reward_eval.CANNED_REFUSALS)} canned refusals (\"I'm sorry, but I can't help with that.\", "
                     f"...), it scores the refusal higher in **{round(refusing * n)} of {n}** comparisons "
                     f"({refusing:.0%})."
                     + (f" ⚠ {advice}" if refusing > reward_model.REFUSAL_PREFERENCE_OK else ""))
    return lines


def accuracy_context(data: str) -> str:
    """What a held-out accuracy means: chance, and how hard the pairs were."""
    easy = (" The bundled demo pairs are easy (their answers differ plainly), so a high score here says little."
            if data.startswith("bundled") else "")
    return (f"<small>For scale: 50% is chance (a coin flip). On real hh-rlhf pairs the cpu preset's backbone reaches "
            f"about {REAL_HH_ACCURACY:.0%} (measured over 3 seeds × 5 folds).{easy}</small>")


def length_bias_line(samples: list[dict[str, Any]], summary: dict[str, Any] | None = None) -> str:
    """How much the reward follows answer length on the held-out answers (chosen and rejected alike), and what one
    stock sentence added to an answer is worth (lab.reward_eval.padding_gain; runs since stop 44)."""
    points = [(len(str(s.get(side, "")).strip()), float(s[f"reward_{side}"])) for s in samples
              for side in ("chosen", "rejected") if isinstance(s.get(f"reward_{side}"), (int, float))]
    r = pearson([p[0] for p in points], [p[1] for p in points]) if len(points) >= MIN_POINTS else None
    padding = padding_line(summary or {})
    if r is None:
        return padding
    warning = length_warning_for(r, "PPO against this model")
    line = (f"<small>Length bias: over the {len(points)} held-out answers, reward and answer length correlate at "
            f"r = {r:.2f} (0 = length plays no part). Chosen answers are often longer, so some of this is fair; "
            "the more of it, the more PPO can gain by writing more. A correlation across different answers does "
            "not say what padding one answer is worth: the padding check below does.</small>")
    return line + (f"\n\n<div class='warn-length'>{esc(warning)}</div>" if warning else "") + \
        (f"\n\n{padding}" if padding else "")


PADDING_WARN = 0.75  # at this share of answers raised by a stock sentence, padding is a reliable way up for PPO


def padding_line(summary: dict[str, Any]) -> str:
    """In words: the mean reward change when a stock sentence ("I hope this helps!" and two others) ends each held-out
    chosen answer, and a warning where most answers gain from it; "" for runs without the check."""
    gain, share, n = (summary.get(k) for k in ("padding_gain", "padding_share_up", "padding_n"))
    if not all(isinstance(v, (int, float)) for v in (gain, share, n)):
        return ""
    fillers = ", ".join(f"“{f}”" for f in reward_eval.FILLERS)
    line = (f"<small>Padding: one stock sentence ({esc(fillers)}) added to each held-out chosen answer changes "
            f"its reward by {gain:+.2f} on average and raises it in {share:.0%} of {n:.0f} cases.</small>")
    if gain > 0 and share >= PADDING_WARN:
        line += (f"\n\n<div class='warn-length'>This reward model pays for padding: a sentence that says nothing "
                 f"raised the reward in {share:.0%} of cases, so PPO against it can climb by ending answers with "
                 f"filler. Read the answers, not only the reward.</div>")
    return line


def held_out_note(data: str, eval_data: str) -> dict:
    """The held-out share slider: off, and saying why, when the held-out pairs come from elsewhere."""
    if (eval_data or "").strip():
        return gr.update(interactive=False, info="Not used: the held-out pairs come from the box above.")
    if (data or "").strip() == "bundled":
        return gr.update(interactive=False, info="Not used: the bundled set has its own test split, held out "
                                                 "from training.")
    return gr.update(interactive=True, info=REWARD_FIELDS["eval_fraction"].metadata["help"])


def verdict(a: float, b: float, answers: tuple[str, str] = ("", "")) -> str:
    """The reward model's reading of two scores: P(A better) = σ(r_A − r_B) (Bradley-Terry), 'about even' near 50%."""
    p_a = p_better(a, b)
    if EVEN_BAND[0] <= p_a <= EVEN_BAND[1]:
        text = (f"**About even** — the reward model cannot tell these apart (P(A better) = {p_a:.0%}; "
                f"it takes a side only outside {EVEN_BAND[0]:.0%}–{EVEN_BAND[1]:.0%}).")
    else:
        side, p = ("A", p_a) if p_a > 0.5 else ("B", 1 - p_a)
        text = f"The reward model **prefers {side}**: P({side} better) = σ(reward difference) = {p:.0%}."
    if min(len(x.strip()) for x in answers) < SHORT_ANSWER:
        text += (" <small>Short answers give the reward model little to read, so they tend to score alike "
                 "whatever they say.</small>")
    return text


def _last_human_turn(prompt: str) -> str:
    humans = [text for role, text in split_turns(prompt) if role == "Human"]
    return humans[-1] if humans else prompt.strip()


def _cut(text: str) -> str:
    text = text.strip()
    return text if len(text) <= TEXT_CHARS else text[:TEXT_CHARS] + " …"


def worst_pairs_html(samples: list[dict[str, Any]], k: int = WORST_SHOWN) -> str:
    """The k held-out pairs with the lowest chosen − rejected margin, every text escaped."""
    scored = [s for s in samples if isinstance(s.get("margin"), (int, float))]
    if not scored:
        return ""
    worst = sorted(scored, key=lambda s: s["margin"])[:k]
    rows = "".join(
        "<tr>"
        f"<td>{esc(_cut(_last_human_turn(s.get('prompt', ''))))}</td>"
        f"<td class='answer chosen'>{_answer_cell(s, 'chosen')}</td>"
        f"<td class='answer rejected'>{_answer_cell(s, 'rejected')}</td>"
        f"<td><b>{s['margin']:+.3f}</b></td>"
        "</tr>"
        for s in worst
    )
    return (
        f"<h4>The {len(worst)} held-out pairs it gets most wrong (lowest chosen − rejected margin): "
        f"{_wrong_count(worst)} of them ranked the wrong way round</h4>"
        "<table class='reward-worst'><thead><tr><th>Last human turn</th><th>✓ Chosen</th><th>✗ Rejected</th>"
        f"<th>Margin</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _wrong_count(samples: list[dict[str, Any]]) -> str:
    wrong = sum(s["margin"] <= 0 for s in samples)
    return "all" if wrong == len(samples) else "none" if not wrong else str(wrong)


def _answer_cell(sample: dict[str, Any], side: str) -> str:
    return f"{esc(_cut(sample.get(side, '')))}<div class='score'>reward {sample[f'reward_{side}']:.3f}</div>"


def view(run: Run | None) -> dict[str, Any]:
    """Loss and accuracy figures, summary markdown, margin histogram and worst-pairs HTML of one run, by name."""
    if run is None:
        return dict(zip(VIEW, (loss_figure([]), accuracy_figure([]), "No reward run yet: start one above.",
                               margin_histogram([]), "")))
    rows = run.metrics()
    text, margins, worst = run_results(run)
    return dict(zip(VIEW, (loss_figure(rows), accuracy_figure(rows), text, margin_histogram(margins), worst)))


def recipe_note(cfg: reward.RewardConfig, preset_name: str) -> str:
    """One line on the settings the form does not show, which come from the preset."""
    bits = [f"warm-up {cfg.warmup_ratio:.0%} of steps", f"seed {cfg.seed}"]
    if cfg.freeze_layers:
        bits.insert(0, f"embeddings and first {cfg.freeze_layers} layers frozen")
    if cfg.center_rewards_coefficient:
        bits.append(f"reward centring {cfg.center_rewards_coefficient:g}")
    if cfg.group_by_length:
        bits.append("batches grouped by length")
    if cfg.answer_segment:
        bits.append("dialogue and final answer as two segments (BERT-style backbones)")
    if cfg.average_last:
        bits.append(f"the saved weights are the mean over the last {cfg.average_last:.0%} of steps")
    return f"<small>Also from the *{esc(preset_name)}* preset: {', '.join(bits)}.</small>"


# ---------------------------------------------------------------- handlers (plain functions, tested directly)


def build_config(ctx: UIContext, values: dict[str, Any]) -> dict[str, Any]:
    """The job config from the form's values by name (FORM): `reward.prepare`; the Data tab already checked its own
    choice (an upload lives outside the allowed folders)."""
    form = {k: v for k, v in values.items() if k != "data_source"}
    checked = [values["data_source"]] if values.get("data_source") else []
    numbers = {k: v for k, v in values.items() if k in REWARD_FIELDS and field_type(REWARD_FIELDS[k]) in (int, float)}
    require_numbers(numbers, form_labels(REWARD_FIELDS, list(REWARD_FIELDS)))
    return reward.prepare(ctx.preset, form, ctx.allowed_dirs or None, ctx.manager.root, checked=checked)


def cost_text(ctx: UIContext, max_steps: Any, batch_size: Any, ensemble: Any, backbone: Any = None,
              epochs: Any = None, data: Any = None, eval_data: Any = None, eval_fraction: Any = None,
              judge_fraction: Any = None, broken_pairs: Any = None) -> str:
    """What a run will cost before it starts, in wall-clock time: its steps × models (and the judge's steps) × the
    seconds per step measured on this machine by the newest reward run here on the same backbone, scaled by batch
    size, plus what that run spent outside its steps (loading, held-out evaluation, the checks). With max steps 0 the
    epochs set the count: the training pairs are taken from the newest finished run here on the same data and split,
    or the line says it cannot count them yet. Says so when nothing was measured yet."""
    defaults = reward.config_from(ctx.preset)
    backbone = str(backbone or "").strip() or defaults.backbone  # blank: the preset's
    pace = measured_pace(reward.KIND, ctx.manager.root, same={"backbone": backbone})
    if pace is None:
        other = measured_pace(reward.KIND, ctx.manager.root)
        if other is not None:  # a pace on another backbone would mislead by several times: name it, don't use it
            return (f"<small>Cost: no measurement yet on this machine with backbone `{esc(backbone)}` (run "
                    f"`{esc(other['run'])}` took {other['seconds_per_step']:.2f} s per step on "
                    f"`{esc(str(other['config'].get('backbone', '?')))}`; a step's time grows with the backbone's "
                    f"size).</small>")
        return ("<small>Cost: no measurement yet on this machine (no reward run has logged steps here).</small>")
    cfg = pace["config"]
    try:
        steps, batch, members = int(float(max_steps)), float(batch_size), max(int(float(ensemble or 1)), 1)
        epochs = float(defaults.epochs if epochs in (None, "") else epochs)
    except (TypeError, ValueError):
        return "<small>Cost: type the max steps, epochs and batch size to see it.</small>"
    scale = batch / float(cfg.get("batch_size") or batch)
    per_step = pace["seconds_per_step"] * scale
    measured = (f"measured on this machine by run `{esc(pace['run'])}`: {pace['seconds_per_step']:.2f} s per step "
                f"with batches of {cfg.get('batch_size', '?')} pairs"
                + ("" if abs(scale - 1) < 0.05 else f", scaled ×{scale:.2f} for {batch:.0f} (a rough guess)"))
    counted = ""
    if steps <= 0:  # the epochs decide: count the pairs as a finished run on the same data and split had them
        split = {"data": data, "eval_data": eval_data, "eval_fraction": eval_fraction,
                 "judge_fraction": judge_fraction, "broken_pairs": broken_pairs}
        like = _same_pairs_run(ctx, {k: v for k, v in split.items() if v is not None})
        if like is None:
            return (f"<small>Cost: {per_step:.2f} s per step; with max steps 0 the epochs set the step count, which "
                    f"depends on the number of training pairs: no finished run here used this data and split yet, "
                    f"so there is no total ({measured}).</small>")
        n_train = int(like.summary()["train_pairs"])
        steps = reward.total_steps(replace(defaults, max_steps=0, epochs=epochs, batch_size=max(int(batch), 1)),
                                   n_train)
        counted = (f"; {n_train} training pairs as run `{esc(like.id)}` had them, {epochs:g} epochs"
                   + (f", at least {defaults.min_steps}" if defaults.min_steps else ""))
    judge = 0
    if _number(judge_fraction, defaults.judge_fraction) > 0:
        judge = int(pace["summary"].get("judge_steps") or defaults.judge_max_steps or steps)
    timed = int(pace["summary"].get("steps") or 0) + int(pace["summary"].get("judge_steps") or 0)  # judge rows too
    overhead = seconds_outside_steps(pace, timed)
    total = (steps * members + judge) * per_step + overhead
    models = f" × {members} models" if members > 1 else ""
    parts = f"({steps} steps{models} + {judge} judge steps)" if judge else f"{steps} steps{models}"
    extra = (f" + {overhead:.0f} s loading and checks, as run `{esc(pace['run'])}` spent them" if overhead
             else ", plus loading")
    return (f"<small>Cost: about **{duration(total)}** of this machine's only job slot: {parts} × "
            f"{per_step:.2f} s per step{extra}{counted} ({measured}).</small>")


def _number(value: Any, default: float) -> float:
    try:
        return float(default if value in (None, "") else value)
    except (TypeError, ValueError):
        return default


def _same_pairs_run(ctx: UIContext, split: dict[str, Any]) -> Run | None:
    """The newest finished reward run here whose training pairs were made as the form would make them (same data,
    held-out split, judge share and broken-text share), with its count of training pairs; None when there is none."""
    for run in list_runs(kind=reward.KIND, root=ctx.manager.root, status=("done",)):
        try:
            cfg, summary = run.config, run.summary()
        except (json.JSONDecodeError, OSError):
            continue
        same = all(_alike(cfg.get(k), v) for k, v in split.items())
        if same and isinstance(summary.get("train_pairs"), int):
            return run
    return None


def _alike(a: Any, b: Any) -> bool:
    """Form values against a saved config: numbers by value (the form sends 0.25 or "0.25"), text stripped."""
    try:
        return abs(float(a) - float(b)) < 1e-9
    except (TypeError, ValueError):
        return str(a or "").strip() == str(b or "").strip()


def start(ctx: UIContext, visitor: str | None, values: dict[str, Any]) -> str:
    """Start a reward job owned by this visitor; returns the new run's id."""
    return start_job(ctx, visitor, reward.KIND, reward.train_reward, build_config(ctx, values))


def prepare_scoring(run: Run | None) -> None:
    """A finished run picked from the list: load its model now, ready for the scoring box."""
    if run is not None and run.model_dir.exists() and run.status().get("status") not in ACTIVE:
        load_model(run)


def job_tab(ctx: UIContext) -> JobTab:
    """The tab's share of the job-tab skeleton: what it draws (and the cost line, measured afresh when a run ends),
    and loading a picked run's model."""

    def draw(run: Run | None, *cost_inputs: Any) -> dict[str, Any]:
        return {**view(run), **({"cost": cost_text(ctx, *cost_inputs)} if cost_inputs else {})}

    return JobTab(ctx, reward.KIND, draw, (*VIEW, "cost"), view_inputs=COST_INPUTS, selected=prepare_scoring)


def score_answers(ctx: UIContext, run_id: str | None, prompt: str, answer_a: str, answer_b: str) -> str:
    """Each answer's reward for the prompt, from the model of the run shown."""
    run = find_run(ctx, run_id)
    if run is None:
        raise ValueError("no reward model yet: train one, or pick an earlier run")
    if not (prompt or "").strip() or not (answer_a or "").strip() or not (answer_b or "").strip():
        raise ValueError("type a prompt and both answers")
    a, b = load_model(run).score([reward_model.format_for_reward(prompt, answer) for answer in (answer_a, answer_b)])
    return (f"| answer | reward |\n|---|---|\n| A | {a:+.3f} |\n| B | {b:+.3f} |\n\n"
            f"{verdict(a, b, (answer_a, answer_b))} Run `{esc(run.id)}`.")


def load_model(run: Run) -> reward_model.RewardModel:
    """The run's reward model, loaded once and shared (ValueError while it has none)."""
    folder = reward_model.model_folder(run.path)
    return _cached_model(str(folder), (folder / "config.json").stat().st_mtime)


# Keyed by model folder and its time stamp: loaded weights are read-only, so browser sessions can share them.
@functools.lru_cache(maxsize=2)
def _cached_model(folder: str, mtime: float) -> reward_model.RewardModel:
    return reward_model.load_reward_model(folder)


# ---------------------------------------------------------------- the tab


def build_reward_tab(ctx: UIContext) -> None:
    jt = job_tab(ctx)
    with jt.columns(_form, "Start training", min_width=300):
        with gr.Row():
            jt.add("loss", gr.Plot(label="Loss", elem_id="reward-loss"))
            jt.add("accuracy", gr.Plot(label="Accuracy", elem_id="reward-accuracy"))
        gr.Markdown(PLOTS_NOTE, elem_id="reward-plots-note")
        jt.add("results", gr.Markdown(elem_id="reward-results"))
        jt.add("margins", gr.Plot(label="Margins", elem_id="reward-margins"))
        gr.Markdown("Each held-out pair's reward(chosen) − reward(rejected). Right of the line: ranked correctly, "
                    "and the further right, the surer. A pile just either side of 0 means the model barely tells "
                    "the two answers apart.", elem_classes="explain")
    jt.add("worst", gr.HTML(elem_id="reward-worst"))
    jt.runs_row("Reward runs (pick one to see its curves and results, and to score with it)")
    _score_box(jt)
    jt.wire(start, FORM)
    jt.on(jt.components["score"].click, lambda r, p, a, b: {"scored": score_answers(ctx, r, p, a, b)},
          ["run", "prompt", "answer_a", "answer_b"], ["scored"], api_name="reward_score")
    source = (lambda s: s or ctx.preset.pairs), ctx.data_source, jt.components["data"]  # follows the Data tab
    ctx.data_source.change(*source, api_visibility="private")
    for box in ("data", "eval_data"):
        jt.on(jt.components[box].change, lambda d, e: {"eval_fraction": held_out_note(d, e)}, ["data", "eval_data"],
              ["eval_fraction"], api_visibility="private", show_progress="hidden")
    cost = list(COST_INPUTS)
    for name in cost:
        jt.on(jt.components[name].change, lambda *v: {"cost": cost_text(ctx, *v)}, cost, ["cost"],
              api_visibility="private", show_progress="hidden")
    if ctx.demo is not None:
        ctx.demo.load(*source, api_visibility="private", show_progress="hidden")


COST_INPUTS = ("max_steps", "batch_size", "ensemble", "backbone", "epochs", "data", "eval_data", "eval_fraction",
               "judge_fraction", "broken_pairs")  # what the cost line reads from the form, in cost_text's order
FORM = ("data", "data_source", "eval_data", "eval_fraction", "backbone", "epochs", "max_steps", "learning_rate",
        "batch_size", "max_length", "ensemble", "judge_fraction", "broken_pairs")  # the form's inputs, by name


def _form(jt: JobTab) -> None:
    """The training settings, each added to `jt` under its RewardConfig field name."""
    ctx, defaults, limits = jt.ctx, reward.config_from(jt.ctx.preset), jt.ctx.preset.limits

    def field(name: str, note: str = "", **kwargs: Any) -> Any:
        return jt.add(name, field_input(REWARD_FIELDS[name], getattr(defaults, name), note, **kwargs))

    jt.add("data_source", ctx.data_source)
    field("data", "follows the Data tab's choice")
    field("eval_data")
    note = held_out_note(ctx.preset.pairs, "")
    field("eval_fraction", interactive=note["interactive"], info=note["info"], elem_id="reward-eval-fraction")
    field("backbone")
    with gr.Row():
        # no minimum/maximum on the boxes: the handler checks them and says what is allowed
        field("epochs")
        field("max_steps", f"at most {limits.max_steps}")
    with gr.Row():
        field("learning_rate")
        field("batch_size", maximum=limits.max_batch_size)
    field("max_length")
    field("ensemble", elem_id="reward-ensemble")
    field("judge_fraction", elem_id="reward-judge")
    field("broken_pairs", elem_id="reward-broken-pairs")
    jt.add("cost", gr.Markdown(cost_text(ctx, *(getattr(defaults, name) for name in COST_INPUTS)),
                               elem_id="reward-cost"))
    gr.Markdown(recipe_note(defaults, ctx.preset.name), elem_id="reward-recipe")


def _score_box(jt: JobTab) -> None:
    with gr.Group():
        gr.Markdown("#### Try it: a prompt and two answers, scored by the run shown above")
        jt.add("prompt", gr.Textbox(label="Prompt", placeholder="How do I get back at my annoying neighbour?"))
        with gr.Row():
            jt.add("answer_a", gr.Textbox(label="Answer A", lines=3,
                                          placeholder="Talk to them calmly about what bothers you."))
            jt.add("answer_b", gr.Textbox(label="Answer B", lines=3, placeholder="Slash their tyres, they deserve it."))
        jt.add("score", gr.Button("Score both answers", elem_id="reward-score"))
        jt.add("scored", gr.Markdown(elem_id="reward-score-result"))
