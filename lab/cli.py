"""`python -m lab`: the lab's jobs headless, for teachers preparing a workshop and for benchmarks.

Every command prints JSON lines on stdout; bad input prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable

from lab.presets import get_preset


def emit(row: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed so a pipe sees it at once."""
    print(json.dumps(row, default=float), flush=True)


# ---------------------------------------------------------------- data


def _add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="'bundled', a .jsonl/.jsonl.gz/.csv/.parquet file, or a hub id")
    p.add_argument("--show", type=int, metavar="K", help="also print pair K split into prompt / chosen / rejected")
    p.add_argument("--limit", type=int, help="read at most this many pairs")


def _run_data(args: argparse.Namespace) -> int:
    from lab.data import load_pairs

    pairs = load_pairs(args.source, limit=args.limit)
    emit(pairs.stats())
    if args.show is not None:
        if not 0 <= args.show < len(pairs):
            raise ValueError(f"--show {args.show}: pair index out of range 0..{len(pairs) - 1}")
        pair = pairs.pairs[args.show]
        emit({"index": args.show, "prompt": pair.prompt, "chosen": pair.chosen, "rejected": pair.rejected})
    return 0


# ---------------------------------------------------------------- feedback


def _add_feedback(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="the feedback sets with their pair and vote counts")
    export = sub.add_parser("export", help="write a set's A/B votes as preference pairs (JSON lines)")
    export.add_argument("name", help="the feedback set")
    export.add_argument("--out", required=True, metavar="FILE", help="the .jsonl file to write")
    export.add_argument("--format", choices=["hh", "pcr"], default="hh",
                        help="hh = hh-rlhf chosen/rejected dialogues (default); pcr = prompt/chosen/rejected")
    stats = sub.add_parser("stats", help="a set's tallies: votes, B's win rate over A (95%% interval), agreement")
    stats.add_argument("name", help="the feedback set")


def _run_feedback(args: argparse.Namespace) -> int:
    from lab import feedback

    if args.action == "list":
        for name in feedback.list_sets():
            fs = feedback.open_set(name)
            emit({"name": name, "pairs": len(fs.pairs()), "votes": len(fs.votes()), "source": f"feedback:{name}"})
    elif args.action == "export":
        fs = feedback.open_set(args.name)
        n = feedback.write_export(fs, Path(args.out).expanduser(), args.format)
        emit({"name": fs.name, "pairs": n, "votes": len(fs.votes()), "format": args.format, "out": args.out})
    else:
        fs = feedback.open_set(args.name)
        emit({"name": fs.name, "pairs": len(fs.pairs()), **feedback.tally(fs.votes())})
    return 0


# ---------------------------------------------------------------- registry

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "data": ("summarise a preference-data source", _add_data, _run_data),
    "feedback": ("list, export or summarise the Feedback tab's vote sets", _add_feedback, _run_feedback),
}


def _register_stage_commands() -> None:
    """Stage commands live next to their job code; each module exposes `CLI_COMMANDS`."""
    import importlib

    for module in ("lab.reward", "lab.ppo", "lab.compare", "lab.bench", "lab.space"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue
            raise
        COMMANDS.update(getattr(mod, "CLI_COMMANDS", {}))


def build_parser() -> argparse.ArgumentParser:
    _register_stage_commands()
    parser = argparse.ArgumentParser(prog="python -m lab", description="RLHF Lab, headless")
    parser.add_argument("--preset", help="a100 or cpu (default: LAB_PRESET, else by CUDA availability)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add, _) in COMMANDS.items():
        add(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.preset_obj = get_preset(args.preset)
        return COMMANDS[args.command][2](args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
