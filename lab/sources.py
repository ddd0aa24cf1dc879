"""Every data source by name: what `lab.data` reads (bundled, files, hub ids) and the Feedback tab's vote sets as
`feedback:NAME[@N]`, alone or joined with other sources by '+'. Stages resolve and check sources only here."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab import data, models
from lab.data import Pair, PairSet, to_hh
from lab.data_files import read_rows, resolve_path
from lab.hub_data import hub_files
from lab.votes import check_name, export_rows, open_set

SOURCE_PREFIX = "feedback:"  # `feedback:NAME` as a data source; `feedback:NAME@N` = its first N votes
MIX = "+"  # `feedback:NAME+bundled`: the votes plus another source's pairs
REPEAT = "*"  # `hh.jsonl.gz+bundled:helpful*8`: that part's training pairs 8 times over


def load_pairs(source: str, limit: int | None = None, allowed_dirs: list[Path] | None = None, seed: int = 0) -> PairSet:
    """Preference pairs from 'bundled', 'bundled:train|test', a file path, a hub id (a `limit` sample of it seeded by
    `seed`) or 'feedback:NAME[@N][+other]'."""
    if is_feedback_source(source) or is_mix(source):
        return load_source(source.strip(), limit, allowed_dirs)
    return data.load_pairs(source, limit, allowed_dirs, seed)


def is_feedback_source(source: str) -> bool:
    """True for `feedback:NAME[@N]`, alone or mixed with other sources by '+'."""
    return any(part.strip().startswith(SOURCE_PREFIX) for part in source.split(MIX))


def is_mix(source: str) -> bool:
    """True for sources joined by '+' (`hh.jsonl.gz+bundled:helpful`) or repeated (`bundled:helpful*4`); a file
    whose own name has a '+' or '*' is a file."""
    return (MIX in source or REPEAT in source) and not Path(source.strip()).expanduser().exists()


MAX_REPEAT = 100


def repeat_count(part: str) -> tuple[str, int]:
    """'bundled:helpful*8' -> ('bundled:helpful', 8); a part without '*N' -> (part, 1). Repeating a small part
    balances a mix: 83 helpful pairs beside 1,000 harmless ones are 8% of the training and did not stop a reward
    model from preferring refusals (README, *What a reader prefers*)."""
    name, star, count = part.strip().rpartition(REPEAT)
    if not star or Path(part.strip()).expanduser().exists():
        return part.strip(), 1
    if not count.isdigit() or not 1 <= int(count) <= MAX_REPEAT:
        raise ValueError(f"'{part}': the number after '*' repeats that part's training pairs, from 1 to {MAX_REPEAT}, "
                         f"e.g. {name or 'bundled:helpful'}*4")
    return name.strip(), int(count)


def own_pair_parts(source: str) -> list[str]:
    """The parts of a pair source that are a user's own pair sets (a file, a hub id), each once and without its
    '*N': not the demo set (`bundled`, `bundled:helpful`, ...) and not feedback votes."""
    return list(dict.fromkeys(p for p in _part_names(source) if p and not p.startswith(("bundled", SOURCE_PREFIX))))


def _part_names(source: str) -> list[str]:
    return [repeat_count(part)[0] for part in source.split(MIX)] if is_mix(source) else [source.strip()]


DECLINE_PART_LABEL = "harmless-base"  # what the offer labels a one-sided set's requests with (lab.data.expects_decline)


def own_parts_in(prompts: str, pair_source: str) -> tuple[list[str], list[str]] | None:
    """The pair sets of `pair_source` (a reward run's training data) that `prompts` names, and those it does not;
    None where `prompts` cannot be read as sources."""
    try:
        named = {part for part, _ in data.prompt_parts(prompts)} if prompts.strip() else set()
    except ValueError:
        return None
    own = own_pair_parts(pair_source or "")
    return [p for p in own if p in named], [p for p in own if p not in named]


def prompts_with_own_requests(prompts: str, pair_source: str, allowed_dirs: list[Path] | None = None,
                              files_only: bool = False) -> tuple[list[str], str | None]:
    """The pair sets of `pair_source` that `prompts` leaves out and that can be read here (`files_only`: local
    files only, no hub id), and `prompts` joined with them, so PPO meets the requests its reward model was trained to
    judge: ('bundled', 'hh.jsonl.gz+bundled:helpful*11') -> (['hh.jsonl.gz'], 'bundled+hh.jsonl.gz=harmless-base').
    A file whose rows carry no `subset` is labelled as requests to decline where the source balances it with the
    demo set's helpful pairs (the mix the lab offers for a one-sided set such as hh-rlhf's harmless-base): PPO then
    leaves relevance out on them, as in the runs measured (README, Stop 54). ([], None) when there is nothing to add
    or `prompts` cannot be read as sources."""
    split = own_parts_in(prompts, pair_source)
    missing = [p for p in (split[1] if split else []) if _readable(p, allowed_dirs, files_only)]
    if not missing:
        return [], None
    balanced = "bundled:helpful" in _part_names(pair_source)
    parts = [f"{part}{data.LABEL_MARK}{DECLINE_PART_LABEL}" if balanced and unlabelled_file(part) else part
             for part in missing]
    return missing, data.PROMPT_JOIN.join([prompts.strip() or "bundled", *parts])


def _readable(part: str, allowed_dirs: list[Path] | None, files_only: bool) -> bool:
    """A file that exists where this lab may read (`allowed_dirs`), or a hub id unless `files_only`: a reward run's
    data moved or deleted since, or outside the app's folders, is not offered."""
    try:
        path = resolve_path(part, allowed_dirs)
    except ValueError:
        return False
    return path.is_file() if path is not None else not files_only


def unlabelled_file(part: str) -> bool:
    """Whether `part` is a local file whose first row carries no `subset` (a hub id's folders label its rows)."""
    path = Path(part).expanduser()
    if not path.is_file():
        return False
    stat = path.stat()
    return _first_row_unlabelled(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _first_row_unlabelled(path: str, mtime_ns: int, size: int) -> bool:
    """Read once per version of the file: the PPO tab asks again at every edit of its Prompts box."""
    try:
        for _, row in read_rows(Path(path)):
            return not row.get("subset")
    except (ValueError, OSError):
        return False
    return False


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
    """Sources joined by '+', `feedback:NAME[@N]` among them or not (`load_pairs` comes here for them). When one
    source has train/test splits, the pairs of the others join its train split, so its test pairs stay held out.
    A part's pairs keep their subset, or get the part's name as one, so a run can say what its mix was."""
    sets, notes = [], []
    for part in [p.strip() for p in source.split(MIX) if p.strip()]:
        part, times = repeat_count(part)
        if part.startswith(SOURCE_PREFIX):
            sets.append(load_feedback_pairs(*parse_part(part)))
        else:
            sets.append(data.load_pairs(part, allowed_dirs=allowed_dirs))
        if is_mix(source):
            sets[-1].pairs = [p if p.subset else replace(p, subset=Path(part).name) for p in sets[-1].pairs]
        if times > 1:  # the held-out pairs once: a repeat only weighs the part more in training
            train = [p for p in sets[-1].pairs if p.split != "test"]
            sets[-1].pairs = train * times + [p for p in sets[-1].pairs if p.split == "test"]
            sets[-1].notes.append(f"{part}: {len(train)} training pairs, each {times} times")
        notes += sets[-1].notes
    has_splits = any(p.split for s in sets for p in s.pairs)
    pairs = [p if p.split or not has_splits else replace(p, split="train") for s in sets for p in s.pairs]
    return PairSet(source, pairs[:limit] if limit else pairs, sum(s.dropped_identical for s in sets), notes)


def split_source(source: str, root: Path | None = None) -> list[str]:
    """The parts of a data source that are not feedback sets, after checking that those sets exist."""
    others = []
    for part in [p.strip() for p in source.split(MIX)] if is_feedback_source(source) or is_mix(source) else [source]:
        part = repeat_count(part)[0]
        if part.startswith(SOURCE_PREFIX):
            open_set(parse_part(part)[0], root)
        else:
            others.append(part)
    return others


def pin_source(source: str, root: Path | None = None) -> str:
    """Votes keep arriving while a reward model trains: fix each `feedback:NAME` to the votes there now (`@N`)."""
    parts = []
    for part in source.split(MIX):
        part, times = repeat_count(part)
        if part.startswith(SOURCE_PREFIX) and "@" not in part:
            name, _ = parse_part(part)
            part = f"{SOURCE_PREFIX}{name}@{len(open_set(name, root).votes())}"
        parts.append(part + (f"{REPEAT}{times}" if times > 1 else ""))
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


def check_prompt_source(source: str, allowed_dirs: list[Path] | None = None) -> None:
    """A prompt file must exist (within the allowed folders); a hub id needs the hub."""
    if source.startswith("bundled") or resolve_path(source, allowed_dirs) is not None:
        return
    if hub_files(source) is None:  # no plain data files: `datasets` reads it, from the hub
        models.require_hub(source)
