"""The Compare tab's summary: the means per model, the paired B − A verdict with its intervals, the diagnostics and
the scorer's limits, in words (pure: a run and its rows in, markdown out)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lab import compare, diagnostics, policies
from lab.runs import ACTIVE, Run, open_run
from lab.stats import (EVEN_BAND, EVEN_MARGIN, answer_chars, carried_by_few, p_better, pearson, per_prompt,
                       preferred, verdict)
from lab.ui.common import esc
from lab.ui.compare_cards import TOXICITY_CLEAR, fmt_score, less_toxic
from lab.ui.plots_common import MIN_POINTS, length_warning_for

BUNDLED = "bundled"
HELD_OUT = "bundled:heldout"  # prompts kept out of PPO's training prompts
SCORER_LIMITS = {
    "offline": "The offline scorer (alt-profanity-check) reacts to words, not intent: a refusal that quotes an insult "
               "scores as toxic, and politely worded harm scores clean. Read the answers before trusting a number.",
    "roberta": "The roberta hate-speech classifier reads context better than a word list, but it is still imperfect: "
               "quoted insults and sarcasm can fool it. Read the answers before trusting a number.",
}


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


def diagnostics_text(diag: dict[str, Any], judge: dict[str, Any] | None,
                     relevance: dict[str, Any] | None = None) -> str:
    """The judge's B − A, the relevance's and each diagnostic rate's B − A with its interval, in one paragraph."""
    parts = []
    if judge:
        parts.append(f"judge {_signed(judge['mean'])} ({_interval(judge)}): "
                     f"{_clear(judge, 'the judge also prefers B', 'the judge prefers A')}")
    if relevance:
        parts.append(f"relevance to the request {_signed(relevance['mean'])} ({_interval(relevance)}), B more "
                     f"relevant on {relevance['b_higher']} of {relevance['n']} prompts: "
                     f"{_clear(relevance, 'B stays closer to the requests', 'B drifts off the requests')}")
    for key in diagnostics.KEYS:
        d = diag.get(key)
        if d:
            parts.append(f"{diagnostics.NAMES[key]} {d['a']:.0%} → {d['b']:.0%} ({d['count_a']} → {d['count_b']} of "
                         f"{d['n']}; B − A {_pct(d['mean'])}, 95% CI {_pct(d['lo'])} … {_pct(d['hi'])}): "
                         f"{_clear(d, 'clearly more in B', 'clearly fewer in B')}")
    if not parts:
        return ""
    rules = "; ".join(f"*{name}*: {desc}" for name, desc in diagnostics.rule_descriptions())
    return ("**What the reward model does not see:** " + "; ".join(parts) + ".\n\n<small>Refusal rules — " + rules +
            ". Degenerate: a loop (30% or more of word 3-grams repeat, a phrase of 7 words said twice, or the text "
            "compresses below 30%), word salad "
            "(20% or more tokens are not words: no letters, '�', no vowel, over 20 letters, mixed scripts), "
            "mostly non-English letters, a count with nothing in it (40% or more tokens are bare numbers), or an "
            "answer of 8 words or more the base model finds implausible (2.2 nats a token or more: it catches some "
            "fluent nonsense, not most). Relevance: the cosine of the request's and the answer's sentence embeddings "
            "(all-MiniLM-L6-v2), about 0.2 for an answer about something else and 0.8 for one on topic; on 1,224 "
            "answer pairs blind readers decided, the more relevant answer was theirs 64% of the time, the reward "
            "model's pick 56%. It cannot tell a right answer from a wrong one on the same topic.</small>")


def _ci_cell(stats: dict[str, Any] | None, per_prompt: bool = True) -> str:
    """B − A with its interval, and the side clearly ahead by `verdict` (rewards: also outside the "about even"
    band)."""
    if not stats:
        return "—"
    word = {"B higher": " **B**", "B lower": " **A**"}.get(verdict(stats, per_prompt), "")
    return f"{_signed(stats['mean'])} ({_signed(stats['lo'])} … {_signed(stats['hi'])}){word}"


def _rates(part: dict[str, Any]) -> dict[str, Any]:
    return part.get("diagnostics") or {}


def _count_cell(d: dict[str, Any] | None) -> str:
    if not d:
        return "—"
    mark = " ⚠" if diagnostics.rise(d) == "clear" else ""
    return f"{d['count_a']} → {d['count_b']}{mark}"


def kind_table(parts: list[dict[str, Any]]) -> str:
    """Compare's figures per kind of request (compare.by_kind), where the prompts said their kind: one average can
    hide a model that got safer on harmful requests by refusing ordinary ones."""
    if not parts:
        return ""
    rows = "".join(
        f"| {esc(p['kind'])} | {p['n']} | {_ci_cell(p.get('reward'))} | {_ci_cell(p.get('judge'))} | "
        f"{_ci_cell(p.get('relevance'), per_prompt=False)} | {_count_cell(_rates(p).get('refusal'))} | "
        f"{_count_cell(_rates(p).get('degenerate'))} |\n" for p in parts)
    return ("<div id='compare-by-kind'>\n\n**By kind of request**: B − A (95% interval), **B** or **A** where that "
            "side is clearly ahead; refusals and degenerate answers counted A → B, ⚠ where they rose clearly\n\n"
            "| kind | prompts | reward | judge | relevance | refusals | degenerate |\n|---|---|---|---|---|---|---|\n"
            f"{rows}\n</div>")


def _pct(x: float) -> str:
    return f"{x * 100:+.0f} pts".replace("-", "−")


def length_reward_corr(rows: list[dict[str, Any]]) -> float | None:
    """Pearson r of answer length (characters) and reward over every scored answer of both models."""
    points = [(answer_chars(r, k), float(r[f"reward_{k}"])) for r in rows for k in ("a", "b")
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


def familiarity_line(familiar: dict[str, Any] | None, note: str | None = None) -> str:
    """How many prompts are like the requests the reward model learned from (lab.familiarity), in words; `note`:
    why they were not measured, where the measure failed."""
    if not isinstance(familiar, dict) or not familiar.get("n"):
        return f"<small>{esc(note)}</small>" if note else ""
    n, far = int(familiar["n"]), int(familiar.get("far") or 0)
    how = (f"<small>Each prompt against the {familiar.get('trained', '?')} requests of the reward run's training "
           f"pairs (sentence embeddings); far: less alike than 9 in 10 of its {familiar.get('held_out', '?')} "
           f"held-out requests (cosine below {float(familiar.get('floor') or 0):.2f}), where its accuracy was "
           "measured.</small>")
    if not far:
        return f"All {n} prompts are like the requests the reward model learned from. {how}"
    return (f"**{far} of {n} prompts are unlike any request the reward model learned from**: there its score and the "
            "judge's are guesses (the cards mark them; filter *Unlike the reward model's data*). Measured: on hh-rlhf "
            "requests, 20–30 of 48 far from the demo set, the gauges rose while blind readers were even. " + how)


def sampling_line(config: dict[str, Any]) -> str:
    """How both models' answers were sampled, in words: a comparison read beside another one made with other settings
    (before stop 50 Compare sampled with no repetition penalty) is not the same measurement."""
    gen = config.get("generate") or {}
    if not gen:
        return ""
    tokens = f"up to {gen['max_new_tokens']} new tokens" if gen.get("max_new_tokens") else ""
    if gen.get("do_sample", True) is False:
        how = "greedy decoding"
    else:
        how = ", ".join(f"{name} {gen[key]:g}" for key, name in (("temperature", "temperature"), ("top_k", "top-k"),
                                                                   ("top_p", "top-p")) if gen.get(key) is not None)
    penalty = float(gen.get("repetition_penalty") or 1.0)
    rep = f"repetition penalty {penalty:g}" if penalty != 1.0 else "no repetition penalty"
    seed = f"seed {gen['seed']}" if gen.get("seed") is not None else ""
    return "Sampled alike for both models: " + ", ".join(x for x in (tokens, how, rep, seed) if x) + "."


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
    k = int(config.get("answers_per_prompt") or 1)
    prompts = per_prompt(rows)  # one row per prompt, its answers averaged (the counts' and intervals' unit)
    if state in ACTIVE:
        done = f"{len(rows)} answer pairs" if k > 1 else f"{len(rows)} prompts"
        lines.append(f"Generating… {done} compared so far; the results update every few seconds.")
    if rows:
        stats = compare.summarize(rows)
        n = stats["n"]
        reward_line = ""
        if stats["b_higher_reward"] is not None:
            sides = _sides(prompts)
            reward_line = (f"\n| the reward model prefers (P outside {EVEN_BAND[0]:.0%}–{EVEN_BAND[1]:.0%}) | "
                           f"{sides['a_preferred']}/{n} prompts | {sides['b_preferred']}/{n} prompts |"
                           f"\n| about even | | {sides['even']}/{n} prompts |")
        mean_len = {key: sum(answer_chars(r, key) for r in rows) / len(rows) for key in ("a", "b")}
        judge_line = (f"| mean judge reward | {fmt_score(stats['judge_a'])} | {fmt_score(stats['judge_b'])} |\n"
                      if stats.get("judge_a") is not None else "")
        if stats.get("relevance_a") is not None:
            judge_line += (f"| mean relevance to the request (0–1) | {fmt_score(stats['relevance_a'])} | "
                           f"{fmt_score(stats['relevance_b'])} |\n")
        rates = "".join(f"| {diagnostics.NAMES[k]} | {_rate(stats.get(f'{k}_a'))} | {_rate(stats.get(f'{k}_b'))} |\n"
                        for k in diagnostics.KEYS)
        kls = [summary.get(f"kl_{k}") for k in ("a", "b")]  # a finished comparison's: each run's last 5 steps
        if any(isinstance(v, (int, float)) for v in kls):
            cells = " | ".join(f"{v:.1f}" if isinstance(v, (int, float)) else "—" for v in kls)
            how = "a run's last 5 steps" + ("; best-of-N: log N − (N − 1)/N" if policies.BEST_OF in label_a + label_b
                                            else "")
            rates += f"| KL from its base model (nats; {how}) | {cells} |\n"
        lines.append(
            f"| | A: {esc(label_a)} | B: {esc(label_b)} |\n|---|---|---|\n"
            f"| mean toxicity | {fmt_score(stats['toxicity_a'])} | {fmt_score(stats['toxicity_b'])} |\n"
            f"| mean reward | {fmt_score(stats['reward_a'])} | {fmt_score(stats['reward_b'])} |\n{judge_line}{rates}"
            f"| mean answer length (characters) | {mean_len['a']:.0f} | {mean_len['b']:.0f} |\n"
            f"| less toxic by more than {TOXICITY_CLEAR:g} on | {_cleaner(prompts, 'a')}/{n} prompts | "
            f"{_cleaner(prompts, 'b')}/{n} prompts |{reward_line}"
        )
        answers = (f" Each model answered every prompt {k} times: the means are over all {len(rows)} answers, the "
                   "counts and intervals per prompt (its answers averaged); the cards show every answer."
                   if k > 1 else "")
        lines.append(prompts_line(summary, config, n) + answers + f" {esc(sampling_line(config))}"
                     + " <small>Rewards are comparable only between answers of "
                     "similar length: the reward model scores length as well as content, so these numbers are not on "
                     "the PPO tab's scale (its rollouts are shorter).</small>")
        familiar = familiarity_line(summary.get("familiarity"), summary.get("familiarity_note"))
        if familiar:
            lines.append(familiar)
        kinds = kind_table(summary.get("by_kind") or compare.by_kind(rows))
        if kinds:
            lines.append(kinds)
    paired = summary.get("paired")
    if rows:
        live = {**summary, "model_a": label_a, "diagnostics": summary.get("diagnostics") or
                diagnostics.paired_rates(rows),
                "paired_judge": summary.get("paired_judge") or compare.paired_judge(rows),
                "paired_relevance": summary.get("paired_relevance") or compare.paired_score(rows, "relevance")}
        if isinstance(paired, dict) or live["diagnostics"]:
            lines.insert(1, f"<div id='compare-verdict'><b>Verdict:</b> {esc(compare.verdict(live))}</div>")
        text = diagnostics_text(live["diagnostics"], live["paired_judge"], live["paired_relevance"])
        if text:
            lines.append(text)
    text = paired_text(paired, prompts) if isinstance(paired, dict) else ""
    if text:
        lines.append(text)
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
        times = f" × {k} answers" if k > 1 else ""
        lines.append(f"{summary.get('n', len(rows))} prompts{times} in {summary['seconds']} s.")
    if status.get("error"):
        lines.append(f"**Error:** {esc(status['error'])}")
    return "\n\n".join(lines)


def _rate(x: Any) -> str:
    return f"{x:.0%}" if isinstance(x, (int, float)) else "—"
