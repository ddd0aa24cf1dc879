"""A hub dataset's data: its split's files through the Hugging Face cache, or `datasets` for a repo without plain data
files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from lab.data_files import FILE_SUFFIXES, looks_like_path, read_rows
from lab.models import hub_folder, require_hub


def parse_hub_id(source: str) -> tuple[str, str | None, str]:
    """'owner/name[/data_dir][:split]' -> (repo id, data_dir, split)."""
    spec, _, split = source.partition(":")
    parts = spec.split("/")
    if len(parts) < 2 or not all(parts) or ".." in parts or not re.fullmatch(r"[\w.\-/]+", spec):
        raise ValueError(
            f"'{source}' is neither 'bundled', an existing file nor a hub id (owner/name[/data_dir][:split])"
        )
    return "/".join(parts[:2]), "/".join(parts[2:]) or None, split or "train"


def hub_files(source: str) -> list[tuple[str | None, Path]] | None:
    """The data files of a hub dataset's split as (subset, local file), read through the Hugging Face cache
    (downloaded first when the hub is reachable); subset = the folder a file sits in (hh-rlhf's 'harmless-base'),
    None at the top. Files are those whose path names the split (`harmless-base/train.jsonl.gz`,
    `data/test-00000-of-00001.parquet`); a repo whose files name no split has them all in 'train'
    (real-toxicity-prompts' `prompts.jsonl`). None when the repo holds no plain data files (a loading script)."""
    repo, data_dir, split = parse_hub_id(source)
    prefix = f"{data_dir}/" if data_dir else ""
    # the split's files first (a download fetches only those), then every data file (a repo without split names)
    for middle in (f"*{split}*", "*"):
        folder = hub_folder(repo, "dataset", allow_patterns=[f"{prefix}{middle}{suffix}" for suffix in FILE_SUFFIXES])
        base = folder / data_dir if data_dir else folder
        files = sorted(p for p in base.rglob("*") if p.is_file() and _is_data_file(p.relative_to(folder)))
        words = {p: set(re.split(r"[^a-z0-9]+", str(p.relative_to(folder)).lower())) for p in files}
        named = [p for p in files if split in words[p]]
        if named:
            break
    if not named and split == "train" and not any(words[p] & {"test", "validation", "valid", "dev"} for p in files):
        named = files
    if not files:
        return None
    if not named:
        raise ValueError(f"hub dataset '{repo}' has no '{split}' split in its files")
    return [(str(p.parent.relative_to(folder)) if p.parent != folder else None, p) for p in named]


def _is_data_file(rel: Path) -> bool:
    """A data file of a dataset repo, not its metadata (dataset_info.json, .huggingface/, hidden files)."""
    return (rel.name.endswith(FILE_SUFFIXES) and not rel.name.startswith("dataset_info")
            and not any(part.startswith(".") for part in rel.parts))


def hub_test_source(source: str) -> str | None:
    """'<hub id>:test' when `source` is a hub dataset named without a split whose files have a test split."""
    if ":" in source or looks_like_path(source) or source.startswith(("bundled", "feedback:")):
        return None
    try:
        test = f"{source}:test"
        return test if hub_files(test) else None
    except ValueError:
        return None


def hub_rows(source: str, limit: int | None) -> Iterator[tuple[int, dict]]:
    """Rows of a hub dataset's split in file order (prompts): its files through the cache, else `datasets`; a row
    without a `subset` gets its file's folder (hh-rlhf's 'harmless-base') as one."""
    files = hub_files(source)
    if files is None:
        yield from dataset_rows(source, limit)
        return
    n = 0
    for subset, path in files:
        for _, row in read_rows(path):
            n += 1
            yield n, ({**row, "subset": subset} if subset and not row.get("subset") else row)


def dataset_rows(source: str, limit: int | None) -> Iterator[tuple[int, dict]]:
    """A hub dataset without plain data files, through `datasets.load_dataset` (needs the hub)."""
    repo, data_dir, split = parse_hub_id(source)
    require_hub(source)
    import datasets  # heavy: only hub sources need it

    try:
        ds = datasets.load_dataset(repo, data_dir=data_dir, split=split)
    except Exception as e:  # datasets raises many types: not found, gated, bad split, network
        raise ValueError(f"could not load hub dataset '{source}': {type(e).__name__}: {e}") from None
    for n, row in enumerate(ds, start=1):
        yield n, row
        if limit and n >= limit * 2:  # identical pairs are dropped, so read a little more than asked
            break
