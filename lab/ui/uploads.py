"""Checks on uploaded files before anything parses them: size and row count within the preset's limits."""

from __future__ import annotations

import gzip
from pathlib import Path

from lab.presets import Limits


def count_rows(path: Path, stop_after: int) -> int:
    """Lines in a (gzipped) text file, counting no further than `stop_after` + 1."""
    opener = gzip.open if path.name.endswith(".gz") else open
    n = 0
    with opener(path, "rb") as fh:
        for _ in fh:
            n += 1
            if n > stop_after:
                break
    return n


def check_upload(path: Path, limits: Limits) -> Path:
    """The uploaded file's path if it is within the size and row limits, else ValueError saying which."""
    size_mb = path.stat().st_size / 2**20
    if size_mb > limits.max_upload_mb:
        raise ValueError(f"upload '{path.name}' is {size_mb:.3g} MB; the limit here is {limits.max_upload_mb:g} MB")
    if path.suffix != ".parquet":
        rows = count_rows(path, limits.max_upload_rows + 1)  # +1: a CSV header
        if rows > limits.max_upload_rows + 1:
            raise ValueError(f"upload '{path.name}' has more than {limits.max_upload_rows} rows, the limit here")
    return path
