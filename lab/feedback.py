"""Feedback sets: blind A/B pairs to vote on, append-only votes safe under many visitors, tallies, export as pairs.

A set lives in `<runs>/feedback/<NAME>/`: `meta.json` (settings), `pairs.jsonl` (the queue of generated pairs, left
and right already shuffled) and `votes.jsonl` (one vote per line, never rewritten). Every write holds a lock per
set: a thread lock for the visitors of this process and `fcntl.flock` for other processes (the CLI), and appends
one complete, flushed and fsynced line, so no vote is lost or interleaved.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import re
import secrets
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from lab.config import build, from_job, setting
from lab.data import Pair, PairSet, to_hh
from lab.presets import Limits, Preset
from lab.runs import runs_root

if TYPE_CHECKING:
    from lab.jobs import JobContext

KIND = "feedback"
SOURCE_PREFIX = "feedback:"  # `feedback:NAME` as a data source; `feedback:NAME@N` = its first N votes
MIX = "+"  # `feedback:NAME+bundled`: the votes plus another source's pairs
CHOICES = {"a": "A is better", "b": "B is better", "tie": "Tie", "both_bad": "Both bad"}
FORMATS = ("hh", "pcr")  # hh-rlhf chosen/rejected dialogues, or prompt/chosen/rejected
MAX_VOTES = 20_000  # per set: a workshop of 50 people voting for an hour stays far below
MAX_PAIRS = 5_000
MAX_REASON = 280  # characters
MAX_TEXT = 8_000  # characters of a prompt or answer
MIN_SECONDS = 1.0  # between two votes of one visitor: nobody reads two answers faster
SECOND_SAMPLE_SEED = 10_000  # two samples of one model: the second uses seed + this
CUT_MARK = "…"  # ends an answer cut at the token limit: a voter sees it was cut, not finished
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
    """One named set's folder."""

    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def votes_file(self) -> Path:
        return self.path / "votes.jsonl"

    @property
    def pairs_file(self) -> Path:
        return self.path / "pairs.jsonl"

    def meta(self) -> dict[str, Any]:
        return json.loads((self.path / "meta.json").read_text())

    def pairs(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.pairs_file)

    def votes(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Votes in the order they were cast; `limit` = only the first N (append-only, so always the same N)."""
        rows = _read_jsonl(self.votes_file)
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


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut off by a crash mid-write: skip it, keep the rest
            continue
    return rows


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
    """Append pairs given as {prompt, answer_a, answer_b, model_a, model_b} (already in the order shown)."""
    new = []
    for n, row in enumerate(rows, start=1):
        pair = {"id": f"p-{secrets.token_hex(5)}", "prompt": _text(row.get("prompt"), f"the prompt of pair {n}"),
                "answer_a": _text(row.get("answer_a"), f"answer A of pair {n}"),
                "answer_b": _text(row.get("answer_b"), f"answer B of pair {n}"),
                "model_a": str(row.get("model_a") or "A"), "model_b": str(row.get("model_b") or "B"),
                "created": round(time.time(), 3)}
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
               "time": now}
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
            "b_over_a": _rate(counts["b"], decisive), "models": model_rates(votes), **agreement(votes)}


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


def is_feedback_source(source: str) -> bool:
    """True for `feedback:NAME[@N]`, alone or mixed with other sources by '+'."""
    return any(part.strip().startswith(SOURCE_PREFIX) for part in source.split(MIX))


def parse_part(part: str) -> tuple[str, int | None]:
    """'feedback:NAME[@N]' -> (NAME, N or None)."""
    spec = part.strip()[len(SOURCE_PREFIX):]
    name, _, count = spec.partition("@")
    if count and not count.isdigit():
        raise ValueError(f"'{part}': the number after '@' counts votes, e.g. feedback:{name}@100")
    return check_name(name), int(count) if count else None


def load_feedback_pairs(name: str, limit: int | None = None, root: Path | None = None) -> PairSet:
    """A set's A/B votes as preference pairs (the first `limit` votes when given)."""
    fs = open_set(name, root)
    votes = fs.votes(limit)
    rows = export_rows(votes, "pcr")
    if not rows:
        raise ValueError(f"feedback set '{fs.name}' has no 'A is better' or 'B is better' vote yet "
                         f"({len(votes)} votes, ties and both-bad are not pairs): vote first")
    pairs = [Pair(*to_hh(r["prompt"], r["chosen"]), to_hh(r["prompt"], r["rejected"])[1]) for r in rows]
    note = f"{len(rows)} pairs from {len(votes)} votes in feedback set '{fs.name}'"
    return PairSet(f"{SOURCE_PREFIX}{fs.name}", pairs, notes=[note])


def load_source(source: str, limit: int | None = None, allowed_dirs: list[Path] | None = None) -> PairSet:
    """`feedback:NAME[@N]`, alone or joined with other sources by '+' (lab.data.load_pairs comes here for them).
    When another source has train/test splits, the votes join its train split, so its test pairs stay held out."""
    from lab.data import load_pairs

    sets, notes = [], []
    for part in [p.strip() for p in source.split(MIX) if p.strip()]:
        if part.startswith(SOURCE_PREFIX):
            sets.append(load_feedback_pairs(*parse_part(part)))
        else:
            sets.append(load_pairs(part, allowed_dirs=allowed_dirs))
        notes += sets[-1].notes
    has_splits = any(p.split for s in sets for p in s.pairs)
    pairs = [p if p.split or not has_splits else replace(p, split="train") for s in sets for p in s.pairs]
    return PairSet(source, pairs[:limit] if limit else pairs, sum(s.dropped_identical for s in sets), notes)


def split_source(source: str, root: Path | None = None) -> list[str]:
    """The parts of a data source that are not feedback sets, after checking that those sets exist."""
    others = []
    for part in [p.strip() for p in source.split(MIX)] if is_feedback_source(source) else [source]:
        if part.startswith(SOURCE_PREFIX):
            open_set(parse_part(part)[0], root)
        else:
            others.append(part)
    return others


def pin_source(source: str, root: Path | None = None) -> str:
    """Votes keep arriving while a reward model trains: fix each `feedback:NAME` to the votes there now (`@N`)."""
    parts = []
    for part in source.split(MIX):
        if part.strip().startswith(SOURCE_PREFIX) and "@" not in part:
            name, _ = parse_part(part)
            part = f"{SOURCE_PREFIX}{name}@{len(open_set(name, root).votes())}"
        parts.append(part.strip())
    return MIX.join(parts)


def provenance(source: str, root: Path | None = None) -> dict[str, Any]:
    """Which votes a pinned source reads: per set the vote count and a sha256 of their ids ({} if no set)."""
    out = {}
    for part in source.split(MIX):
        if part.strip().startswith(SOURCE_PREFIX):
            name, count = parse_part(part)
            ids = [v["id"] for v in open_set(name, root).votes(count)]
            out[name] = {"votes": len(ids), "votes_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()}
    return {"feedback_votes": out} if out else {}


# ---------------------------------------------------------------- generating pairs (a job)


@dataclass
class FeedbackConfig:
    """The pair-generation job's settings."""

    name: str = setting("", "the feedback set the pairs go to (made if new)")
    model_a: str = setting("base", "'base' (the policy, adapters off) or a PPO run id/folder")
    model_b: str = setting("base", "the same as model_a = two samples of one model (different seeds)")
    policy: str = setting("", "the base policy when both models are 'base' (a PPO run brings its own)")
    prompts: str = setting("bundled", "prompt source for lab.data.load_prompts")
    n_pairs: int = setting(16, "new pairs to generate (prompts already in the set are skipped)")
    generate: dict[str, Any] = setting({}, "lab.generate.GenerateConfig fields")
    quantize_4bit: bool = setting(False, "load the policy in 4-bit NF4 (CUDA only)", cli=False)
    max_pairs: int = setting(100, "cap for the automatic batch size (the preset's limit on prompts)", cli=False)


def config_from(preset: Preset, **overrides: Any) -> FeedbackConfig:
    """The preset's defaults for this stage, then every override that is given."""
    from lab.generate import generate_settings

    gen = generate_settings(preset, overrides.pop("generate", None) or {})
    defaults = {"policy": preset.policy, "prompts": preset.compare_prompts, "quantize_4bit": preset.quantize_4bit,
                "max_pairs": preset.limits.max_prompts}
    return replace(build(FeedbackConfig, defaults, overrides, "feedback"), generate=gen)


def validate(cfg: FeedbackConfig, limits: Limits | None = None) -> FeedbackConfig:
    """Check the set name, the models and the ranges (and the preset's limits) before anything loads."""
    from lab.generate import GenerateConfig

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
    """The two sides as lab.compare's `Side`s; one model chosen twice gives the same side twice."""
    from lab import compare

    a, b = cfg.model_a.strip(), cfg.model_b.strip()
    if a != b:
        return compare.resolve_sides(compare.CompareConfig(model_a=a, model_b=b), root)
    if a == compare.BASE:
        if not cfg.policy:
            raise ValueError("both models are 'base' but no policy is given")
        side = compare.Side("a", compare.BASE, cfg.policy, None, "")
    else:
        run = compare.open_ppo_run(a, root)
        side = compare.Side("a", run.id, run.config["policy"], run.model_dir, "")
    return side, side


def new_prompts(cfg: FeedbackConfig, fs: FeedbackSet) -> list[str]:
    """The next `n_pairs` prompts of the source that have no pair in the set yet."""
    from lab.data import load_prompts

    used = {p["prompt"] for p in fs.pairs()}
    fresh = [p for p in load_prompts(cfg.prompts, limit=len(used) + cfg.n_pairs) if p.strip() not in used]
    if not fresh:
        raise ValueError(f"every prompt of '{cfg.prompts}' already has a pair in set '{fs.name}': "
                         "choose another prompt source")
    return fresh[: cfg.n_pairs]


def generate_pairs(ctx: JobContext) -> dict[str, Any]:
    """The feedback job: both models answer the prompts batch by batch; each batch joins the set's queue at once."""
    from lab.compare import load_policies
    from lab.generate import GenerateConfig, adapter_mode, auto_batch_size, generate_batch, plan_batches

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
            model, tokenizer = policies[side.policy]
            sample_seed = seed + b + (SECOND_SAMPLE_SEED * k if same else 0)  # same model: a different sample
            with adapter_mode(model, side.key if side.adapter_dir else None):
                answers.append(generate_batch(model, tokenizer, batch, gen, sample_seed, cut_mark=CUT_MARK))
        rows = [{"prompt": p, "answer_a": a, "answer_b": bb, "model_a": labels[0], "model_b": labels[1]}
                for p, a, bb in zip(batch, *answers) if a.strip() and bb.strip() and a.strip() != bb.strip()]
        skipped += len(batch) - len(rows)
        added += len(add_pairs(fs, shuffle_sides(rows, rng)))
        ctx.log({"batch": b + 1, "pairs": added, "skipped": skipped})
        ctx.set_progress((added + skipped) / len(prompts), f"{added} pairs ready")
    return {"set": fs.name, "pairs": added, "skipped_empty_or_identical": skipped, "model_a": labels[0],
            "model_b": labels[1], "prompts": cfg.prompts}
