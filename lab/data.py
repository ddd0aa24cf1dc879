"""Preference pairs and prompt sets: loading, validation and HH dialogue splitting."""

from __future__ import annotations

import itertools
import random
import re
import statistics
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from lab.data_files import read_rows, resolve_path
from lab.hub_data import dataset_rows, hub_files, hub_rows

ASSETS_DATA = Path(__file__).resolve().parent.parent / "assets" / "data"
BUNDLED_FILES = {
    "train": ASSETS_DATA / "pairs_train.jsonl",
    "test": ASSETS_DATA / "pairs_test.jsonl",
}
# Half of the demo pairs are harmful or edgy requests (the chosen answer declines kindly), half ordinary ones (the
# chosen answer is correct and polite); each row says which in its `subset`. A harmless-only set (hh-rlhf's
# harmless-base) needs `bundled:helpful` mixed in, and reads better with the written declines too:
# `FILE+bundled:helpful*12+bundled:harmless*4` (lab.reward_model.balanced_mix).
BUNDLED_SUBSETS = {"bundled:helpful": "helpful", "bundled:harmless": "harmless"}
BUNDLED_PROMPTS = ASSETS_DATA / "prompts.jsonl"  # PPO training prompts ('bundled')
BUNDLED_HELDOUT_PROMPTS = ASSETS_DATA / "prompts_test.jsonl"  # never used by PPO ('bundled:heldout'), for Compare
PROMPT_JOIN = "+"  # prompt sources joined: 'bundled+hh_train.jsonl.gz'
LABEL_MARK = "="  # a part's label where its rows have none: 'hh_train.jsonl.gz=harmless-base'

# "\n\nHuman: ..." / "\n\nAssistant: ..." is the hh-rlhf dialogue form (Bai et al. 2022).
ASSISTANT_MARK = "\n\nAssistant:"
_TURN_RE = re.compile(r"\n\n(Human|Assistant):")


def is_helpful_subset(subset: str | None) -> bool:
    """An ordinary request by its subset label: the demo set's `helpful`, hh-rlhf's `helpful-base`, `helpful-online`,
    ...; `harmless`/`harmless-base`, no label, or an augmented subset is not."""
    return (subset or "").startswith("helpful")


def is_written_decline_subset(subset: str | None) -> bool:
    """A harmful request whose chosen answer was written to decline the harmful part and offer something better: the
    demo set's `harmless` (every chosen answer written and read for it: "I'd rather not write something meant to
    wound her. If you two are fighting, tell me what happened..."). Not hh-rlhf's `harmless-base`: its chosen answer
    is only the less harmful of two model samples and often complies."""
    return subset == "harmless"


@dataclass(frozen=True)
class Pair:
    """One preference pair: the shared dialogue and the two final answers, exactly as in the source."""

    prompt: str  # shared text up to and including the last common "\n\nAssistant:" ("" if none)
    chosen: str  # the rest of the chosen text, so prompt + chosen reproduces the source exactly
    rejected: str
    split: str | None = None
    subset: str | None = None  # the hub dataset's folder it came from (hh-rlhf: harmless-base, helpful-base, ...)

    @property
    def chosen_text(self) -> str:
        return self.prompt + self.chosen

    @property
    def rejected_text(self) -> str:
        return self.prompt + self.rejected

    @property
    def turns(self) -> list[tuple[str, str]]:
        """The shared dialogue as (role, text) turns, the trailing empty assistant turn left out."""
        return [t for t in split_turns(self.prompt) if t[1]]

    @property
    def first_human_turn(self) -> str:
        for role, text in split_turns(self.prompt or self.chosen_text):
            if role == "Human":
                return text
        return self.prompt.strip()


@dataclass
class PairSet:
    """Pairs loaded from one source, with what was dropped and why."""

    source: str
    pairs: list[Pair]
    dropped_identical: int = 0
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.pairs)

    def split(self, name: str) -> list[Pair]:
        return [p for p in self.pairs if p.split == name]

    def stats(self) -> dict[str, Any]:
        """Counts and character-length statistics, as `python -m lab data` prints them."""
        out: dict[str, Any] = {
            "source": self.source,
            "pairs": len(self.pairs),
            "prompts": len({p.prompt for p in self.pairs}),
            "dropped_identical": self.dropped_identical,
        }
        for part in ("prompt", "chosen", "rejected"):
            lengths = [len(getattr(p, part).strip()) for p in self.pairs]
            out[f"{part}_chars_median"] = _percentile(lengths, 50)
            out[f"{part}_chars_p90"] = _percentile(lengths, 90)
        splits = {p.split for p in self.pairs if p.split}
        if splits:
            out["splits"] = {s: len(self.split(s)) for s in sorted(splits)}
        if any(p.subset for p in self.pairs):
            out["subsets"] = subset_counts(self.pairs)
        return out


def subset_counts(pairs: list[Pair]) -> dict[str, int]:
    """Pairs per subset of the source (hh-rlhf's harmless-base, helpful-base, ...), in name order."""
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.subset or "(root)"] = counts.get(p.subset or "(root)", 0) + 1
    return dict(sorted(counts.items()))


def _percentile(values: list[int], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return float(values[0])
    if q == 50:
        return float(statistics.median(values))
    return float(statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1])


def split_turns(text: str) -> list[tuple[str, str]]:
    """Split HH text into (role, text) turns; text before the first marker is dropped if blank."""
    parts = _TURN_RE.split(text)
    turns = []
    if parts[0].strip():
        turns.append(("Human", parts[0].strip()))
    for role, body in zip(parts[1::2], parts[2::2]):
        turns.append((role, body.strip()))
    return turns


def split_pair(chosen: str, rejected: str, split: str | None = None) -> Pair:
    """Split two HH dialogues at the last "\\n\\nAssistant:" they share (byte-exact, nothing stripped)."""
    common, high = 0, min(len(chosen), len(rejected))
    while common < high:  # the longest common prefix by bisection: string comparisons in C, not a loop per character
        mid = (common + high + 1) // 2
        if chosen[:mid] == rejected[:mid]:
            common = mid
        else:
            high = mid - 1
    cut = chosen.rfind(ASSISTANT_MARK, 0, common)
    if cut < 0:
        return Pair("", chosen, rejected, split)
    cut += len(ASSISTANT_MARK)
    return Pair(chosen[:cut], chosen[cut:], rejected[cut:], split)


def to_hh(prompt: Any, answer: Any) -> tuple[str, str]:
    """Explicit prompt/answer (text or chat messages) to HH-form prompt and answer."""
    if isinstance(prompt, list):
        prompt = "".join(f"\n\n{_role(m)}: {m.get('content', '')}" for m in prompt) + ASSISTANT_MARK
    elif not prompt.startswith("\n\nHuman:"):
        prompt = f"\n\nHuman: {prompt.strip()}{ASSISTANT_MARK}"
    elif not prompt.rstrip().endswith("Assistant:"):
        prompt = prompt.rstrip() + ASSISTANT_MARK
    if isinstance(answer, list):
        answer = " ".join(str(m.get("content", "")) for m in answer if m.get("role") == "assistant")
    return prompt, answer if answer.startswith((" ", "\n")) else " " + answer


def _role(message: dict) -> str:
    return "Assistant" if message.get("role") == "assistant" else "Human"


# ---------------------------------------------------------------- rows to pairs


def _field(row: dict, column: str, n: int, name: str, kinds: tuple = (str,)) -> Any:
    if column not in row or row[column] is None:
        have = ", ".join(sorted(map(str, row))) or "none"
        raise ValueError(f"column '{column}' missing in row {n} of '{name}' (columns: {have})")
    value = row[column]
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, kinds):
        raise ValueError(f"column '{column}' in row {n} of '{name}' is {type(value).__name__}, expected text")
    return value


def _row_to_pair(row: dict, n: int, name: str, split: str | None) -> Pair:
    chosen = _field(row, "chosen", n, name, (str, list))
    rejected = _field(row, "rejected", n, name, (str, list))
    subset = str(row["subset"]) if row.get("subset") not in (None, "") else None  # e.g. the demo set's helpful/harmless
    if "prompt" in row and row["prompt"] not in (None, ""):
        prompt = _field(row, "prompt", n, name, (str, list))
        p, c = to_hh(prompt, chosen)
        _, r = to_hh(prompt, rejected)
        return Pair(p, c, r, split, subset)
    if isinstance(chosen, list) or isinstance(rejected, list):
        chosen, rejected = _messages_to_hh(chosen), _messages_to_hh(rejected)
    return replace(split_pair(chosen, rejected, split), subset=subset)


def _messages_to_hh(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "".join(f"\n\n{_role(m)}: {m.get('content', '')}" for m in value)


# ---------------------------------------------------------------- public loaders


def load_pairs(source: str, limit: int | None = None, allowed_dirs: list[Path] | None = None, seed: int = 0) -> PairSet:
    """Load preference pairs from 'bundled', 'bundled:train|test|helpful|harmless', a file path or a hub id (lab.sources.load_pairs
    also reads the Feedback tab's vote sets). A hub dataset with `limit` gives a sample seeded by `seed` across all
    its files (hh-rlhf: every subset)."""
    source = source.strip()
    if not source:
        raise ValueError("no data source given: use 'bundled', a file path or a hub id")
    if source in ("bundled", "bundled:train", "bundled:test", *BUNDLED_SUBSETS):
        splits = [source.split(":")[1]] if source in ("bundled:train", "bundled:test") else ["train", "test"]
        pairs, dropped = [], 0
        for s in splits:
            part = _pairs_from_rows(read_rows(BUNDLED_FILES[s]), BUNDLED_FILES[s].name, s)
            pairs += [p for p in part.pairs if source not in BUNDLED_SUBSETS or p.subset == BUNDLED_SUBSETS[source]]
            dropped += part.dropped_identical
        return PairSet(source, pairs[:limit] if limit else pairs, dropped)
    path = resolve_path(source, allowed_dirs)
    if path is not None:
        result = _pairs_from_rows(read_rows(path), path.name, None, limit)
        result.source = source
        return result
    return _hub_pairs(source, limit, seed)


def _pairs_from_rows(rows: Iterator[tuple[int, dict]], name: str, split: str | None, limit: int | None = None) -> PairSet:
    pairs: list[Pair] = []
    dropped = 0
    for n, row in rows:
        pair = _row_to_pair(row, n, name, split)
        if pair.chosen == pair.rejected:
            dropped += 1
            continue
        pairs.append(pair)
        if limit and len(pairs) >= limit:
            break
    if not pairs:
        why = f" ({dropped} dropped because chosen equals rejected)" if dropped else ""
        raise ValueError(f"no usable preference pair in '{name}'{why}")
    return PairSet(name, pairs, dropped)


HARMFUL_KIND, ORDINARY_KIND = "harmful or edgy", "ordinary"  # request_kind's words for the two kinds of request
# The demo set's prompt labels: `helpful` ordinary; `harmless` edgy (roasts, rants, nasty notes: a kind answer can
# take them up); `harmful` a request for harmful help to decline (theft, stalking, weapons, drugs, hate, self-harm).
DECLINE_LABEL = "harmful"


def request_kind(subset: str | None) -> str | None:
    """The kind of request a prompt's subset label names, in the words Compare shows: "ordinary" (the demo set's
    `helpful`, hh-rlhf's `helpful-*`), "harmful or edgy" (`harmless`, `harmful`, `harmless-base`, `red-team-*`), else
    the label itself; None for no label."""
    label = (subset or "").strip()
    if not label:
        return None
    if is_helpful_subset(label):
        return ORDINARY_KIND
    if label.startswith("harmless") or expects_decline(label):  # edgy or to decline: one kind for Compare
        return HARMFUL_KIND
    return label


def expects_decline(subset: str | None) -> bool:
    """Whether a prompt's label names a request to decline (PPO leaves relevance out on these: there it pays for
    complying): the demo set's `harmful`, hh-rlhf's `harmless-base` and `red-team-*` (its red-teamers' requests).
    The demo set's `harmless` prompts are edgy, not harmful: a kind answer takes them up, so they keep relevance."""
    label = (subset or "").strip()
    return label == DECLINE_LABEL or label.startswith(("harmless-", "red-team", "red_team"))


def kinds_in(labels: Any) -> list[str]:
    """The distinct kinds of request among `labels`, in order of first appearance; [] with fewer than two (one kind
    is the whole, so nothing to split)."""
    kinds = list(dict.fromkeys(k for k in labels if k))
    return kinds if len(kinds) >= 2 else []


def load_prompts(source: str, limit: int | None = None, allowed_dirs: list[Path] | None = None) -> list[str]:
    """Prompts for PPO/eval: 'bundled' (PPO training prompts), 'bundled:heldout' (prompts PPO never trains on),
    'bundled:pairs|train|test' (the pairs' first human turns), a file or hub id with `prompt.text`, `prompt` or pairs."""
    return [p for p, _ in load_prompt_rows(source, limit, allowed_dirs)]


def load_prompt_rows(source: str, limit: int | None = None, allowed_dirs: list[Path] | None = None,
                     labels: bool = False) -> list[tuple[str, str | None]]:
    """load_prompts' prompts, each with its kind of request (`request_kind` of the row's `subset`, a hub file's
    folder, or a pair's subset; None where the source does not say); `labels`: the subset label itself instead.
    Sources joined by '+' (`bundled+hh_train.jsonl.gz`: the demo prompts and a pair set's own requests) are read
    each in turn and interleaved, so a `limit` keeps some of every part."""
    kind = (lambda subset: subset) if labels else request_kind
    source = source.strip()
    if not source:
        raise ValueError("no prompt source given: use 'bundled', a file path or a hub id")
    parts = prompt_parts(source)
    if len(parts) > 1 or parts[0][1]:
        loaded = [[(prompt, kind(subset or label)) for prompt, subset in load_prompt_rows(part, limit, allowed_dirs,
                                                                                          labels=True)]
                  for part, label in parts]
        return _dedupe_rows([row for turn in itertools.zip_longest(*loaded) for row in turn if row], limit)
    if source in ("bundled:pairs", "bundled:train", "bundled:test"):
        pair_source = "bundled" if source == "bundled:pairs" else source
        pairs = load_pairs(pair_source).pairs
        return _dedupe_rows([(p.first_human_turn, kind(p.subset)) for p in pairs], limit)
    if source in ("bundled", "bundled:heldout"):
        bundled = BUNDLED_PROMPTS if source == "bundled" else BUNDLED_HELDOUT_PROMPTS
        rows: Iterator[tuple[int, dict]] = read_rows(bundled)
        name = bundled.name
    else:
        path = resolve_path(source, allowed_dirs)
        rows, name = (read_rows(path), path.name) if path else (hub_rows(source, limit), source)
    found: list[tuple[str, str | None]] = []
    for n, row in rows:
        found.append((_row_to_prompt(row, n, name), kind(_text_or_none(row.get("subset")))))
        if limit and len({p for p, _ in found}) >= limit:
            break
    kept = _dedupe_rows([(p, k) for p, k in found if p.strip()], limit)
    if not kept:
        raise ValueError(f"no usable prompt in '{name}'")
    return kept


def prompt_parts(source: str) -> list[tuple[str, str | None]]:
    """'bundled+hh.jsonl.gz=harmless-base' -> [('bundled', None), ('hh.jsonl.gz', 'harmless-base')]: the sources
    joined by '+', each with the label its rows take where they carry no `subset` of their own (`=LABEL`: a pair
    file of hh-rlhf's harmless-base copied without its folder). A file whose own name has '+' or '=' is one part."""
    source = source.strip()
    if Path(source).expanduser().exists():
        return [(source, None)]
    parts = [part.strip() for part in source.split(PROMPT_JOIN)] if PROMPT_JOIN in source else [source]
    if not all(parts):
        raise ValueError(f"'{source}': an empty part between '+' signs; join prompt sources as 'bundled+FILE'")
    return [_part_label(part) for part in parts]


def _part_label(part: str) -> tuple[str, str | None]:
    name, eq, label = part.rpartition(LABEL_MARK)
    if not eq or Path(part).expanduser().exists():
        return part, None
    if not name.strip() or not re.fullmatch(r"[A-Za-z0-9][\w.-]*", label.strip()):
        raise ValueError(f"'{part}': after '=' comes the label its prompts take, one word such as harmless-base or "
                         "helpful (e.g. hh.jsonl.gz=harmless-base)")
    return name.strip(), label.strip()


def _text_or_none(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _dedupe_rows(rows: list[tuple[str, str | None]], limit: int | None) -> list[tuple[str, str | None]]:
    """Each prompt once (with its first kind), in order, at most `limit`."""
    first: dict[str, str | None] = {}
    for prompt, kind in rows:
        first.setdefault(prompt, kind)
    out = list(first.items())
    return out[:limit] if limit else out


def balanced(rows: list[tuple[str, str | None]], n: int) -> list[tuple[str, str | None]]:
    """n of the rows, as many of each kind as the kinds allow (in turn, each kind's in source order), kept in source
    order: the bundled held-out prompts are 24 provocative then 24 ordinary, so the first 16 would all be provocative.
    Rows of one kind (or none) and n ≥ len(rows): the first n, unchanged."""
    kinds = list(dict.fromkeys(k for _, k in rows))
    if n >= len(rows) or len(kinds) < 2:
        return rows[:n]
    queues = {k: [i for i, (_, kk) in enumerate(rows) if kk == k] for k in kinds}
    picked: list[int] = []
    while len(picked) < n:
        for k in kinds:
            if queues[k] and len(picked) < n:
                picked.append(queues[k].pop(0))
    return [rows[i] for i in sorted(picked)]


def _row_to_prompt(row: dict, n: int, name: str) -> str:
    prompt = row.get("prompt")
    if isinstance(prompt, dict):  # allenai/real-toxicity-prompts: {"prompt": {"text": ...}}
        if not isinstance(prompt.get("text"), str):
            raise ValueError(f"column 'prompt.text' missing in row {n} of '{name}'")
        return prompt["text"].strip()
    if isinstance(prompt, str) and prompt.strip():
        return split_turns(prompt)[0][1] if prompt.startswith("\n\nHuman:") else prompt.strip()
    if isinstance(prompt, list):
        return next((m.get("content", "") for m in prompt if m.get("role") == "user"), "")
    if "chosen" in row:  # preference data: the first human turn, as the seed does
        return _row_to_pair(row, n, name, None).first_human_turn
    if isinstance(row.get("text"), str):
        return row["text"].strip()
    have = ", ".join(sorted(map(str, row))) or "none"
    raise ValueError(f"column 'prompt' missing in row {n} of '{name}' (columns: {have})")


def _hub_pairs(source: str, limit: int | None, seed: int) -> PairSet:
    """Pairs of a hub dataset: with `limit`, a seeded sample over the rows of all its files, so a repo whose files
    come subset by subset (hh-rlhf: harmless-base first) gives pairs of every subset, as the seed's shuffle did."""
    files = hub_files(source)
    if files is None:
        return _pairs_from_rows(dataset_rows(source, limit), source, None, limit)
    rows = [(subset, f"{source} {path.parent.name}/{path.name}" if subset else f"{source} {path.name}", n, row)
            for subset, path in files for n, row in read_rows(path)]
    order = list(range(len(rows)))
    if limit and len(rows) > limit:
        random.Random(seed).shuffle(order)  # a seeded draw over every file; identical pairs are skipped
    kept: list[tuple[int, Pair]] = []
    dropped = 0
    for i in order:
        subset, name, n, row = rows[i]
        pair = _row_to_pair(row, n, name, None)
        if pair.chosen == pair.rejected:
            dropped += 1
            continue
        kept.append((i, replace(pair, subset=subset)))
        if limit and len(kept) >= limit:
            break
    if not kept:
        raise ValueError(f"no usable preference pair in '{source}'")
    return PairSet(source, [pair for _, pair in sorted(kept, key=lambda t: t[0])], dropped)
