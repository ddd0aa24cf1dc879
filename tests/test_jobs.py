"""lab/jobs.py: one job at a time, stop, failure captured, runs reloaded after a restart."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from lab import runs
from lab.jobs import JobBusy, JobManager


def counting_job(ctx):
    """Logs a metric per step; honours stop between steps."""
    for step in range(ctx.config.get("steps", 5)):
        if ctx.stopping:
            break
        ctx.log({"step": step, "loss": 1.0 / (step + 1)})
        ctx.set_progress((step + 1) / ctx.config.get("steps", 5), f"step {step + 1}")
        time.sleep(ctx.config.get("sleep", 0))
    (ctx.run.path / "model").mkdir()
    return {"steps": step + 1}


def test_job_runs_logs_metrics_and_finishes(runs_root):
    manager = JobManager(runs_root)
    job = manager.start("demo", counting_job, {"steps": 3}, owner="alice")
    manager.wait(10)
    assert job.status == "done" and job.summary == {"steps": 3}
    run = runs.open_run(job.id, runs_root)
    assert [m["step"] for m in run.metrics()] == [0, 1, 2]
    assert run.status()["status"] == "done" and run.summary() == {"steps": 3}
    assert run.config["kind"] == "demo" and run.config["steps"] == 3


def test_second_job_is_refused_and_only_the_owner_can_stop(runs_root):
    manager = JobManager(runs_root)
    job = manager.start("demo", counting_job, {"steps": 200, "sleep": 0.02}, owner="alice")
    with pytest.raises(JobBusy, match="started by another visitor is running"):
        manager.start("demo", counting_job, {}, owner="bob")
    with pytest.raises(JobBusy, match="one job runs at a time"):  # what Start says first, before any form check
        manager.check_free("bob")
    with pytest.raises(ValueError, match="only the visitor who started this job can stop it"):
        manager.stop("bob")
    manager.stop("alice")
    manager.wait(10)
    assert job.status == "stopped" and len(job.run.metrics()) < 200
    assert (job.run.path / "model").exists()  # the job saved what existed
    manager.check_free("bob")  # free again
    assert manager.start("demo", counting_job, {"steps": 1}, owner="bob")
    manager.wait(10)


def test_failure_is_captured_and_the_manager_lives_on(runs_root):
    def broken(ctx):
        ctx.log({"step": 0})
        raise RuntimeError("kaboom")

    manager = JobManager(runs_root)
    job = manager.start("demo", broken, {}, owner="a")
    manager.wait(10)
    assert job.status == "failed" and "kaboom" in job.error
    assert "kaboom" in (job.run.path / "error.txt").read_text()
    assert runs.open_run(job.id, runs_root).status()["error"] == job.error
    assert manager.start("demo", counting_job, {"steps": 1}, owner="a")
    manager.wait(10)


def test_out_of_memory_suggests_a_smaller_batch(runs_root):
    import torch

    def oom(ctx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    manager = JobManager(runs_root)
    job = manager.start("ppo", oom, {}, owner="a")
    manager.wait(10)
    assert job.status == "failed" and "smaller batch size" in job.error


def test_restart_marks_cut_off_runs_interrupted_and_keeps_metrics(runs_root):
    release = threading.Event()

    def hanging(ctx):
        ctx.log({"step": 0, "loss": 2.0})
        release.wait(10)

    manager = JobManager(runs_root)
    job = manager.start("reward", hanging, {}, owner="a")
    time.sleep(0.2)
    # A new process starts while the old run still says 'running' on disk.
    JobManager(runs_root)
    reloaded = runs.list_runs(kind="reward", root=runs_root)
    assert [r.id for r in reloaded] == [job.id]
    assert reloaded[0].status()["status"] == "interrupted"
    assert reloaded[0].metrics() == [{"time": reloaded[0].metrics()[0]["time"], "step": 0, "loss": 2.0}]
    release.set()
    manager.wait(10)


def test_run_sync_reports_metrics_to_a_listener(runs_root):
    seen = []
    job = JobManager(runs_root).run_sync("demo", counting_job, {"steps": 2}, on_metrics=seen.append)
    assert job.status == "done" and [m["step"] for m in seen] == [0, 1]


def test_stop_racing_the_end_of_a_job_always_settles(runs_root):
    manager = JobManager(runs_root)
    for _ in range(20):
        job = manager.start("demo", counting_job, {"steps": 1}, owner="alice")
        try:
            manager.stop("alice")
        except ValueError:  # already finished: nothing to stop
            pass
        manager.wait(10)
        assert job.status in ("done", "stopped")
        assert job.run.status()["status"] == job.status


def test_ctrl_c_stops_a_cli_job_cleanly_and_keeps_its_run(tmp_path):
    """SIGINT during run_sync (twice, as an impatient user presses it) only asks the job to stop: the job ends
    'stopped' with what it made, and no KeyboardInterrupt escapes while the worker is busy."""
    both_sent = threading.Event()

    def work(ctx):
        step = 0
        while not ctx.stopping:
            step += 1
            ctx.log({"step": step})
            time.sleep(0.02)
        both_sent.wait(5)  # a last step still running when the second Ctrl-C comes
        return {"steps": step}

    def interrupt():
        for _ in range(2):
            time.sleep(0.15)
            os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.3)  # the main thread runs the handler before the job may end and put the default one back
        both_sent.set()

    before = signal.getsignal(signal.SIGINT)
    sender = threading.Thread(target=interrupt, daemon=True)
    sender.start()
    job = JobManager(root=tmp_path, mark_interrupted=False).run_sync("demo", work, {})
    sender.join()
    assert job.status == "stopped"
    assert job.summary["steps"] > 1 and job.run.metrics()
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back
