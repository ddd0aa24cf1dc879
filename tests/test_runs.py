"""lab/runs.py: run folders made, listed, reopened; status writes; cut-off runs marked; where runs live."""

from __future__ import annotations

import threading

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
    runs.new_run("ppo", {}, runs_root)
    assert [r.id for r in runs.list_runs(kind="reward", root=runs_root)] == [a.id]
    assert "accuracy 0.710" in a.label()
    with pytest.raises(ValueError, match="not a run folder"):
        runs.open_run("nope", runs_root)
    (a.path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "lo')  # a line cut off by a crash
    assert a.metrics() == [{"step": 1}]


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
