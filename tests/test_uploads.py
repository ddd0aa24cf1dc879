"""Uploads are bounded in size and rows before anything parses them."""

from __future__ import annotations

import dataclasses

import pytest

from lab.presets import CPU
from lab.ui.uploads import check_upload


def test_oversized_upload_is_refused(tmp_path):
    limits = dataclasses.replace(CPU.limits, max_upload_mb=0.001)
    big = tmp_path / "big.jsonl"
    big.write_text('{"chosen": "a", "rejected": "b"}\n' * 100)
    with pytest.raises(ValueError, match="big.jsonl' is .* MB; the limit here is 0.001 MB"):
        check_upload(big, limits)


def test_too_many_rows_is_refused_and_small_files_pass(tmp_path):
    limits = dataclasses.replace(CPU.limits, max_upload_rows=10)
    many = tmp_path / "many.csv"
    many.write_text("chosen,rejected\n" + "a,b\n" * 11)
    with pytest.raises(ValueError, match="more than 10 rows"):
        check_upload(many, limits)
    few = tmp_path / "few.csv"
    few.write_text("chosen,rejected\n" + "a,b\n" * 10)
    assert check_upload(few, limits) == few
