"""The feedback store: blind A/B pairs to vote on, append-only votes safe under many visitors, tallies, export.

A set lives in `<runs>/feedback/<NAME>/`: `meta.json` (settings), `pairs.jsonl` (the queue of generated pairs, left
and right already shuffled) and `votes.jsonl` (one vote per line, never rewritten). Every write holds a lock per
set: a thread lock for the visitors of this process and `fcntl.flock` for other processes (the CLI), and appends
one complete, flushed and fsynced line, so no vote is lost or interleaved.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import random
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from lab.data import kinds_in, to_hh
from lab.runs import read_jsonl, runs_root

CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}
FORMATS = ("hh", "pcr")  # hh-rlhf chosen/rejected dialogues, or prompt/chosen/rejected
MAX_VOTES = 20_000  # per set: a workshop of 50 people voting for an hour stays far below
MAX_PAIRS = 5_000
MAX_REASON = 280  # characters
MAX_TEXT = 8_000  # characters of a prompt or answer
MAX_KIND = 40  # characters of a kind-of-request label
MIN_SECONDS = 1.0  # between two votes of one visitor: nobody reads two answers faster
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,47}")
_VISITOR_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_LOCKS: dict[Path, threading.Lock] = {}  # one per set folder, shared by every visitor of this process
_LOCKS_GUARD = threading.Lock()


# ---------------------------------------------------------------- sets on disk


def feedback_root(root: Path | None = None) -> Path:
    return (Path(root) if root else runs_root()) / "feedback"


def check_name(name: str) -> str:
    """A set name is a folder name: letters, digits, '-' and '_' only (no paths)."""
    name = (name or "").strip()
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"feedback set name '{name}' is not allowed: use 1-48 letters, digits, '-' or '_' "
                         "(e.g. 'class-1')")
    return name


@dataclass
class FeedbackSet:
    """One named set's folder: meta.json, the pairs queue (pairs.jsonl) and the votes (votes.jsonl)."""

    path: Path

    def __post_init__(self) -> None:
        self.name = self.path.name
        self.votes_file, self.pairs_file = self.path / "votes.jsonl", self.path / "pairs.jsonl"

    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "meta.json").read_text())

    def pairs(self) -> list[dict[str, Any]]:
        return read_jsonl(self.pairs_file)

    def votes(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Votes in the order they were cast; `limit` = only the first N (append-only, so always the same N)."""
        rows = read_jsonl(self.votes_file)
        return rows[:limit] if limit is not None else rows

    def signature(self) -> str:
        """Changes whenever a vote or a pair is added: the tab's timer redraws only then."""
        return ":".join(str(f.stat().st_size if f.exists() else 0) for f in (self.votes_file, self.pairs_file))


def create_set(name: str, root: Path | None = None, min_seconds: float = MIN_SECONDS) -> FeedbackSet:
    """The set called `name`, made if new (an existing set is opened as it is)."""
    path = feedback_root(root) / check_name(name)
    with _locked(path, create=True):
        if not (path / "meta.json").exists():
            meta = {"name": path.name, "created": time.time(), "min_seconds": float(min_seconds)}
            (path / "meta.json").write_text(json.dumps(meta, indent=2))
    return FeedbackSet(path)


def open_set(name: str, root: Path | None = None) -> FeedbackSet:
    """An existing set; ValueError names the sets there are."""
    path = feedback_root(root) / check_name(name)
    if not (path / "meta.json").exists():
        have = ", ".join(list_sets(root)) or "none yet"
        raise ValueError(f"no feedback set '{path.name}' (sets: {have}): create it in the Feedback tab first")
    return FeedbackSet(path)


def list_sets(root: Path | None = None) -> list[str]:
    """Names of the sets, alphabetical."""
    folder = feedback_root(root)
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.iterdir() if (p / "meta.json").exists())

@contextmanager
def _locked(path: Path, create: bool = False) -> Iterator[None]:
    """Hold this set's thread lock and its file lock (other processes)."""
    if create:
        path.mkdir(parents=True, exist_ok=True)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path.resolve(), threading.Lock())
    with lock, open(path / ".lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _append(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append whole lines and push them to disk; a line left half-written by a crash is closed first."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(path, "a+b") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                text = "\n" + text
        fh.write(text.encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())


# ---------------------------------------------------------------- the pairs queue


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} is empty: every pair needs a prompt and two non-empty answers")
    if len(value) > MAX_TEXT:
        raise ValueError(f"{what} has {len(value)} characters: the limit is {MAX_TEXT}")
    return value.strip()


def add_pairs(fs: FeedbackSet, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Append pairs given as {prompt, answer_a, answer_b, model_a, model_b, and optionally kind: the kind of request,
    as Compare labels it} (already in the order shown)."""
    new = []
    for n, row in enumerate(rows, start=1):
        pair = {"id": f"p-{secrets.token_hex(5)}", "prompt": _text(row.get("prompt"), f"the prompt of pair {n}"),
                "answer_a": _text(row.get("answer_a"), f"answer A of pair {n}"),
                "answer_b": _text(row.get("answer_b"), f"answer B of pair {n}"),
                "model_a": str(row.get("model_a") or "A"), "model_b": str(row.get("model_b") or "B"),
                "created": round(time.time(), 3)}
        if isinstance(row.get("kind"), str) and row["kind"].strip():
            pair["kind"] = row["kind"].strip()[:MAX_KIND]
        if pair["answer_a"] == pair["answer_b"]:
            raise ValueError(f"answers A and B of pair {n} are the same text: a vote on them would say nothing")
        new.append(pair)
    with _locked(fs.path):
        have = len(fs.pairs())
        if have + len(new) > MAX_PAIRS:
            raise ValueError(f"feedback set '{fs.name}' would have {have + len(new)} pairs: the limit is {MAX_PAIRS}; "
                             "start a new set")
        _append(fs.pairs_file, new)
    return new


def shuffle_sides(rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Swap left and right at random per pair, so position says nothing about the model."""
    out = []
    for row in rows:
        if rng.random() < 0.5:
            row = {**row, "answer_a": row["answer_b"], "answer_b": row["answer_a"],
                   "model_a": row["model_b"], "model_b": row["model_a"]}
        out.append(row)
    return out


def next_pair(fs: FeedbackSet, visitor: str | None) -> dict[str, Any] | None:
    """The pair this visitor should judge next: among those they have not voted on, the one with fewest votes
    (earliest in the queue first), so votes spread over the set; None when they have judged every pair."""
    votes = fs.votes()
    done = {v["pair_id"] for v in votes if v.get("visitor") == visitor}
    count: dict[str, int] = {}
    for v in votes:
        count[v["pair_id"]] = count.get(v["pair_id"], 0) + 1
    todo = [(count.get(p["id"], 0), i, p) for i, p in enumerate(fs.pairs()) if p["id"] not in done]
    return min(todo, key=lambda t: t[:2])[2] if todo else None


# ---------------------------------------------------------------- votes


def vote(fs: FeedbackSet, pair_id: str, choice: str, visitor: str | None, reason: str = "",
         now: float | None = None) -> dict[str, Any]:
    """Record one vote; ValueError (and nothing written) for a missing pair, an empty answer, a second vote of
    the same visitor on the same pair, a visitor voting faster than `min_seconds`, or a full set."""
    if choice not in CHOICES:
        raise ValueError(f"choice '{choice}' is not one of {', '.join(CHOICES)}")
    reason = (reason or "").strip()
    if len(reason) > MAX_REASON:
        raise ValueError(f"the reason has {len(reason)} characters: keep it under {MAX_REASON}")
    if not visitor or not _VISITOR_RE.fullmatch(visitor):
        raise ValueError("this page has no visitor id yet: reload it and vote again")
    with _locked(fs.path):
        pair = next((p for p in fs.pairs() if p.get("id") == pair_id), None)
        if pair is None:
            raise ValueError(f"pair '{pair_id}' is not in feedback set '{fs.name}' (any more): your vote was not "
                             "counted; reload the page for a fresh pair")
        for side in ("a", "b"):
            if not str(pair.get(f"answer_{side}") or "").strip():
                raise ValueError(f"answer {side.upper()} of pair '{pair_id}' is empty: nothing to compare, "
                                 "so the vote was not counted")
        votes = fs.votes()
        mine = [v for v in votes if v.get("visitor") == visitor]
        if any(v.get("pair_id") == pair_id for v in mine):
            raise ValueError("you already voted on this pair: it counts once")
        now = round(time.time() if now is None else now, 3)  # as stored: a rounded-up last time is never "later"
        wait = fs.meta().get("min_seconds", MIN_SECONDS)
        if mine and now - max(v["time"] for v in mine) < wait:
            raise ValueError("you are voting faster than a person can read: wait a second")
        if len(votes) >= MAX_VOTES:
            raise ValueError(f"feedback set '{fs.name}' is full ({MAX_VOTES} votes): start a new set")
        row = {"id": f"v-{secrets.token_hex(6)}", "pair_id": pair_id, "prompt": pair["prompt"],
               "answer_a": pair["answer_a"], "answer_b": pair["answer_b"], "model_a": pair["model_a"],
               "model_b": pair["model_b"], "choice": choice, "reason": reason, "visitor": visitor,
               "time": now, **({"kind": pair["kind"]} if pair.get("kind") else {})}
        _append(fs.votes_file, [row])
    return row


# ---------------------------------------------------------------- tallies


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (95% for z = 1.96); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _rate(k: int, n: int) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"n": n, "wins": k, "rate": round(k / n, 4) if n else None, "ci95": [round(lo, 4), round(hi, 4)]}


def tally(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, B's win rate over A and each model's win rate over the other among decisive votes (Wilson 95%),
    and agreement on pairs that two or more visitors judged."""
    counts = {c: sum(v["choice"] == c for v in votes) for c in CHOICES}
    per_visitor: dict[str, int] = {}
    for v in votes:
        per_visitor[v["visitor"]] = per_visitor.get(v["visitor"], 0) + 1
    decisive = counts["a"] + counts["b"]
    return {"votes": len(votes), "visitors": len(per_visitor), "per_visitor": per_visitor, **counts,
            "b_over_a": _rate(counts["b"], decisive), "models": model_rates(votes), "by_kind": kind_rates(votes),
            "per_prompt": prompt_rates(votes), **agreement(votes)}


def model_rates(votes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per pair of models (names sorted as x, y): how often y won over x among decisive votes."""
    wins: dict[tuple[str, str], list[int]] = {}
    for v in votes:
        if v["choice"] not in ("a", "b"):
            continue
        x, y = sorted((v["model_a"], v["model_b"]))
        winner = v["model_a"] if v["choice"] == "a" else v["model_b"]
        wins.setdefault((x, y), [0, 0])[winner == y] += 1
    return [{"x": x, "y": y, **_rate(k[1], sum(k))} for (x, y), k in sorted(wins.items())]


def prompt_rates(votes: list[dict[str, Any]], min_votes: int = 2) -> list[dict[str, Any]]:
    """Per pair of models (x, y): each prompt counted once, for the model that won more of its decisive votes
    ("even" when they won as many), with y's share of the prompts that were not even (Wilson 95%). [] where no
    prompt has `min_votes` decisive votes between them (with one a prompt it says what model_rates says).
    Votes on several answers to the same prompt (a comparison drawing four) or by several visitors pool there:
    one vote on one answer pair carries the luck of that sampling (stop 49: four readings of one run's answers
    went 23-17, 27-13, 24-17 and 21-22; two readers of the same answers agreed on 89% of them)."""
    margins: dict[tuple[str, str], dict[str, list[int]]] = {}
    for v in votes:
        if v["choice"] not in ("a", "b"):
            continue
        x, y = sorted((v["model_a"], v["model_b"]))
        winner = v["model_a"] if v["choice"] == "a" else v["model_b"]
        margins.setdefault((x, y), {}).setdefault(v["prompt"], []).append(1 if winner == y else -1)
    out = []
    for (x, y), by_prompt in sorted(margins.items()):
        if max(len(m) for m in by_prompt.values()) < min_votes:
            continue
        y_ahead = sum(sum(m) > 0 for m in by_prompt.values())
        x_ahead = sum(sum(m) < 0 for m in by_prompt.values())
        out.append({"x": x, "y": y, "prompts": len(by_prompt), "y_ahead": y_ahead, "x_ahead": x_ahead,
                    "even": len(by_prompt) - y_ahead - x_ahead, **_rate(y_ahead, y_ahead + x_ahead)})
    return out


def kind_rates(votes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """model_rates per kind of request (votes on pairs from a comparison whose prompts said their kind); [] with
    fewer than two kinds: a model can win the ordinary requests and lose the harmful ones."""
    return [{"kind": kind, "models": model_rates([v for v in votes if v.get("kind") == kind])}
            for kind in kinds_in(v.get("kind") for v in votes)]


def agreement(votes: list[dict[str, Any]]) -> dict[str, Any]:
    """Pairs judged by two or more visitors, and the share of them on which every vote is the same choice."""
    by_pair: dict[str, dict[str, str]] = {}
    for v in votes:
        by_pair.setdefault(v["pair_id"], {}).setdefault(v["visitor"], v["choice"])
    shared = [set(c.values()) for c in by_pair.values() if len(c) >= 2]
    agreed = sum(len(s) == 1 for s in shared)
    return {"shared_pairs": len(shared), "agreed_pairs": agreed,
            "agreement": round(agreed / len(shared), 4) if shared else None}


# ---------------------------------------------------------------- export and use as a data source


def export_rows(votes: list[dict[str, Any]], fmt: str = "hh") -> list[dict[str, str]]:
    """One preference pair per A/B vote (ties and both-bad stay in the log only): chosen = the answer preferred."""
    if fmt not in FORMATS:
        raise ValueError(f"export format '{fmt}' is not one of {', '.join(FORMATS)}")
    rows = []
    for v in votes:
        if v["choice"] not in ("a", "b"):
            continue
        chosen, rejected = (v["answer_a"], v["answer_b"]) if v["choice"] == "a" else (v["answer_b"], v["answer_a"])
        if fmt == "pcr":
            rows.append({"prompt": v["prompt"], "chosen": chosen, "rejected": rejected})
            continue
        prompt, chosen_hh = to_hh(v["prompt"], chosen)
        rows.append({"chosen": prompt + chosen_hh, "rejected": prompt + to_hh(v["prompt"], rejected)[1]})
    return rows


def write_export(fs: FeedbackSet, out: Path, fmt: str = "hh") -> int:
    """Write the set's preference pairs as JSON lines to `out`; returns how many."""
    rows = export_rows(fs.votes(), fmt)
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"'{out}' is a folder: give a file name such as votes.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)
