"""`python -m lab`: the lab's jobs headless, for teachers preparing a workshop and for benchmarks.

The only module with the command line: a stage's flags come from its config dataclass (the help in field metadata),
and its values go through the same `<stage>.prepare(preset, values)` as the tab's form. Every command prints JSON
lines on stdout; bad input (a ValueError, before or during the job) prints one line on stderr and exits 2, a job
that fails for another reason exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from lab import compare, evaluate, feedback, ppo, reward, reward_eval, votes
from lab.config import field_default, field_type, user_fields
from lab.generate import GenerateConfig
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.reward_model import load_reward_model, refusal_warning
from lab.sources import load_pairs
from lab.space import build_space


PRESET_HELP = "a100 or cpu (default: LAB_PRESET, else by CUDA availability)"


class JobFailed(Exception):
    """A headless job failed for a reason other than bad input (exit 1)."""


def emit(row: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed so a pipe sees it at once."""
    print(json.dumps(row, default=float), flush=True)


def run_job(kind: str, fn: Callable, config: dict[str, Any], out: str | None = None,
            on_metrics: Callable[[dict], None] | None = emit) -> Any:
    """Run one job to its end in this process (in the run folder `out` if given) and return it; a failure re-raises
    the job's ValueError (bad input it found: exit 2), else raises JobFailed (exit 1)."""
    path = Path(out).expanduser().resolve() if out else None
    manager = JobManager(root=path.parent if path else None, mark_interrupted=False)
    job = manager.run_sync(kind, fn, config, on_metrics=on_metrics, path=path)
    if job.status == "failed":
        if isinstance(job.exception, (ValueError, FileNotFoundError)):
            raise job.exception
        raise JobFailed(job.error)
    return job


# ---------------------------------------------------------------- flags from config dataclasses


def add_config_flags(p: argparse.ArgumentParser, cls: type, names: dict[str, Sequence[str]] | None = None,
                     required: Sequence[str] = (), exclusive: Sequence[str] = ()) -> None:
    """A flag per user-set field of cls (`--field-name`, or the names given), help from its metadata, default None
    (= the preset's); fields in `exclusive` share a mutually exclusive group."""
    group = p.add_mutually_exclusive_group() if exclusive else None
    for f in user_fields(cls):
        flags = (names or {}).get(f.name) or ["--" + f.name.replace("_", "-")]
        kind = field_type(f)
        help_text = f.metadata["help"]
        target = group if f.name in exclusive else p
        if kind is bool:
            target.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                help=help_text)
        elif f.name in required:
            target.add_argument(*flags, dest=f.name, type=kind, required=True, help=help_text)
        else:
            target.add_argument(*flags, dest=f.name, type=kind, default=None,
                                help=f"{help_text} (default: the preset's, else {field_default(f)!r})")


def config_values(args: argparse.Namespace, *classes: type, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The values of the config flags (and the `extra` ones) as given; None = not given."""
    names = [f.name for cls in classes for f in user_fields(cls)] + list(extra)
    return {name: getattr(args, name) for name in names}


@dataclass(frozen=True)
class Stage:
    """A job command: its flags, how its values become a checked job config, and what it prints at the end."""

    help: str
    add: Callable[[argparse.ArgumentParser], None]
    prepare: Callable[[argparse.Namespace], dict[str, Any]]  # args -> checked job config
    finish: Callable[[argparse.Namespace, dict[str, Any]], Any]  # args, config -> the finished job


# ---------------------------------------------------------------- reward and score


def _add_reward(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, reward.RewardConfig, required=["data"], exclusive=["eval_data", "eval_fraction"],
                     names={"data": ["--train"], "eval_data": ["--eval"], "learning_rate": ["--lr", "--learning-rate"]})
    p.add_argument("--out", metavar="DIR", help="new run folder (default: a new folder under LAB_RUNS_DIR or runs/)")


def _prepare_reward(args: argparse.Namespace) -> dict[str, Any]:
    return reward.prepare(args.preset_obj, config_values(args, reward.RewardConfig))


def _finish_reward(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    job = run_job(reward.KIND, reward.train_reward, config, args.out)
    keys = ("eval_accuracy", "eval_loss", "eval_broken_accuracy", "eval_policy_accuracy", "refusal_preference",
            "train_pairs", "eval_pairs", "steps", "seconds", "members", "subsets", "judge_pairs", "judge_eval_accuracy")
    emit({**{k: job.summary.get(k) for k in keys}, "status": job.status, "run": str(job.run.path)})
    return job


def _add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reward-model", required=True, metavar="DIR", help="a reward run folder or its model/ folder")
    p.add_argument("source", help="pairs to score: 'bundled', 'bundled:test', a file or a hub id")
    p.add_argument("--limit", type=int, help="score at most this many pairs")
    p.add_argument("--batch-size", type=int, default=32)


def _run_score(args: argparse.Namespace) -> int:
    if args.batch_size < 1:
        raise ValueError(f"batch size {args.batch_size} must be at least 1")
    pairs = load_pairs(args.source, limit=args.limit).pairs
    metrics, _ = reward_eval.evaluate(load_reward_model(args.reward_model), pairs, args.batch_size)
    emit({"pairs": len(pairs), "accuracy": metrics["eval_accuracy"], "mean_margin": metrics["eval_margin"]})
    return 0


# ---------------------------------------------------------------- ppo


def _add_ppo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reward-model", required=True, metavar="RUN_DIR", help="a reward run folder (or its run id)")
    p.add_argument("--prompts", metavar="SOURCE", help="prompt source (default: the preset's ppo_prompts)")
    p.add_argument("--policy", metavar="SPEC", help="policy model (default: the preset's)")
    p.add_argument("--out", metavar="DIR", help="new run folder (default: a new folder under LAB_RUNS_DIR or runs/)")
    p.add_argument("--max-prompts", type=int, help="use at most this many prompts")
    add_config_flags(p, ppo.PPOConfig)
    add_config_flags(p, evaluate.EvalConfig)


def _prepare_ppo(args: argparse.Namespace) -> dict[str, Any]:
    return ppo.prepare(args.preset_obj, config_values(args, ppo.PPOConfig, evaluate.EvalConfig, extra=ppo.JOB_KEYS))


def _finish_ppo(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    warning = refusal_warning(config["reward_model"])
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    missing, suggestion = ppo.own_requests(config["reward_model"], config.get("prompts") or "")
    if suggestion:
        print(f"note: {ppo.own_requests_note(missing, suggestion)}", file=sys.stderr, flush=True)
    elif not (args.prompts or "").strip() and config["prompts"] != args.preset_obj.ppo_prompts:
        print(f"note: prompts '{config['prompts']}': {ppo.JOINED_NOTE} --prompts {args.preset_obj.ppo_prompts} leaves "
              "them out.", file=sys.stderr, flush=True)
    job = run_job(ppo.KIND, ppo.train_ppo, config, args.out)
    emit({**job.summary, "status": job.status, "run": str(job.run.path)})
    return job


# ---------------------------------------------------------------- compare


def _add_compare(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, compare.CompareConfig, required=["model_b"],
                     names={"model_b": ["--run"], "model_a": ["--against"], "n_prompts": ["--n"]})
    add_config_flags(p, GenerateConfig)
    p.add_argument("--out", metavar="FILE.csv", help="also write the table here (it is always in the run folder)")


def _prepare_compare(args: argparse.Namespace) -> dict[str, Any]:
    out = Path(args.out).expanduser() if args.out else None
    if out is not None and out.is_dir():
        raise ValueError(f"--out '{args.out}' is a folder: give a file name such as results.csv")
    return compare.prepare(args.preset_obj, config_values(args, compare.CompareConfig, GenerateConfig))


def _finish_compare(args: argparse.Namespace, config: dict[str, Any]) -> Any:
    job = run_job(compare.KIND, compare.run_compare, config, on_metrics=None)
    out = Path(args.out).expanduser() if args.out else None
    if out is not None:
        compare.write_csv(compare.load_results(job.run), out)
    s = job.summary
    # "_base" / "_rlhf" are Model A / Model B (their usual roles); model_a / model_b say which models they were
    emit({"n": s.get("n"), "answers": s.get("answers", s.get("n")), "answers_per_prompt": s.get("answers_per_prompt"),
          "model_a": s.get("model_a"), "model_b": s.get("model_b"), "kl_a": s.get("kl_a"),
          "kl_b": s.get("kl_b"), "toxicity_base": s.get("toxicity_a"), "toxicity_rlhf": s.get("toxicity_b"),
          "reward_base": s.get("reward_a"), "reward_rlhf": s.get("reward_b"), "scorer": s.get("scorer"),
          "seconds": s.get("seconds"), "scorer_fallback": s.get("scorer_fallback"), "paired": s.get("paired"),
          "prompts": s.get("prompts"), "judge": s.get("judge"), "paired_judge": s.get("paired_judge"),
          "refusal_base": s.get("refusal_a"), "refusal_rlhf": s.get("refusal_b"),
          "degenerate_base": s.get("degenerate_a"), "degenerate_rlhf": s.get("degenerate_b"),
          "relevance_base": s.get("relevance_a"), "relevance_rlhf": s.get("relevance_b"),
          "paired_relevance": s.get("paired_relevance"), "familiarity": {k: v for k, v in (
              s.get("familiarity") or {}).items() if k != "far_prompts"} or None,
          "diagnostics": s.get("diagnostics"), "verdict": s.get("verdict"), "status": job.status,
          "run": str(job.run.path), "out": str(out) if out else None})
    return job


STAGES: dict[str, Stage] = {
    "reward": Stage("train a reward model on preference pairs", _add_reward, _prepare_reward, _finish_reward),
    "ppo": Stage("fine-tune the policy against a reward model with PPO", _add_ppo, _prepare_ppo, _finish_ppo),
    "compare": Stage("compare base and RLHF generations: toxicity and reward per answer", _add_compare,
                     _prepare_compare, _finish_compare),
}


# ---------------------------------------------------------------- data, feedback, space


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="'bundled', a .jsonl/.jsonl.gz/.csv/.parquet file, or a hub id")
    p.add_argument("--show", type=int, metavar="K", help="also print pair K split into prompt / chosen / rejected")
    p.add_argument("--limit", type=int, help="read at most this many pairs")


def _run_data(args: argparse.Namespace) -> int:
    pairs = load_pairs(args.source, limit=args.limit)
    emit(pairs.stats())
    if args.show is not None:
        if not 0 <= args.show < len(pairs):
            raise ValueError(f"--show {args.show}: pair index out of range 0..{len(pairs) - 1}")
        pair = pairs.pairs[args.show]
        emit({"index": args.show, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected})
    return 0


def _add_feedback(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the feedback sets with their pair and vote counts")
    export = sub.add_parser("export", help="write a set's A/B votes as preference pairs (JSON lines)")
    export.add_argument("name", help="the feedback set")
    export.add_argument("--out", required=True, metavar="FILE", help="the .jsonl file to write")
    export.add_argument("--format", choices=votes.FORMATS, default="hh",
                        help="hh = hh-rlhf chosen/rejected dialogues (default); pcr = prompt/chosen/rejected")
    stats = sub.add_parser("stats", help="a set's tallies: votes, B's win rate over A (95%% interval), agreement")
    stats.add_argument("name", help="the feedback set")
    _add_feedback_generate(sub.add_parser("generate", help="generate A/B answer pairs into a set (the Feedback tab's "
                                                            "job): two models, or two samples of one, per prompt"))


def _add_feedback_generate(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, feedback.FeedbackConfig, required=["name"],
                     names={"name": ["--set", "--name"], "n_pairs": ["--n", "--n-pairs"]})
    add_config_flags(p, GenerateConfig)
    p.add_argument("--out", metavar="DIR", help="new run folder (default: a new folder under LAB_RUNS_DIR or runs/)")


def _run_feedback_generate(args: argparse.Namespace) -> int:
    values = config_values(args, feedback.FeedbackConfig)
    values["generate"] = {k: v for k, v in config_values(args, GenerateConfig).items() if v is not None}
    config = feedback.prepare(args.preset_obj, values)
    job = run_job(feedback.KIND, feedback.generate_pairs, config, args.out)
    emit({**job.summary, "status": job.status, "run": str(job.run.path), "source": f"feedback:{job.summary['set']}"})
    return 0


def _run_feedback(args: argparse.Namespace) -> int:
    if args.action == "generate":
        return _run_feedback_generate(args)
    if args.action == "list":
        for name in votes.list_sets():
            fs = votes.open_set(name)
            emit({"name": name, "pairs": len(fs.pairs()), "votes": len(fs.votes()), "source": f"feedback:{name}"})
    elif args.action == "export":
        fs = votes.open_set(args.name)
        n = votes.write_export(fs, Path(args.out).expanduser(), args.format)
        emit({"name": fs.name, "pairs": n, "votes": len(fs.votes()), "format": args.format, "out": args.out})
    else:
        fs = votes.open_set(args.name)
        emit({"name": fs.name, "pairs": len(fs.pairs()), **votes.tally(fs.votes())})
    return 0


def _add_space(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="space_build", help="folder to write (replaced if it exists)")


def _run_space(args: argparse.Namespace) -> int:
    emit({"out": str(Path(args.out).resolve()), "files": build_space(Path(args.out))})
    return 0


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "data": ("summarise a preference-data source", _add_data, _run_data),
    "score": ("score preference pairs with a trained reward model", _add_score, _run_score),
    "feedback": ("generate, list, export or summarise the Feedback tab's pair and vote sets", _add_feedback,
                 _run_feedback),
    "space": ("assemble a deployable Hugging Face Space folder", _add_space, _run_space),
}


# ---------------------------------------------------------------- entry


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lab", description="RLHF Lab, headless")
    parser.add_argument("--preset", help=PRESET_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    adders = {**{name: (s.help, s.add) for name, s in STAGES.items()},
              **{name: (help_text, add) for name, (help_text, add, _) in COMMANDS.items()}}
    for name, (help_text, add) in adders.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def prepared(argv: list[str]) -> dict[str, Any]:
    """The checked job config a stage command would run, without running it (what the tab's Start would build)."""
    args = build_parser().parse_args(argv)
    args.preset_obj = get_preset(args.preset)
    return STAGES[args.command].prepare(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.preset_obj = get_preset(args.preset)
        if args.command in STAGES:
            stage = STAGES[args.command]
            stage.finish(args, stage.prepare(args))  # bad input fails in prepare, before a run folder exists
            return 0
        return COMMANDS[args.command][2](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except JobFailed as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130


def app(argv: list[str] | None = None) -> None:
    """`python app.py`: the web app's flags, then lab.server serves it."""
    from lab.server import launch  # imports gradio (slow): only the web app needs it

    parser = argparse.ArgumentParser(description="RLHF Lab web app")
    parser.add_argument("--preset", help=PRESET_HELP)
    parser.add_argument("--share", action="store_true", help="ask gradio for a public link")
    args = parser.parse_args(argv)
    launch(args.preset, args.share)


if __name__ == "__main__":
    sys.exit(main())
