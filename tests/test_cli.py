"""`python -m lab data`: one JSON line, --show, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys

from lab.cli import main


def test_data_command_prints_stats_and_a_pair(capsys):
    assert main(["data", "bundled", "--show", "0"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["pairs"] >= 150 and "chosen_chars_p90" in lines[0]
    assert set(lines[1]) == {"index", "prompt", "chosen", "rejected"}
    assert lines[1]["prompt"].startswith("\n\nHuman:")


def test_bad_source_exits_2_with_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"chosen": "a"}\n')
    proc = subprocess.run([sys.executable, "-m", "lab", "data", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "column 'rejected' missing in row 1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_show_out_of_range(capsys):
    assert main(["data", "bundled", "--show", "100000"]) == 2
    assert "out of range" in capsys.readouterr().err
