"""`python -m lab`: data (one JSON line, --show), one-line errors with exit code 2, job failures with 1; only lab/cli.py
holds the command line."""

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


def test_a_job_failure_exits_1_and_bad_input_found_by_the_job_exits_2(runs_root, monkeypatch, capsys):
    from dataclasses import replace

    from lab import cli

    def broken(ctx):
        raise RuntimeError("boom")

    def refuses(ctx):
        raise ValueError("the prompt set is empty")

    def bad_json(ctx):  # a ValueError of another type is bad input too: the exit code comes from the type, not a string
        json.loads("{oops")

    def says_value_error(ctx):
        raise RuntimeError("ValueError: not really")

    for fn, code, message in [(broken, 1, "error: RuntimeError: boom"), (refuses, 2, "error: the prompt set is empty"),
                              (bad_json, 2, "error: Expecting property name"),
                              (says_value_error, 1, "error: RuntimeError: ValueError: not really")]:
        stage = replace(cli.STAGES["ppo"], prepare=lambda args: {},
                        finish=lambda args, config, fn=fn: cli.run_job("demo", fn, config))
        monkeypatch.setitem(cli.STAGES, "ppo", stage)
        assert main(["ppo", "--reward-model", "unused"]) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(message)


def test_stage_modules_leave_the_command_line_to_lab_cli():
    from pathlib import Path

    import lab

    for path in Path(lab.__file__).parent.rglob("*.py"):
        if path.name not in ("cli.py", "__main__.py"):  # __main__ calls the CLI
            text = path.read_text()
            assert "import argparse" not in text and "from lab.cli import" not in text, path
