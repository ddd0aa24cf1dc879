"""lab/runs.py: run folders made, listed, reopened; status writes; cut-off runs marked; where runs live."""

from __future__ import annotations

import json
import threading
import time

import pytest

from lab import runs


def test_new_run_writes_config_and_queued_status(runs_root):
    run = runs.new_run("ppo", {"steps": 3}, runs_root)
    assert run.path.parent == runs_root and run.id.startswith("ppo-")
    assert run.config["kind"] == "ppo" and run.config["steps"] == 3 and run.kind == "ppo"
    assert run.status()["status"] == "queued" and run.summary() == {}
    assert runs.open_run(run.id, runs_root).path == run.path == runs.open_run(run.path).path
    given = runs_root / "mine"
    assert runs.new_run("reward", {}, path=given).path == given
    with pytest.raises(ValueError, match="not an empty folder"):
        runs.new_run("reward", {}, path=given)


def test_runs_listing_and_labels(runs_root):
    a = runs.new_run("reward", {"lr": 1}, runs_root)
    a.set_status("done", summary={"eval_accuracy": 0.71})
    ppo = runs.new_run("ppo", {"reward_model": str(a.path / "model")}, runs_root)
    assert [r.id for r in runs.list_runs(kind="reward", root=runs_root)] == [a.id]
    assert "accuracy 0.710" in a.label()
    ppo.set_status("done", summary={"reward_last": 0.4991})  # on its reward model's scale: named beside it
    assert f"rollout reward 0.499 by {a.id}" in ppo.label()
    with pytest.raises(ValueError, match="not a run folder"):
        runs.open_run("nope", runs_root)
    (a.path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')  # a line cut off by a crash
    assert a.metrics() == [{"step": 1}]


def test_reward_runs_of_equal_accuracy_read_apart_by_what_they_were_trained_on(runs_root):
    small = runs.new_run("reward", {"backbone": "embedded:all-minilm-l6-v2", "data": "bundled", "ensemble": 1},
                         runs_root)
    small.set_status("done", summary={"eval_accuracy": 0.974, "train_pairs": 248, "members": 1, "data": "bundled"})
    upload = str(runs_root / "uploads" / "mine.jsonl")  # an uploaded file: its name, never the server's path
    big = runs.new_run("reward", {"backbone": "distilroberta-base", "data": f"{upload}+bundled", "ensemble": 2},
                       runs_root)
    big.set_status("done", summary={"eval_accuracy": 0.974, "train_pairs": 547, "members": 2})
    hub = runs.new_run("reward", {"backbone": "distilroberta-base", "data": "Anthropic/hh-rlhf"}, runs_root)
    assert small.label().endswith("accuracy 0.974 · all-minilm-l6-v2 on bundled, 248 pairs")
    assert big.label().endswith("accuracy 0.974 · distilroberta-base × 2 on mine.jsonl+bundled, 547 pairs")
    assert str(runs_root) not in big.label()
    assert hub.label().endswith("queued · distilroberta-base on Anthropic/hh-rlhf")  # no summary yet: its config


def test_status_writes_from_two_threads_never_collide_and_done_is_final(runs_root):
    run = runs.new_run("demo", {}, runs_root)
    errors = []

    def hammer(status):
        try:
            for _ in range(200):
                run.set_status(status)
        except Exception as e:  # noqa: BLE001 - any collision is the failure under test
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(s,)) for s in ("running", "stopping")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    run.set_status("done")
    run.set_status("stopping")  # a Stop that arrives late
    assert run.status()["status"] == "done"
    assert not list(run.path.glob("*.tmp"))


def test_mark_interrupted_keeps_metrics_and_finished_runs(runs_root):
    cut = runs.new_run("reward", {}, runs_root)
    cut.set_status("running")
    cut.log_metrics({"step": 0, "loss": 2.0})
    done = runs.new_run("ppo", {}, runs_root)
    done.set_status("done")
    assert runs.mark_interrupted(runs_root) == [cut.id]
    assert cut.status()["status"] == "interrupted" and "stopped" in cut.status()["error"]
    assert [m["step"] for m in cut.metrics()] == [0] and done.status()["status"] == "done"
    assert [r.id for r in runs.list_runs(root=runs_root, status=("interrupted",))] == [cut.id]


def test_runs_root_env_then_persistent_storage_then_runs(tmp_path, monkeypatch):
    data = tmp_path / "data"
    monkeypatch.setattr(runs, "PERSISTENT_DIR", data)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LAB_RUNS_DIR", raising=False)
    assert runs.runs_root() == tmp_path / "runs"  # no /data: the project's runs/
    data.mkdir()
    assert runs.runs_root() == data / "rlhf-lab-runs"  # a Space's persistent storage
    monkeypatch.setenv("LAB_RUNS_DIR", str(tmp_path / "elsewhere"))
    assert runs.runs_root() == tmp_path / "elsewhere"  # the variable wins
    monkeypatch.delenv("LAB_RUNS_DIR")
    monkeypatch.setattr(runs.os, "access", lambda path, mode: False)  # /data read-only
    assert runs.runs_root() == tmp_path / "runs"


def test_a_stopped_run_is_labelled_and_never_the_default(runs_root):
    done = runs.new_run("reward", {}, runs_root)
    done.log_metrics({"step": 1})
    done.set_status("done", summary={"steps": 40, "eval_accuracy": 0.7})
    time.sleep(0.02)
    stopped = runs.new_run("reward", {}, runs_root)  # newer, but stopped half-way
    stopped.set_status("stopped", summary={"steps": 20, "eval_accuracy": 0.921})
    time.sleep(0.02)
    cut = runs.new_run("ppo", {}, runs_root)
    cut.set_status("stopped")  # stopped before its first step
    assert "STOPPED after 20 steps (not finished)" in stopped.label() and "done" in done.label()
    assert "STOPPED after 0 steps" in cut.label() and cut.trained_steps() == 0
    listed = runs.list_runs(kind="reward", root=runs_root)
    choices = [(r.label(), r.id) for r in listed]
    assert choices[0][1] == stopped.id  # listed first (newest), selectable
    assert runs.default_choice(choices, listed) == done.id  # but the default is the finished one
    assert runs.default_choice(choices, listed, stopped.id) == stopped.id  # a visitor's own pick stays
    assert runs.default_choice(choices[:1], listed[:1]) is None  # nothing finished: no default


def test_pace_is_measured_on_this_machine_only(runs_root):
    assert runs.measured_pace("ppo", runs_root) is None
    here = runs.new_run("ppo", {"batch_size": 8}, runs_root)
    assert here.config["host"] == runs.HOST
    for step, t in ((1, 100.0), (2, 112.0), (3, 124.0)):
        with open(here.path / "metrics.jsonl", "a") as fh:
            fh.write(f'{{"time": {t}, "step": {step}}}\n')
    here.set_status("done")
    pace = runs.measured_pace("ppo", runs_root)
    assert pace["run"] == here.id and pace["seconds_per_step"] == 12.0 and pace["steps"] == 2
    time.sleep(0.02)
    elsewhere = runs.new_run("ppo", {}, runs_root)
    config = json.loads((elsewhere.path / "config.json").read_text())
    (elsewhere.path / "config.json").write_text(json.dumps({**config, "host": "another-machine"}))
    for step in (1, 2):
        elsewhere.log_metrics({"step": step})
    elsewhere.set_status("done")
    assert runs.measured_pace("ppo", runs_root)["run"] == here.id  # a run from elsewhere says nothing here
    assert runs.duration(40) == "40 s" and runs.duration(720) == "12 min" and runs.duration(3900) == "1 h 05 min"
