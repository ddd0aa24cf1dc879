"""The Feedback tab's job: both models answer prompts, and each pair joins a feedback set's queue (sides shuffled),
ready to vote on. The set itself (votes, tallies, export) is `lab.votes`."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from lab.config import build, from_job, setting
from lab.data import load_prompts
from lab.generate import GenerateConfig, auto_batch_size, generate_settings, plan_batches
from lab.jobs import JobContext
from lab.policies import BASE, Side, load_policies, open_ppo_run, resolve_sides, sample
from lab.presets import Limits, Preset
from lab.votes import FeedbackSet, add_pairs, check_name, create_set, shuffle_sides

KIND = "feedback"
SECOND_SAMPLE_SEED = 10_000  # two samples of one model: the second uses seed + this
CUT_MARK = "…"  # ends an answer cut at the token limit: a voter sees it was cut, not finished

@dataclass
class FeedbackConfig:
    """The pair-generation job's settings."""

    name: str = setting("", "the feedback set the pairs go to (pick one, or type a new name: made if new)",
                        label="Feedback set", widget="dropdown")
    model_a: str = setting("base", "'base' (the policy, adapters off) or a PPO run id/folder", label="Model 1",
                           widget="dropdown")
    model_b: str = setting("base", "the same as model_a = two samples of one model (different seeds)",
                           label="Model 2", widget="dropdown")
    policy: str = setting("", "the base policy when both models are 'base' (a PPO run brings its own)")
    prompts: str = setting("bundled", "any prompt source: 'bundled', 'bundled:heldout', a file or a hub id",
                           label="Prompts", widget="dropdown")
    n_pairs: int = setting(16, "new pairs to generate (prompts already in the set are skipped)",
                           label="Pairs to generate", widget="slider", minimum=1, maximum=200)
    generate: dict[str, Any] = setting({}, "lab.generate.GenerateConfig fields")
    quantize_4bit: bool = setting(False, "load the policy in 4-bit NF4 (CUDA only)", cli=False)
    max_pairs: int = setting(100, "cap for the automatic batch size (the preset's limit on prompts)", cli=False)


def config_from(preset: Preset, **overrides: Any) -> FeedbackConfig:
    """The preset's defaults for this stage, then every override that is given."""
    gen = generate_settings(preset, overrides.pop("generate", None) or {})
    defaults = {"policy": preset.policy, "prompts": preset.compare_prompts, "quantize_4bit": preset.quantize_4bit,
                "max_pairs": preset.limits.max_prompts}
    return replace(build(FeedbackConfig, defaults, overrides, "feedback"), generate=gen)


def validate(cfg: FeedbackConfig, limits: Limits | None = None) -> FeedbackConfig:
    """Check the set name, the models and the ranges (and the preset's limits) before anything loads."""
    check_name(cfg.name)
    gen = GenerateConfig.from_dict(cfg.generate).validate()
    if cfg.n_pairs < 1:
        raise ValueError(f"number of pairs {cfg.n_pairs} must be at least 1")
    if limits is not None:
        limits.check({"n_pairs": cfg.n_pairs, **asdict(gen)})
    if not cfg.model_a.strip() or not cfg.model_b.strip():
        raise ValueError("choose two models: 'base' and/or PPO runs (the same one twice = two samples of it)")
    return cfg


def prepare(preset: Preset, values: dict[str, Any], root: Path | None = None) -> dict[str, Any]:
    """A checked pair-generation job config from the Feedback tab's values (FeedbackConfig fields; None or "" = the
    preset's): the set name, ranges and limits, and the two models, before any model loads."""
    cfg = validate(config_from(preset, **values), preset.limits)
    resolve_models(cfg, root)  # a missing run fails here, before the job starts
    return asdict(cfg)


def resolve_models(cfg: FeedbackConfig, root: Path | None = None) -> tuple[Any, Any]:
    """The two sides as lab.policies' `Side`s; one model chosen twice gives the same side twice."""
    a, b = cfg.model_a.strip(), cfg.model_b.strip()
    if a != b:
        return resolve_sides(a, b, root)
    if a == BASE:
        if not cfg.policy:
            raise ValueError("both models are 'base' but no policy is given")
        side = Side("a", BASE, cfg.policy, None, "")
    else:
        run = open_ppo_run(a, root)
        side = Side("a", run.id, run.config["policy"], run.model_dir, "")
    return side, side


def new_prompts(cfg: FeedbackConfig, fs: FeedbackSet) -> list[str]:
    """The next `n_pairs` prompts of the source that have no pair in the set yet."""
    used = {p["prompt"] for p in fs.pairs()}
    fresh = [p for p in load_prompts(cfg.prompts, limit=len(used) + cfg.n_pairs) if p.strip() not in used]
    if not fresh:
        raise ValueError(f"every prompt of '{cfg.prompts}' already has a pair in set '{fs.name}': "
                         "choose another prompt source")
    return fresh[: cfg.n_pairs]


def generate_pairs(ctx: JobContext) -> dict[str, Any]:
    """The feedback job: both models answer the prompts batch by batch; each batch joins the set's queue at once."""
    cfg = validate(from_job(FeedbackConfig, ctx.config))
    gen = GenerateConfig.from_dict(cfg.generate)
    # 1. the set, the prompts and the models
    fs = create_set(cfg.name, ctx.run.path.parent)
    prompts = new_prompts(cfg, fs)
    sides = resolve_models(cfg, ctx.run.path.parent)
    same = sides[0] == sides[1]
    labels = [f"{s.label} (sample {i})" for i, s in enumerate(sides, 1)] if same else [s.label for s in sides]
    ctx.set_progress(0, "loading the models")
    policies = load_policies(tuple(dict.fromkeys(sides)), cfg.quantize_4bit, gen.precision)
    seed = gen.seed + len(fs.pairs())  # a second round on the same set samples afresh
    rng = random.Random(seed)
    model, tokenizer = policies[sides[0].policy]
    size = gen.batch_size or auto_batch_size(model, gen.max_new_tokens + 256, cfg.max_pairs)
    added = skipped = 0
    # 2. one batch at a time: both answers, sides shuffled, appended to the queue
    for b, idx in enumerate(plan_batches(tokenizer, prompts, size)):
        ctx.check_stop()
        batch = [prompts[i] for i in idx]
        answers = []
        for k, side in enumerate(sides):
            sample_seed = seed + b + (SECOND_SAMPLE_SEED * k if same else 0)  # same model: a different sample
            answers.append(sample(side, policies, batch, gen, sample_seed, cut_mark=CUT_MARK))
        rows = [{"prompt": p, "answer_a": a, "answer_b": bb, "model_a": labels[0], "model_b": labels[1]}
                for p, a, bb in zip(batch, *answers) if a.strip() and bb.strip() and a.strip() != bb.strip()]
        skipped += len(batch) - len(rows)
        added += len(add_pairs(fs, shuffle_sides(rows, rng)))
        ctx.log({"batch": b + 1, "pairs": added, "skipped": skipped})
        ctx.set_progress((added + skipped) / len(prompts), f"{added} pairs ready")
    return {"set": fs.name, "pairs": added, "skipped_empty_or_identical": skipped, "model_a": labels[0],
            "model_b": labels[1], "prompts": cfg.prompts}
