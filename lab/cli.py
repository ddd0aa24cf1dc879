"""`python -m lab`: the lab's jobs headless, for teachers preparing a workshop and for benchmarks.

Every command prints JSON lines on stdout; bad input prints one line on stderr and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
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


# ---------------------------------------------------------------- registry

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "data": ("summarise a preference-data source", _add_data, _run_data),
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
