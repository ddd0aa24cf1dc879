"""Reader-judged preference pairs on the policy's own answers: Feedback sets read blind, the verdicts cast as votes.

The Feedback tab collects votes one click at a time; a workshop (or a benchmark) can also hand a set's pairs to
readers as files. `items` writes a set's pairs (two answers per prompt, A/B as the set drew them: two samples of one
model carry no identity) as blind-reading items, split over K readers (benchmarks/blind_reading.md is their
protocol); `cast` records each reader's verdicts in the set as that reader's votes (1 = A, 2 = B, tie = tie), so
`feedback:NAME` trains a reward model on them (stop 38 in the README: 192 pairs, 4 readers).

    .venv/bin/python -m lab feedback generate --set reader-a --prompts bundled --n 96 --seed 1
    .venv/bin/python benchmarks/reader_votes.py items --sets reader-a --readers 2 --out DIR   # DIR/v0, DIR/v1
    .venv/bin/python benchmarks/reader_votes.py cast --out DIR        # after the readers wrote DIR/v*/verdicts.jsonl
    .venv/bin/python -m lab reward --train "feedback:reader-a+bundled"
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lab import votes  # noqa: E402


def write_items(sets: list[str], readers: int, out: Path, seed: int = 0) -> dict:
    rows = [{"id": f"{name}:{p['id']}", "prompt": "Human: " + p["prompt"], "answer_1": p["answer_a"],
             "answer_2": p["answer_b"]} for name in sets for p in votes.open_set(name).pairs()]
    random.Random(seed).shuffle(rows)
    sizes = {}
    for k in range(readers):
        folder = out / f"v{k}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / "benchmarks" / "blind_reading.md", folder / "PROTOCOL.md")
        mine = rows[k::readers]
        (folder / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mine))
        sizes[str(folder)] = len(mine)
    return sizes


def cast(out: Path) -> dict:
    counts = {"a": 0, "b": 0, "tie": 0, "already": 0}
    clock = 1_000_000.0  # votes a second apart per reader: the set's reading-speed check sees a person
    for verdicts in sorted(out.glob("v*/verdicts.jsonl")):
        reader = "reader" + verdicts.parent.name[1:]
        for number, line in enumerate(verdicts.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                v = json.loads(line)
                name, pair_id = v["id"].split(":", 1)
            except (ValueError, KeyError, TypeError, AttributeError) as e:  # nothing recorded from this line
                raise SystemExit(f"{verdicts}:{number}: not a verdict line with an id 'SET:PAIR' ({e})") from None
            fs = votes.open_set(name)
            if any(x["pair_id"] == pair_id and x["visitor"] == reader for x in fs.votes()):
                counts["already"] += 1
                continue
            choice = {"1": "a", "2": "b"}.get(str(v.get("better")), "tie")
            clock += 10
            votes.vote(fs, pair_id, choice, reader, str(v.get("why", ""))[:200], now=clock)
            counts[choice] += 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    items = sub.add_parser("items", help="write the sets' pairs as blind-reading items, split over readers")
    items.add_argument("--sets", nargs="+", required=True)
    items.add_argument("--readers", type=int, default=4)
    items.add_argument("--out", required=True)
    done = sub.add_parser("cast", help="record the readers' verdicts as votes in their sets")
    done.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    try:
        result = write_items(args.sets, args.readers, out) if args.action == "items" else cast(out)
    except ValueError as e:  # a missing set or pair: the votes cast before it stay, a rerun skips them
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
