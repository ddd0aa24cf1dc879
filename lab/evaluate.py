"""Evaluation while PPO trains: every `eval_every` steps (and at step 0) a fixed set of held-out prompts is answered
with a fixed seed and scored by the proxy (the reward model PPO optimises), the judge (if any), toxicity, refusal
and degeneration.

The rollout reward on the PPO tab is noisy: each step sees other prompts and other samples. Here every evaluation
answers the same prompts with the same seeds, so the curve moves only when the model does, and the first and the
latest evaluation can be compared prompt by prompt with a bootstrap interval (`trend`). Each evaluation appends one
row to the run's `evals.jsonl` (means, and every answer with its scores: the timeline shows the pinned prompts'
answers) and keeps the adapters in `model/step-N/`, so Compare can pick "ppo-3 @ step 32".
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from lab import diagnostics, relevance
from lab.config import build, from_job, setting
from lab.data import kinds_in, load_prompt_rows, load_prompts
from lab.generate import GenerateConfig, generate_settings
from lab.policies import STEP_DIR, Side, reference_nll, sample
from lab.presets import Limits, Preset, get_preset
from lab.reward_model import format_for_reward, judge_or_none, judge_path
from lab.runs import read_jsonl
from lab.stats import MAX_ANSWERS, bootstrap_mean, per_prompt
from lab.toxicity import get_scorer

EVALS_FILE = "evals.jsonl"
# rows sampled in one generate call: the cpu preset's 24 prompts x 4 answers in one (the fastest on 2 cores); more
# prompts or answers go in chunks, so a 7B model's KV cache on the Space stays the size of one such batch
MAX_ROWS = 96
TRAINING = "default"  # the adapter PPO trains (peft's default name): evaluations sample with it on
MEASURES = {  # key in an evaluation row -> what it is, for plots and words
    "reward": "proxy reward (the reward model PPO optimises)",
    "judge": "judge reward (a reward model PPO never saw)",
    "toxicity": "toxicity",
    "refusal": "refusal rate",
    "degenerate": "degenerate-answer rate",
    "length": "answer length (characters)",
    "relevance": "relevance to the request (lab.relevance: cosine of sentence embeddings, 0-1)",
}


@dataclass
class EvalConfig:
    """Evaluation during PPO; `lab.presets` supplies each machine's defaults (cheap on a CPU)."""

    eval_every: int = setting(16, "evaluate on fixed held-out prompts every N PPO steps (and at step 0); 0 = never",
                              label="evaluate every N steps")
    eval_prompts: str = setting("", "prompt source for the evaluations; empty = the preset's Compare prompts "
                                    "(held out from PPO)", label="evaluation prompts")
    eval_n_prompts: int = setting(12, "prompts answered at each evaluation", label="prompts per evaluation")
    eval_max_new_tokens: int = setting(32, "most new tokens per evaluation answer", label="answer length, tokens")
    eval_temperature: float = setting(0.7, "sampling temperature of the evaluation answers",
                                      label="sampling temperature")
    eval_seed: int = setting(1234, "sampling seed of every evaluation: the same prompts are answered the same way",
                             label="sampling seed")
    eval_pinned: int = setting(3, "prompts whose answers the PPO tab's timeline shows at each evaluation",
                               label="prompts on the timeline")
    eval_save_adapters: bool = setting(True, "keep the adapters at each evaluation (model/step-N/) for Compare",
                                       label="keep the adapters at each evaluation")
    eval_answers_per_prompt: int = setting(
        1, "answers sampled to each prompt at each evaluation (together), averaged per prompt before the proxy's "
           "and the judge's change gets its interval: one answer a prompt leaves mostly the sampling's noise in it "
           "(README, Stop 47)", label="answers per prompt", widget="slider", minimum=1, maximum=MAX_ANSWERS)


def config_from(preset: Preset, **overrides: Any) -> EvalConfig:
    """The dataclass defaults, then the preset's `evaluate` dict (keys with or without the eval_ prefix), then every
    override that is given."""
    defaults = {k if k.startswith("eval_") else f"eval_{k}": v for k, v in preset.evaluate.items()}
    defaults["eval_prompts"] = defaults.get("eval_prompts") or preset.compare_prompts
    return build(EvalConfig, defaults, overrides, "evaluation")


def validate(cfg: EvalConfig, limits: Limits | None = None) -> EvalConfig:
    if cfg.eval_every < 0:
        raise ValueError(f"eval_every {cfg.eval_every} must be 0 (never) or more")
    if cfg.eval_n_prompts < 1 or cfg.eval_max_new_tokens < 1:
        raise ValueError("eval_n_prompts and eval_max_new_tokens must be at least 1")
    if cfg.eval_temperature <= 0:
        raise ValueError(f"eval_temperature {cfg.eval_temperature} must be above 0")
    if not 1 <= cfg.eval_answers_per_prompt <= MAX_ANSWERS:
        raise ValueError(f"eval_answers_per_prompt {cfg.eval_answers_per_prompt} must be between 1 and {MAX_ANSWERS}")
    if limits is not None:
        limits.check({"eval_max_new_tokens": cfg.eval_max_new_tokens, "eval_n_prompts": cfg.eval_n_prompts})
    return cfg


def field_names() -> set[str]:
    return set(EvalConfig.__dataclass_fields__)


def prepare(preset: Preset, values: dict[str, Any], allowed_dirs: list[Path] | None = None) -> dict[str, Any]:
    """A checked evaluation config (EvalConfig fields; None or "" = the preset's); the prompt source must give
    prompts when evaluation is on."""
    cfg = validate(config_from(preset, **{k: v for k, v in values.items() if k in field_names()}), preset.limits)
    if cfg.eval_every:
        load_prompts(cfg.eval_prompts, limit=cfg.eval_n_prompts, allowed_dirs=allowed_dirs)
    return asdict(cfg)


# ---------------------------------------------------------------- one evaluation


def due(step: int, every: int, last: int) -> bool:
    """Evaluate at step 0, every `every` steps, and at the run's last step."""
    return every > 0 and (step % every == 0 or step == last)


def _mean(values: Sequence[Any]) -> float | None:
    real = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(statistics.fmean(real), 5) if real else None


def _se(values: Sequence[Any]) -> float | None:
    real = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return round(statistics.stdev(real) / math.sqrt(len(real)), 5) if len(real) > 1 else None


def score_answers(prompts: Sequence[str], answers: Sequence[str], proxy: Callable | None, judge: Callable | None,
                  toxicity: Any, nll: Callable | None = None,
                  relevant: Callable | None = None) -> list[dict[str, Any]]:
    """One row per answer: prompt, answer, reward, judge, toxicity, refusal (and its rule), degenerate (with the
    reference model's nll when `nll` is given, as in Compare), length, relevance (when `relevant` is given)."""
    prompts, answers = list(prompts), list(answers)
    rewards = proxy(prompts, answers) if proxy else [None] * len(answers)
    judged = judge(prompts, answers) if judge else [None] * len(answers)
    tox = toxicity.score(answers) if toxicity is not None else [None] * len(answers)
    nlls = nll(prompts, answers) if nll else [None] * len(answers)
    rel = relevant(prompts, answers) if relevant else [None] * len(answers)
    rows = []
    for p, a, r, j, t, n, c in zip(prompts, answers, rewards, judged, tox, nlls, rel):
        d = diagnostics.diagnose(a, p, n)
        rows.append({"prompt": p, "answer": a, "reward": None if r is None else round(float(r), 5),
                     "judge": None if j is None else round(float(j), 5),
                     "toxicity": None if t is None else round(float(t), 5), "refusal": d["refusal"],
                     "refusal_rule": d["refusal_rule"], "degenerate": d["degenerate"],
                     "degenerate_reasons": d["degenerate_reasons"], "nll": d["nll"], "length": len(a),
                     "relevance": None if c is None else round(float(c), 4)})
    return rows


def summarize(step: int, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """An evaluation row: the step, the answers `n` and prompts, each measure's mean over every answer (rates for
    refusal and degenerate) and its standard error over prompts (a prompt's answers averaged first: they are not
    independent of each other)."""
    prompts = {a.get("index", i) for i, a in enumerate(answers)}
    row: dict[str, Any] = {"step": step, "n": len(answers), "prompts": len(prompts)}
    averaged = per_prompt(answers)
    for key in MEASURES:
        row[f"eval/{key}"] = _mean([_number(a.get(key)) for a in answers])
        row[f"eval/{key}_se"] = _se([_number(a.get(key)) for a in averaged])
    row["answers"] = answers
    return row


def _number(value: Any) -> Any:
    return float(value) if isinstance(value, bool) else value


class Evaluator:
    """The PPO loop's evaluation hook: `evaluator(step)` answers the fixed prompts when `due`, scores them, appends
    a row to evals.jsonl, keeps the adapters, and passes the row to `on_row`. `should_stop` (the job's Stop) cuts an
    evaluation short: generation ends at the next token and nothing is written, so a half-answered set never reads
    as a measurement."""

    def __init__(self, cfg: EvalConfig, prompts: Sequence[str], answer: Callable[[list[str], int], list[str]],
                 proxy: Callable | None, judge: Callable | None, toxicity: Any, run_dir: Path | None,
                 save_adapters: Callable[[Path], None] | None, last_step: int,
                 on_row: Callable[[dict[str, Any]], None] = lambda row: None, nll: Callable | None = None,
                 relevant: Callable | None = None, kinds: Sequence[str | None] | None = None,
                 should_stop: Callable[[], bool] = lambda: False) -> None:
        self.cfg, self.prompts, self.answer, self.should_stop = cfg, list(prompts), answer, should_stop
        self.kinds = list(kinds) if kinds else [None] * len(self.prompts)  # each prompt's kind of request, if known
        self.proxy, self.judge, self.toxicity, self.nll, self.relevant = proxy, judge, toxicity, nll, relevant
        self.run_dir, self.save_adapters, self.last_step, self.on_row = run_dir, save_adapters, last_step, on_row
        self.rows: list[dict[str, Any]] = []

    def __call__(self, step: int) -> dict[str, Any] | None:
        if not self.prompts or not due(step, self.cfg.eval_every, self.last_step):
            return None
        if any(r["step"] == step for r in self.rows):  # the last step may also be a multiple of eval_every
            return None
        k, n = self.cfg.eval_answers_per_prompt, len(self.prompts)
        batch = self.prompts * k  # the k answers to a prompt together: draw d of prompt i is row d * n + i
        answers: list[str] = []
        for c, start in enumerate(range(0, len(batch), MAX_ROWS)):  # each chunk its own seed: no draw repeats another
            if self.should_stop():
                return None
            answers += self.answer(batch[start:start + MAX_ROWS], self.cfg.eval_seed + c)
        if self.should_stop():  # answers cut at Stop are not the evaluation's: no row
            return None
        scored = score_answers(batch, answers, self.proxy, self.judge, self.toxicity, self.nll, self.relevant)
        for j, answer in enumerate(scored):
            answer["index"] = j % n
            if k > 1:
                answer["draw"] = j // n
            if self.kinds[j % n]:
                answer["kind"] = self.kinds[j % n]
        row = summarize(step, scored)
        if self.run_dir is not None:
            if self.cfg.eval_save_adapters and self.save_adapters is not None:
                self.save_adapters(self.run_dir / "model" / STEP_DIR.format(step))
            append_row(self.run_dir, row)
        self.rows.append(row)
        self.on_row(row)
        return row


def append_row(run_dir: Path, row: dict[str, Any]) -> None:
    with open(Path(run_dir) / EVALS_FILE, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=str) + "\n")


def load_evals(run_dir: Path) -> list[dict[str, Any]]:
    """A PPO run's evaluation rows, in step order ([] when it has none)."""
    return sorted(read_jsonl(Path(run_dir) / EVALS_FILE), key=lambda r: r["step"])


def trend(rows: Sequence[dict[str, Any]], key: str = "reward") -> dict[str, Any] | None:
    """The latest evaluation against the first, prompt by prompt (same prompts, same seed; where each prompt was
    answered several times, its answers' changes averaged): mean change with a bootstrap 95% interval over prompts,
    and whether it rose or fell by more than its noise."""
    if len(rows) < 2:
        return None
    first, last = rows[0]["answers"], rows[-1]["answers"]
    changes = [{"index": a.get("index", i), "draw": a.get("draw"), "d": float(b[key]) - float(a[key])}
               for i, (a, b) in enumerate(zip(first, last)) if a.get(key) is not None and b.get(key) is not None]
    diffs = [c["d"] for c in per_prompt(changes)]
    if not diffs:
        return None
    ci = bootstrap_mean(diffs)
    word = "rose" if ci["lo"] > 0 else "fell" if ci["hi"] < 0 else "did not move by more than its noise"
    return {**ci, "key": key, "from_step": rows[0]["step"], "to_step": rows[-1]["step"], "word": word,
            "answers": round(len(changes) / len(diffs))}


def trend_sentence(rows: Sequence[dict[str, Any]], key: str = "reward") -> str:
    """E.g. "On the 12 fixed prompts the proxy reward rose by +0.41 from step 0 to step 64 (95% CI +0.12 … +0.70):
    more than its noise."""
    t = trend(rows, key)
    if t is None:
        return ""
    what = MEASURES[key].split(" (")[0]
    interval = f"95% CI {t['lo']:+.2f} … {t['hi']:+.2f}"
    each = f" ({t['answers']} answers each)" if t.get("answers", 1) > 1 else ""
    if t["word"] in ("rose", "fell"):
        return (f"On the {t['n']} fixed prompts{each} the {what} {t['word']} by {t['mean']:+.2f} from step "
                f"{t['from_step']} to step {t['to_step']} ({interval}): more than its noise.")
    return (f"On the {t['n']} fixed prompts{each} the {what} changed by {t['mean']:+.2f} from step {t['from_step']} "
            f"to step {t['to_step']} ({interval}): it {t['word']}.")


def rate_changes(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Refusal and degeneration at the latest evaluation against the first, prompt by prompt (Compare's paired
    rates, with the first evaluation as side A): each rate, the counts and B − A with a bootstrap interval."""
    if len(rows) < 2:
        return {}
    pairs = [{f"{key}_{side}": answer.get(key) for key in diagnostics.KEYS for side, answer in (("a", a), ("b", b))}
             # index and draw: with several answers a prompt the intervals are per prompt
             | {"index": a.get("index", i), "draw": a.get("draw")}
             for i, (a, b) in enumerate(zip(rows[0]["answers"], rows[-1]["answers"]))]
    return diagnostics.paired_rates([p for p in pairs if all(p[f"{key}_{side}"] is not None for key in diagnostics.KEYS
                                                             for side in "ab")])


def rate_warnings(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The rises a reader must not miss, in words, with Compare's two rules (diagnostics.rise): beyond the noise
    ("refusals rose to 25% (step 0 8%; 2 → 6 of 24)"), or by at least 5 points and 3 answers inside it ("… (step 0 8%;
    within noise; 2 → 5 of 24)"). Measured: the hh-harmless reward model without evasion pairs took these 24 answers
    from 2 to 6 refusals (README). And a fall of relevance beyond its noise: off-topic answers or refusals (no run
    read blind whose Compare relevance fell beyond noise was preferred to its base: README). Where the prompts say
    their kind of request, a rise confined to one kind is named with it ("on ordinary requests refusals rose to …"):
    refusing ordinary requests is what harmless-only preferences teach, and an average over both kinds halves it."""
    label = f"step {rows[0]['step']}" if rows else ""
    out = []
    t = trend(rows, "relevance")
    if t is not None and t["word"] == "fell":  # off-topic answers or refusals: readers preferred neither (README)
        out.append(f"relevance to the request fell by {t['mean']:+.2f} ({label} → step {t['to_step']}, 95% CI "
                   f"{t['lo']:+.2f} … {t['hi']:+.2f}): answers drifted off their requests")
    out += _rises(rows, label)
    for kind in kinds_of(rows):
        out += [f"on {kind} requests {line}" for line in _rises(only_kind(rows, kind), label)]
    return out


def _rises(rows: Sequence[dict[str, Any]], label: str) -> list[str]:
    changes = rate_changes(rows)
    n = len(rows[-1]["answers"]) if rows else 0
    out = []
    for key, d in changes.items():
        how = diagnostics.rise(d)
        if how:
            noise = "; within noise" if how == "watch" else ""
            out.append(f"{diagnostics.NAMES[key]} rose to {d['b']:.0%} ({label} {d['a']:.0%}{noise}; "
                       f"{d['count_a']} → {d['count_b']} of {n})")
    return out


def kinds_of(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The kinds of request among the evaluation's answers, in order ([] with fewer than two)."""
    return kinds_in(a.get("kind") for a in (rows[0]["answers"] if rows else []))


def only_kind(rows: Sequence[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The evaluation rows of the answers to one kind of prompt (the same prompts at every step), each summarised
    again, so its rates and means are that kind's, not the whole evaluation's."""
    return [summarize(r["step"], [a for a in r["answers"] if a.get("kind") == kind]) for r in rows]


def summary_keys(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """What a PPO run's summary says of its evaluations: first and last means, and the proxy's and the judge's
    change over the fixed prompts with its interval."""
    if not rows:
        return {}
    out: dict[str, Any] = {"evals": len(rows), "eval_steps": [r["step"] for r in rows]}
    for key in MEASURES:
        # .get: a run from before a measure existed has no column for it
        out[f"eval_{key}_first"], out[f"eval_{key}_last"] = rows[0].get(f"eval/{key}"), rows[-1].get(f"eval/{key}")
    for key in ("reward", "judge", "relevance"):
        t = trend(rows, key)
        if t is not None:
            out[f"eval_{key}_change"] = {k: t[k] for k in ("mean", "lo", "hi", "n", "word")}
    out["eval_sentence"] = trend_sentence(rows, "reward")
    warnings = rate_warnings(rows)
    if warnings:
        out["eval_warnings"] = warnings
    return out


def timeline(rows: Sequence[dict[str, Any]], pinned: int = 3) -> list[dict[str, Any]]:
    """`pinned` prompts, spread over the evaluation's prompts (see spread), with their (first) answer at each
    evaluation: [{prompt, answers: [{step, answer, reward, judge, refusal, degenerate}]}]."""
    if not rows:
        return []
    out = []
    n = sum(not a.get("draw") for a in rows[0]["answers"])  # the first answers to each prompt come first
    for i in sorted({j * n // pinned for j in range(min(pinned, n))}):
        first = rows[0]["answers"][i]
        answers = [{"step": r["step"], **{k: r["answers"][i].get(k) for k in
                                          ("answer", "reward", "judge", "refusal", "degenerate", "relevance")}}
                   for r in rows if i < len(r["answers"])]
        out.append({"prompt": first["prompt"], "answers": answers})
    return out


# ---------------------------------------------------------------- wiring into the PPO job

EVAL_POOL = 8  # prompts read per evaluation prompt; the evaluation takes an even spread of them


def spread(items: Sequence[Any], n: int) -> list[Any]:
    """n items evenly spaced through the list, the first included: prompt files are often grouped by kind (the
    bundled held-out prompts are 24 provocative then 24 ordinary), so the first n would be of one kind only."""
    if len(items) <= n:
        return list(items)
    return [items[i * len(items) // n] for i in range(n)]


def evaluator_for_job(ctx: Any, model: Any, tokenizer: Any, score_fn: Callable, last_step: int) -> Evaluator | None:
    """The Evaluator of a PPO job from its config's `evaluate` dict (None when evaluation is off): the fixed
    prompts, sampled through lab.policies (the training adapter on) with the fixed seed, the proxy PPO uses, the judge named for its reward
    model (its judge/ folder, else the preset's), the preset's toxicity scorer, and relevance by the run's own
    encoder (its relevance_model, else the preset's)."""
    values = ctx.config.get("evaluate")
    if not values:
        return None
    cfg = from_job(EvalConfig, values)
    if cfg.eval_every <= 0:
        return None
    preset = get_preset(ctx.config.get("preset") or None)
    pool = load_prompt_rows(cfg.eval_prompts or preset.compare_prompts, limit=EVAL_POOL * cfg.eval_n_prompts)
    chosen = spread(pool, cfg.eval_n_prompts)
    prompts, kinds = [p for p, _ in chosen], [k for _, k in chosen]
    # Compare's sampling settings from the preset (top-k, top-p, repetition penalty, ...), so an evaluation reads like
    # a comparison; its own length, temperature and one batch
    gen = GenerateConfig.from_dict(generate_settings(preset, {"max_new_tokens": cfg.eval_max_new_tokens,
                                                              "temperature": cfg.eval_temperature,
                                                              "batch_size": len(prompts)}))

    policy = str(ctx.config.get("policy") or preset.policy)
    side = Side(TRAINING, "training", policy, ctx.run.model_dir, str(ctx.config.get("reward_model") or ""))

    def answer(batch: list[str], seed: int) -> list[str]:
        ctx.set_progress(ctx.progress, "evaluating on the fixed prompts")
        # the evaluation's own seed, without moving PPO's random stream: its rollouts are those of a run without it
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count()))):
            return sample(side, {policy: (model, tokenizer)}, batch, gen, seed, should_stop=lambda: ctx.stopping)

    spec = ctx.config.get("judge") or judge_path(ctx.config.get("reward_model"), preset.judge)
    judge_model = judge_or_none(spec, ctx.set_progress)

    def judge(ps: list[str], answers: list[str]) -> list[float]:
        return judge_model.score([format_for_reward(p, a) for p, a in zip(ps, answers)])

    def nll(ps: list[str], answers: list[str]) -> list[float | None]:  # the reference PPO is held to: adapters off
        return reference_nll(side, {policy: (model, tokenizer)}, ps, answers)

    return Evaluator(cfg, prompts, answer, score_fn, judge if judge_model else None, get_scorer(preset.toxicity),
                     ctx.run.path, model.save_pretrained, last_step, nll=nll,
                     relevant=relevance.scorer_or_none(ctx.config.get("relevance_model") or preset.relevance,
                                                       ctx.set_progress), kinds=kinds,
                     should_stop=lambda: ctx.stopping)
