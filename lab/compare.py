"""Compare two models on the same prompts: base (LoRA off) vs a PPO run, or run vs run; toxicity and reward for each.

Both models sample with the same settings and the same per-batch seeds. Results go to the compare run folder:
`samples.jsonl` (one row per prompt, appended batch by batch) and `results.csv`, so the tab can reopen them.
"""

from __future__ import annotations

import csv
import functools
import statistics
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from lab import models
from lab.config import build, from_job, setting
from lab.data import hub_files, load_prompts, resolve_path
from lab.generate import GenerateConfig, adapter_mode, auto_batch_size, generate_batch, generate_settings, load_dtype
from lab.generate import plan_batches
from lab.jobs import JobContext
from lab.presets import Limits, Preset
from lab.runs import ACTIVE, Run, list_runs, open_run, runs_root
from lab.stats import paired_summary
from lab.toxicity import get_scorer

KIND = "compare"
PPO_KIND = "ppo"
BASE = "base"
RESULTS_FILE = "results.csv"
CSV_COLUMNS = ["index", "prompt", "model_a", "answer_a", "toxicity_a", "reward_a",
               "model_b", "answer_b", "toxicity_b", "reward_b", "toxicity_drop", "reward_gain"]


@dataclass
class CompareConfig:
    """The compare job's settings; `lab.presets` supplies the machine's defaults."""

    model_a: str = setting(BASE, "Model A: 'base' (the policy with its LoRA adapters off) or another PPO run "
                                 "(folder or id)")
    model_b: str = setting("", "Model B: a PPO run (folder or id), or 'base'")
    prompts: str = setting("bundled", "prompt source: 'bundled', a .jsonl/.csv file, or a hub id (ignored when "
                                      "custom_prompts is given)")
    custom_prompts: list[str] = setting([], "prompts typed by the user")
    n_prompts: int = setting(32, "how many prompts from the source")
    toxicity: str = setting("offline", "toxicity scorer: 'roberta', 'offline' or a local classifier folder")
    reward_model: str = setting("", "reward-model folder or run id; empty = the one the PPO run trained against")
    generate: dict[str, Any] = setting({}, "lab.generate.GenerateConfig fields, the same for both models")
    quantize_4bit: bool = setting(False, "load the policy in 4-bit NF4 (CUDA only)", cli=False)
    max_batch_size: int = setting(64, "cap for the automatic batch size (the preset's limit)", cli=False)


@dataclass(frozen=True)
class Side:
    """One model of the comparison: a policy, with one PPO run's adapters or with none (the base)."""

    key: str  # "a" or "b": the adapter name too
    label: str  # "base" or the run id
    policy: str  # model spec
    adapter_dir: Path | None
    reward_model: str  # the reward model its run trained against ("" for the base)


def config_from(preset: Preset, **overrides: Any) -> CompareConfig:
    """The preset's defaults for this stage, then every override that is given; GenerateConfig fields may come
    flat (as the form and the flags give them) or in `generate`."""
    gen_names = {f.name for f in fields(GenerateConfig)}
    flat = {k: overrides.pop(k) for k in list(overrides) if k in gen_names}
    gen = generate_settings(preset, {**(overrides.pop("generate", None) or {}), **flat})
    defaults: dict[str, Any] = {
        "prompts": preset.compare_prompts, "toxicity": preset.toxicity, "quantize_4bit": preset.quantize_4bit,
        "n_prompts": preset.generate.get("n_prompts", 32), "max_batch_size": preset.limits.max_batch_size,
    }
    return replace(build(CompareConfig, defaults, overrides, "compare"), generate=gen)


def validate(cfg: CompareConfig, limits: Limits | None = None) -> CompareConfig:
    """Check ranges (and the preset's limits) before anything loads; ValueError says which value and what is
    allowed."""
    gen = GenerateConfig.from_dict(cfg.generate).validate()
    if cfg.custom_prompts:
        cfg.custom_prompts = [p.strip() for p in cfg.custom_prompts if p and p.strip()]
        if not cfg.custom_prompts:
            raise ValueError("the typed prompts are all empty: write one prompt per line")
    if cfg.n_prompts < 1:
        raise ValueError(f"number of prompts {cfg.n_prompts} must be at least 1")
    if limits is not None:
        limits.check({"n_prompts": cfg.n_prompts, **asdict(gen)})
    if not (cfg.model_a or "").strip() or not (cfg.model_b or "").strip():
        raise ValueError("choose two models: 'base' and/or PPO runs")
    if cfg.model_a.strip() == BASE and cfg.model_b.strip() == BASE:
        raise ValueError("both models are 'base': choose a PPO run for Model A or Model B")
    return cfg


def check_prompt_source(source: str, allowed_dirs: list[Path] | None = None) -> None:
    """A prompt file must exist (within the allowed folders); a hub id needs the hub."""
    if source.startswith("bundled") or resolve_path(source, allowed_dirs) is not None:
        return
    if hub_files(source) is None:  # no plain data files: `datasets` reads it, from the hub
        models.require_hub(source)


def prepare(preset: Preset, values: dict[str, Any], allowed_dirs: list[Path] | None = None,
            root: Path | None = None) -> dict[str, Any]:
    """A checked compare job config from a form's or the command line's values (CompareConfig and GenerateConfig
    fields; None or "" = the preset's): ranges and limits, the two runs, the reward model and the prompt source,
    before any model loads. Runs and the reward model are stored as folders, so the job finds them from anywhere."""
    cfg = validate(config_from(preset, **values), preset.limits)
    if not cfg.custom_prompts:
        check_prompt_source(cfg.prompts, allowed_dirs)
    sides = resolve_sides(cfg, root)
    cfg.reward_model = reward_model_path(cfg, sides, root)
    cfg.model_a, cfg.model_b = (BASE if s.adapter_dir is None else str(s.adapter_dir.parent) for s in sides)
    return asdict(cfg)


# ---------------------------------------------------------------- the two models


def ppo_runs(root: Path | None = None) -> list[Run]:
    """Finished PPO runs that saved adapters, newest first."""
    runs = list_runs(kind=PPO_KIND, root=root)
    return [r for r in runs if _adapter_ready(r) and r.status().get("status") not in ACTIVE]


def _adapter_ready(run: Run) -> bool:
    return (run.model_dir / "adapter_config.json").exists()


def open_ppo_run(choice: str, root: Path | None = None) -> Run:
    """A PPO run by id or folder; ValueError says what is missing."""
    run = open_run(choice.strip(), root)
    config = run.config
    if not config.get("policy"):
        raise ValueError(f"run '{run.id}' has no 'policy' in its config.json: is it a PPO run?")
    if not _adapter_ready(run):
        raise ValueError(
            f"run '{run.id}' has no saved adapters (model/adapter_config.json): is the PPO run finished?"
        )
    return run


def resolve_sides(cfg: CompareConfig, root: Path | None = None) -> tuple[Side, Side]:
    """Model A and Model B; 'base' means the policy of the other side's run with its adapters disabled."""
    choices = {"a": cfg.model_a.strip(), "b": cfg.model_b.strip()}
    runs = {k: None if c == BASE else open_ppo_run(c, root) for k, c in choices.items()}
    policy_of = {k: r.config["policy"] for k, r in runs.items() if r is not None}
    sides = []
    for key, run in runs.items():
        if run is None:
            other = policy_of["b" if key == "a" else "a"]
            sides.append(Side(key, BASE, other, None, ""))
        else:
            reward = str(run.config.get("reward_model") or "")
            sides.append(Side(key, run.id, run.config["policy"], run.model_dir, reward))
    return sides[0], sides[1]


def load_policies(sides: tuple[Side, Side], quantize_4bit: bool, precision: str = "auto") -> dict[str, tuple[Any, Any]]:
    """One model per distinct policy, carrying the adapters of every run that uses it (named by side key)."""
    from peft import PeftModel

    loaded: dict[str, tuple[Any, Any]] = {}
    for policy in dict.fromkeys(s.policy for s in sides):
        model = models.load_causal_lm(policy, quantize_4bit=quantize_4bit, dtype=load_dtype(precision))
        for side in (s for s in sides if s.policy == policy and s.adapter_dir is not None):
            if isinstance(model, PeftModel):
                model.load_adapter(str(side.adapter_dir), adapter_name=side.key, is_trainable=False)
            else:
                model = PeftModel.from_pretrained(model, str(side.adapter_dir), adapter_name=side.key)
        loaded[policy] = (model.eval(), models.load_tokenizer(policy))
    return loaded


# ---------------------------------------------------------------- reward and prompts


def load_reward(path: str) -> Any:
    """The run's reward model (lab.reward): an object whose `.score(texts)` gives one float per text."""
    from lab.reward import load_reward_model

    return load_reward_model(path)


def reward_texts(prompts: list[str], answers: list[str]) -> list[str]:
    from lab.reward import format_for_reward

    return [format_for_reward(p, a) for p, a in zip(prompts, answers)]


def reward_model_path(cfg: CompareConfig, sides: tuple[Side, Side], root: Path | None = None) -> str:
    """The chosen reward model, else the one Model B's run trained against, else Model A's ("" = none)."""
    path = cfg.reward_model.strip() or sides[1].reward_model or sides[0].reward_model
    if not path or Path(path).expanduser().exists():
        return path
    by_id = (Path(root) if root else runs_root()) / path  # a run id rather than a folder
    if by_id.exists():
        return str(by_id)
    raise ValueError(f"reward model '{path}' does not exist (moved or deleted?): choose another with --reward-model")


def get_prompts(cfg: CompareConfig, allowed_dirs: list[Path] | None = None) -> list[str]:
    """The typed prompts, or the first n of the source (hh-rlhf pairs give their first human turn)."""
    if cfg.custom_prompts:
        return cfg.custom_prompts[: cfg.n_prompts]
    return load_prompts(cfg.prompts, limit=cfg.n_prompts, allowed_dirs=allowed_dirs)[: cfg.n_prompts]


# ---------------------------------------------------------------- results


def _mean(values: list[Any]) -> float | None:
    real = [float(v) for v in values if isinstance(v, (int, float))]
    return round(statistics.fmean(real), 6) if real else None


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean toxicity and reward per model, and how often B beats A."""
    out: dict[str, Any] = {"n": len(rows)}
    for key in ("a", "b"):
        out[f"toxicity_{key}"] = _mean([r.get(f"toxicity_{key}") for r in rows])
        out[f"reward_{key}"] = _mean([r.get(f"reward_{key}") for r in rows])
    out["b_less_toxic"] = sum(r["toxicity_b"] < r["toxicity_a"] for r in rows)
    scored = [r for r in rows if all(isinstance(r.get(k), (int, float)) for k in ("reward_a", "reward_b"))]
    out["b_higher_reward"] = sum(r["reward_b"] > r["reward_a"] for r in scored) if scored else None
    return out


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """One results.csv row: the sample plus B − A differences (positive drop = B less toxic)."""
    out = {k: row.get(k) for k in CSV_COLUMNS}
    out["toxicity_drop"] = row["toxicity_a"] - row["toxicity_b"]
    has_reward = isinstance(row.get("reward_a"), (int, float)) and isinstance(row.get("reward_b"), (int, float))
    out["reward_gain"] = row["reward_b"] - row["reward_a"] if has_reward else None
    return out


def write_csv(rows: list[dict[str, Any]], path: Path) -> Path:
    """The comparison table, in prompt order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        for row in sorted(rows, key=lambda r: r["index"]):
            writer.writerow(csv_row(row))
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- the job


def run_compare(ctx: JobContext) -> dict[str, Any]:
    """The compare job: both models answer the same prompts batch by batch; each answer gets toxicity and reward."""
    started = time.time()
    cfg = validate(from_job(CompareConfig, ctx.config))
    gen = GenerateConfig.from_dict(cfg.generate)
    # 1. prompts and models
    ctx.set_progress(0, "loading prompts")
    prompts = get_prompts(cfg)
    sides = resolve_sides(cfg, ctx.run.path.parent)
    ctx.set_progress(0, "loading the models")
    policies = load_policies(sides, cfg.quantize_4bit, gen.precision)
    scorer = get_scorer(cfg.toxicity)
    reward_path = reward_model_path(cfg, sides, ctx.run.path.parent)
    reward_model = load_reward(reward_path) if reward_path else None
    model, tokenizer = policies[sides[0].policy]
    size = gen.batch_size or auto_batch_size(model, gen.max_new_tokens + 256, cfg.max_batch_size)
    batches = plan_batches(tokenizer, prompts, size)
    # 2. generate and score, one batch at a time, so Stop keeps every finished batch
    rows: list[dict[str, Any]] = []
    for b, idx in enumerate(batches):
        if ctx.stopping:
            break
        say = functools.partial(_say, ctx, len(rows) / len(prompts), f"batch {b + 1}/{len(batches)}")
        batch = _compare_batch(sides, policies, [prompts[i] for i in idx], idx, gen, gen.seed + b, scorer, reward_model,
                               say)
        rows += batch
        ctx.log_samples(batch)
        ctx.log({"batch": b + 1, "done": len(rows), **{k: v for k, v in summarize(rows).items() if k != "n"}})
        ctx.set_progress(len(rows) / len(prompts), f"{len(rows)}/{len(prompts)} prompts compared")
    # 3. the table and the summary
    write_csv(rows, ctx.run.path / RESULTS_FILE)
    summary = {
        **summarize(rows), "model_a": sides[0].label, "model_b": sides[1].label, "policy": sides[1].policy,
        "scorer": scorer.name, "scorer_description": scorer.description, "scorer_fallback": scorer.fallback_reason,
        "reward_model": reward_path or None, "prompts": "typed" if cfg.custom_prompts else cfg.prompts,
        "seconds": round(time.time() - started, 1), "paired": paired_summary(rows),
    }
    if sides[0].label == BASE:  # the headline numbers: base vs RLHF
        summary.update({"toxicity_base": summary["toxicity_a"], "toxicity_rlhf": summary["toxicity_b"],
                        "reward_base": summary["reward_a"], "reward_rlhf": summary["reward_b"]})
    return summary


def _say(ctx: JobContext, fraction: float, prefix: str, what: str) -> None:
    ctx.set_progress(fraction, f"{prefix}: {what}")


def _compare_batch(sides: tuple[Side, Side], policies: dict[str, tuple[Any, Any]], prompts: list[str],
                   indices: list[int], gen: GenerateConfig, seed: int, scorer: Any, reward_model: Any,
                   say: Callable[[str], None]) -> list[dict]:
    """Rows for one batch: both sides sample with the same seed, then toxicity and reward for each answer."""
    rows = [{"index": i, "prompt": p, "model_a": sides[0].label, "model_b": sides[1].label}
            for i, p in zip(indices, prompts)]
    for side in sides:
        say(f"Model {side.key.upper()} ({side.label}) is answering")
        model, tokenizer = policies[side.policy]
        with adapter_mode(model, side.key if side.adapter_dir else None):
            answers = generate_batch(model, tokenizer, prompts, gen, seed)
        toxicity = scorer.score(answers)
        rewards = reward_model.score(reward_texts(prompts, answers)) if reward_model else [None] * len(answers)
        for row, answer, tox, rew in zip(rows, answers, toxicity, rewards):
            row.update({f"answer_{side.key}": answer, f"length_{side.key}": len(answer),
                        f"toxicity_{side.key}": float(tox), f"reward_{side.key}": None if rew is None else float(rew)})
    return rows


# ---------------------------------------------------------------- reading a finished comparison


def load_results(run: Run) -> list[dict[str, Any]]:
    """The rows of a compare run (complete or partial), in prompt order."""
    rows = [r for r in run.samples() if "answer_a" in r and "answer_b" in r]
    return sorted(rows, key=lambda r: r.get("index", 0))
