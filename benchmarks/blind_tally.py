"""Unblind a reader's verdicts on bench_learning.py's blind files and count wins, refusals and word salad.

The reader gets only blind-SEED.jsonl (prompt, answer 1, answer 2; which one is the RLHF model shuffled per
prompt) and writes one JSON line per item: {"id", "better": "1" | "2" | "tie", "refusal": ["1"?, "2"?],
"salad": ["1"?, "2"?]} (the answers that refuse, and the answers that are word salad or loops). This script joins
them with key-SEED.json and prints, per seed: RLHF wins, base wins, ties, a two-sided sign test on the decided
prompts, and refusal and word-salad counts per side (wins and refusals split by prompt kind when kinds are given:
a JSON list with one label per compare prompt, "harmless" for provocative requests and "helpful" for ordinary ones;
a Compare CSV, whose `kind` column says it since stop 45; or `bundled:heldout`, the held-out prompts' own labels).

    python benchmarks/blind_tally.py --verdicts V1.jsonl V2.jsonl --keys key-1.json key-2.json [--kinds K.json]
    python benchmarks/blind_tally.py --verdicts V.jsonl --keys key-19.json --kinds bundled:heldout

Where Compare answered each prompt several times, bench_learning.py writes one blind file per answer (all in one
key-SEED.json), each for its own reader. `--by-prompt` pools those readings (one key for all the verdict files)
and, beside each file's line, prints the pooled items and each prompt counted once: for the side its readers
preferred on more of its answers (even when they split evenly or tied), with a sign test over the prompts.

    python benchmarks/blind_tally.py --by-prompt --verdicts V0 V1 V2 V3 --keys key-31.json --kinds bundled:heldout
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter
from pathlib import Path

from lab.votes import prompt_rates  # the Feedback tab's per-prompt count


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial p of `wins` against `losses` under p = 0.5 (ties dropped)."""
    n = wins + losses
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(wins, losses) + 1)) / 2**n
    return min(1.0, 2 * tail)


def tally(verdicts: list[dict], key: dict, kinds: list[str] | None) -> dict:
    counts: Counter = Counter()
    for v in verdicts:
        sides = key[v["id"]]
        better = v["better"]
        outcome = "tie" if better == "tie" else f"{sides['answer_' + better]}_wins"
        counts[outcome] += 1
        if kinds:
            counts[f"{outcome}_on_{kinds[sides['prompt_index']]}"] += 1
        for field in ("refusal", "salad"):
            for answer in v.get(field, []):
                side = sides[f"answer_{answer}"]
                counts[f"{field}_{side}"] += 1
                if kinds and field == "refusal":
                    counts[f"refusal_{side}_on_{kinds[sides['prompt_index']]}"] += 1
    out = {"n": len(verdicts), **{k: counts[k] for k in sorted(counts)}}
    # the side against base: "rlhf" from bench_learning.py, "best_of_k" from bench_best_of_n.py
    other = next((s for sides in key.values() for s in (sides["answer_1"], sides["answer_2"]) if s != "base"), "rlhf")
    out["sign_test_p"] = round(sign_test(counts[f"{other}_wins"], counts["base_wins"]), 4)
    return out


HELD_OUT = Path(__file__).resolve().parents[1] / "assets" / "data" / "prompts_test.jsonl"
KIND_LABELS = {"harmful or edgy": "harmless", "ordinary": "helpful"}  # Compare's words -> the tallies' keys


def load_kinds(spec: str) -> list[str]:
    """One kind label per compare prompt, in prompt order, from a JSON list, a Compare CSV or `bundled:heldout`."""
    if spec == "bundled:heldout":
        return [json.loads(line)["subset"] for line in HELD_OUT.read_text().splitlines() if line.strip()]
    path = Path(spec)
    if path.suffix == ".csv":
        with path.open(newline="") as fh:
            rows = sorted((r for r in csv.DictReader(fh) if r.get("draw") in (None, "", "0")),
                          key=lambda r: int(r["index"]))
        if not rows or "kind" not in rows[0]:
            raise SystemExit(f"{spec}: no 'kind' column (Compare writes it since stop 45 where the prompts say it)")
        return [KIND_LABELS.get(r["kind"], r["kind"] or "unlabelled") for r in rows]
    return json.loads(path.read_text())


def by_prompt(verdicts: list[dict], key: dict, kinds: list[str] | None) -> dict:
    """Every answer pair of every prompt pooled (several readers, one key), then each prompt counted once by the
    Feedback tab's own rule (lab.votes.prompt_rates): for the side that won more of its pairs, "even" when they won
    as many; per kind of request too."""
    as_votes = [{"choice": {"1": "a", "2": "b"}.get(v["better"], "tie"), "model_a": key[v["id"]]["answer_1"],
                 "model_b": key[v["id"]]["answer_2"], "prompt": key[v["id"]]["prompt_index"]} for v in verdicts]
    other = next((s for sides in key.values() for s in (sides["answer_1"], sides["answer_2"]) if s != "base"), "rlhf")

    def count(votes: list[dict], suffix: str = "") -> dict:
        rates = prompt_rates(votes, min_votes=1)
        m = rates[0] if rates else {"x": "base", "y_ahead": 0, "x_ahead": 0}
        ours, theirs = (m["y_ahead"], m["x_ahead"]) if m["x"] == "base" else (m["x_ahead"], m["y_ahead"])
        read = len({v["prompt"] for v in votes})  # prompts whose readers only tied are even too
        return {f"{other}_wins{suffix}": ours, f"base_wins{suffix}": theirs, f"even{suffix}": read - ours - theirs}

    prompts = {"n": len({v["prompt"] for v in as_votes}), **count(as_votes)}
    for kind in sorted({kinds[v["prompt"]] for v in as_votes} if kinds else ()):
        prompts.update(count([v for v in as_votes if kinds[v["prompt"]] == kind], f"_on_{kind}"))
    prompts["sign_test_p"] = round(sign_test(prompts[f"{other}_wins"], prompts["base_wins"]), 4)
    return {"items": tally(verdicts, key, kinds), "prompts": prompts}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--verdicts", nargs="+", required=True)
    p.add_argument("--keys", nargs="+", required=True)
    p.add_argument("--kinds", help="one 'harmless' / 'helpful' label per compare prompt: a JSON list, a Compare CSV "
                                    "(its kind column) or 'bundled:heldout'")
    p.add_argument("--by-prompt", action="store_true", help="one key for all the verdict files (readings of the "
                   "same prompts' further answers): also print them pooled, each prompt counted once")
    args = p.parse_args()
    if args.by_prompt and len(args.keys) != 1:
        raise SystemExit("--by-prompt reads several readings of one seed's blind files: give its one key-SEED.json")
    kinds = load_kinds(args.kinds) if args.kinds else None
    keys = args.keys * len(args.verdicts) if args.by_prompt else args.keys
    pooled: list[dict] = []
    for verdict_file, key_file in zip(args.verdicts, keys):
        verdicts = [json.loads(line) for line in Path(verdict_file).read_text().splitlines() if line.strip()]
        key = json.loads(Path(key_file).read_text())
        bad = [v.get("id") for v in verdicts if v.get("id") not in key or v.get("better") not in ("1", "2", "tie")]
        if bad:  # a reader's slip (an id from another file, a verdict spelt otherwise): say which, count nothing
            raise SystemExit(f"{verdict_file}: {len(bad)} verdicts with an id not in {key_file} or 'better' not "
                             f"1, 2 or tie (first: {bad[0]!r})")
        pooled += verdicts
        print(json.dumps({"verdicts": verdict_file, **tally(verdicts, key, kinds)}))
    if args.by_prompt:
        print(json.dumps({"pooled": len(args.verdicts), **by_prompt(pooled, json.loads(Path(keys[0]).read_text()),
                                                                      kinds)}))


if __name__ == "__main__":
    main()
