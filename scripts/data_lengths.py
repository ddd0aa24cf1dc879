"""Check the bundled pairs' hh format and print chosen vs. rejected answer lengths (issue 16: no length bias).

Usage: python scripts/data_lengths.py [assets/data]
"""

import json
import statistics
import sys
from pathlib import Path

MARK = "\n\nAssistant: "


def answers(path: Path) -> list[tuple[int, int]]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        row = json.loads(line)
        assert set(row) == {"chosen", "rejected", "subset"}, f"{path.name}:{n}: keys {sorted(row)}"
        c, r = row["chosen"], row["rejected"]
        assert c.startswith("\n\nHuman: ") and r.startswith("\n\nHuman: "), f"{path.name}:{n}: no leading Human turn"
        i, j = c.rfind(MARK), r.rfind(MARK)
        assert i == j and c[:i] == r[:j], f"{path.name}:{n}: chosen and rejected dialogue prefixes differ"
        ca, ra = c[i + len(MARK):], r[j + len(MARK):]
        assert ca.strip() and ra.strip() and ca != ra, f"{path.name}:{n}: empty or identical answers"
        assert "\n\nHuman:" not in ca + ra, f"{path.name}:{n}: extra turn after the last Assistant mark"
        out.append((len(ca), len(ra)))
    return out


def show(tag: str, pairs: list[tuple[int, int]]) -> None:
    c, r = [p[0] for p in pairs], [p[1] for p in pairs]
    longer = sum(b > a for a, b in pairs)
    print(f"{tag:18s} n={len(pairs):3d}  median chosen {statistics.median(c):6.1f} rejected {statistics.median(r):6.1f}"
          f"  mean chosen {statistics.mean(c):6.1f} rejected {statistics.mean(r):6.1f}"
          f"  rejected longer {longer}/{len(pairs)} ({longer / len(pairs):.0%})")


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "assets" / "data")
    everything = []
    for name in ("pairs_train.jsonl", "pairs_test.jsonl"):
        part = answers(folder / name)
        show(name, part)
        everything += part
    show("all", everything)
