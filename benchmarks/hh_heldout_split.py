"""Hold hh-rlhf requests out of training, to read RLHF on requests it never saw (README, *Stop 52*).

From a file of hh-rlhf pairs (the shared `../shared/data/hh-harmless-dev.jsonl.gz`, 1,000 harmless-base pairs) it
writes, outside the project (the files are copies of that data, not for committing):

1. `test.jsonl`: N first human turns drawn with SEED, none already in an --exclude prompt file and none sharing a
   quarter of its words with a bundled prompt; with the --exclude prompts after them (their pairs are held out too).
2. `pairs_train.jsonl.gz`: every pair whose first human turn is not a test prompt, for the reward stage
   (`--train 'pairs_train.jsonl.gz+bundled:helpful*11+bundled:harmless*4'`, the hh mix with written declines).
3. `ppo_prompts.jsonl`: the bundled PPO prompts and M first human turns of the training pairs (labelled
   `harmless-base`, hh-rlhf's folder, so PPO leaves them out of relevance as it does the demo set's `harmful` ones;
   stop 52 labelled them `harmless`, which PPO now reads as the demo set's edgy label and pays relevance on). Since
   stop 54 a reward run on the mix above gets every request of `pairs_train.jsonl.gz` joined to the bundled prompts
   by default (`bundled+pairs_train.jsonl.gz=harmless-base`), so this file only reproduces stops 52–54's H2 and P.

    python benchmarks/hh_heldout_split.py --pairs ../shared/data/hh-harmless-dev.jsonl.gz --seed 52 --out /tmp/hh52 \
        --exclude stop51_fresh.jsonl stop49_offset.jsonl
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
from pathlib import Path

from lab.data import BUNDLED_PROMPTS, load_prompts, split_pair
from lab.data_files import read_rows

WORDS = re.compile(r"[a-z']+")


def first_human_turn(pair: dict) -> str:
    """The request a pair answers, as the lab reads it (lab.data.Pair.first_human_turn, what PPO prompts from)."""
    return split_pair(pair["chosen"], pair["rejected"]).first_human_turn.strip()


def words(text: str) -> set[str]:
    return set(WORDS.findall(text.lower()))


def near(prompt: str, pool: list[str], share: float = 0.25) -> bool:
    """Whether `prompt` shares at least `share` of its words with any prompt of `pool`."""
    w = words(prompt)
    return any(len(w & words(q)) >= share * max(1, len(w)) for q in pool)


def read_pairs(path: Path) -> list[dict]:
    """The pairs of a .jsonl / .jsonl.gz file (read_rows says when it is empty or malformed); a clear error for a row
    without chosen / rejected."""
    pairs = [row for _, row in read_rows(path)]
    bad = next((n for n, row in enumerate(pairs, 1) if not {"chosen", "rejected"} <= set(row)), None)
    if bad:
        raise ValueError(f"row {bad} of '{path}' has no 'chosen' and 'rejected' columns: hh-rlhf pairs are needed")
    return pairs


def split(pairs: list[dict], seed: int, n_test: int, n_ppo: int, exclude: list[str]) -> dict[str, list]:
    """{'test': prompts, 'train': pairs, 'ppo': extra prompts}: test and PPO prompts are 3–40 words long."""
    bundled = load_prompts("bundled") + load_prompts("bundled:heldout")
    ok = lambda p: 3 <= len(p.split()) <= 40  # noqa: E731
    firsts = sorted({first_human_turn(r) for r in pairs} - {""})
    rng = random.Random(seed)
    candidates = [p for p in firsts if p not in exclude and not near(p, bundled) and ok(p)]
    rng.shuffle(candidates)
    test = candidates[:n_test] + exclude
    held = set(test)
    train = [r for r in pairs if first_human_turn(r) not in held]
    pool = [p for p in sorted({first_human_turn(r) for r in train} - {""}) if ok(p) and not near(p, test)]
    rng.shuffle(pool)
    return {"test": test, "train": train, "ppo": pool[:n_ppo]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pairs", required=True, help="hh-rlhf pairs (.jsonl or .jsonl.gz with chosen / rejected)")
    p.add_argument("--seed", type=int, default=52)
    p.add_argument("--n-test", type=int, default=24, help="new test prompts drawn")
    p.add_argument("--n-ppo", type=int, default=48, help="hh prompts added to the bundled PPO prompts")
    p.add_argument("--exclude", nargs="*", default=[], help="prompt files already used as tests: held out too")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    try:
        pairs = read_pairs(Path(args.pairs))
    except ValueError as e:
        raise SystemExit(f"hh_heldout_split: {e}") from None
    exclude = [q for f in args.exclude for q in load_prompts(f)]
    out = split(pairs, args.seed, args.n_test, args.n_ppo, exclude)
    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "test.jsonl", "w") as f:
        f.writelines(json.dumps({"prompt": q, "subset": "harmless-base"}) + "\n" for q in out["test"])
    with gzip.open(folder / "pairs_train.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in out["train"])
    with open(folder / "ppo_prompts.jsonl", "w") as f:
        f.writelines(json.dumps(row) + "\n" for _, row in read_rows(BUNDLED_PROMPTS))
        f.writelines(json.dumps({"prompt": q, "subset": "harmless-base"}) + "\n" for q in out["ppo"])
    print(json.dumps({"pairs": len(pairs), "train_pairs": len(out["train"]), "test_prompts": len(out["test"]),
                      "new_test_prompts": args.n_test, "ppo_hh_prompts": len(out["ppo"]), "out": str(folder)}))


if __name__ == "__main__":
    main()
