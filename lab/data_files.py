"""Data files on disk: resolving a local path against the allow-list, and reading its rows (JSON lines, gzipped JSON
lines, JSON, CSV, parquet) with errors that name the file and the line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Iterator

FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".csv", ".parquet")


def read_rows(path: Path) -> Iterator[tuple[int, dict]]:
    """Yield (line or row number, row) from a data file; raise ValueError naming file and line."""
    name = path.name
    if not path.exists():
        raise ValueError(f"data file '{name}' does not exist")
    if path.is_dir():
        raise ValueError(f"'{name}' is a folder, not a data file")
    if path.stat().st_size == 0:
        raise ValueError(f"data file '{name}' is empty")
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".jsonl.gz") else path.suffix
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"'{name}': unsupported file type '{suffix}' (use {', '.join(FILE_SUFFIXES)})")
    if suffix in (".jsonl", ".jsonl.gz"):
        yield from _read_jsonl(path, suffix == ".jsonl.gz")
    elif suffix == ".json":
        yield from _read_json(path)
    else:
        yield from _read_table(path, suffix)


def _read_jsonl(path: Path, gz: bool) -> Iterator[tuple[int, dict]]:
    opener = gzip.open if gz else open
    try:
        with opener(path, "rb") as fh:
            for n, raw in enumerate(fh, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"'{path.name}' line {n}: not UTF-8 text ({e.reason} at byte {e.start})") from None
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"'{path.name}' line {n}: invalid JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"'{path.name}' line {n}: expected a JSON object, got {type(row).__name__}")
                yield n, row
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ValueError(f"cannot read '{path.name}': {e}") from None


def _read_json(path: Path) -> Iterator[tuple[int, dict]]:
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ValueError(f"'{path.name}': not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"'{path.name}' line {e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(data, dict):
        data = data.get("data", data.get("rows"))
    if not isinstance(data, list):
        raise ValueError(f"'{path.name}': expected a JSON list of objects")
    for n, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise ValueError(f"'{path.name}' item {n}: expected a JSON object, got {type(row).__name__}")
        yield n, row


def _read_table(path: Path, suffix: str) -> Iterator[tuple[int, dict]]:
    import pandas as pd  # heavy: only CSV and parquet files need it

    try:
        if suffix == ".csv":
            frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
            first = 2  # row 1 is the header
        else:
            frame = pd.read_parquet(path)
            first = 1
    except UnicodeDecodeError as e:
        raise ValueError(f"'{path.name}': not UTF-8 text ({e.reason} at byte {e.start})") from None
    except Exception as e:  # pandas/pyarrow raise many types for a broken file
        raise ValueError(f"cannot read '{path.name}': {type(e).__name__}: {e}") from None
    for i, row in enumerate(frame.to_dict(orient="records")):
        yield first + i, row


def looks_like_path(source: str) -> bool:
    """A local path rather than a hub id: absolute, relative with dots, a data file's suffix, or any '..' part."""
    return (source.startswith(("/", ".", "~")) or source.endswith(FILE_SUFFIXES) or "\\" in source
            or ".." in Path(source).parts)


def resolve_path(source: str, allowed_dirs: list[Path] | None = None) -> Path | None:
    """A local path for `source`, or None when it names a hub dataset; checks the allow-list if given.
    Messages name what the visitor typed and folders relative to the app, never the server's absolute paths."""
    if not looks_like_path(source) and not Path(source).exists():
        return None
    path = Path(source).expanduser().resolve()
    if allowed_dirs is not None and not any(_is_within(path, d) for d in allowed_dirs):
        where = ", ".join(dict.fromkeys(_shown_folder(d) for d in allowed_dirs))
        raise ValueError(f"'{source}' is not in a folder this lab may read ({where}): upload the file instead")
    if not path.exists():
        raise ValueError(f"data file '{source}' does not exist")
    return path


def _shown_folder(folder: Path) -> str:
    """A folder as the visitor may see it: relative to the app's working folder, else only its own name."""
    folder = Path(folder).resolve()
    try:
        return f"{folder.relative_to(Path.cwd().resolve())}/"
    except ValueError:
        return f"{folder.name}/"


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(Path(folder).resolve())
        return True
    except ValueError:
        return False
