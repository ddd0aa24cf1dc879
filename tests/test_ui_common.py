"""The shared UI pieces (lab/ui/common.py): guard, the banner, and the job-tab skeleton every job tab is built on."""

from __future__ import annotations

import threading
import time

import gradio as gr
import pytest

from lab.jobs import JobManager
from lab.presets import get_preset
from lab.ui.common import TICK_BUSY, TICK_IDLE, JobTab, UIContext, guard, job_banner, run_signature, running_tab


def _ctx(root, demo=None) -> UIContext:
    return UIContext(manager=JobManager(root, mark_interrupted=False), preset=get_preset("cpu"), demo=demo,
                     visitor=gr.State("v1"))


def _view(run, word: str = "") -> dict:
    """A stand-in view: the run's id (or 'none') and the word it was drawn with."""
    return {"text": f"{run.id if run else 'none'} {word}".strip()}


def _blocking_job(release: threading.Event):
    def job(ctx):
        ctx.set_progress(0.07, "step 4/60")
        ctx.run.log_metrics({"step": 1})
        release.wait(10)
        return {}

    return job


def test_guard_warns_and_skips_every_output_without_counting_them(monkeypatch):
    warnings = []
    monkeypatch.setattr(gr, "Warning", lambda message, duration=None: warnings.append((message, duration)))

    @guard
    def handler(x):
        if x < 0:
            raise ValueError("x must be at least 0")
        return {"x": x}

    assert handler(1) == {"x": 1}
    assert handler(-1) == gr.skip() and warnings == [("x must be at least 0", 8)]  # one skip() skips them all


def test_banner_says_running_once(runs_root):
    manager = JobManager(runs_root)
    release = threading.Event()
    manager.start("reward", _blocking_job(release), {}, owner="v1")
    time.sleep(0.2)
    banner = job_banner(manager, "v1", "reward")
    assert banner.startswith("**Running** — reward job") and banner.lower().count("running") == 1
    assert "7% · step 4/60" in banner
    assert running_tab(manager, ["data", "reward", "ppo"]) == "reward"
    release.set()
    manager.wait(10)
    assert running_tab(manager, ["data", "reward"]) is None and "done" in job_banner(manager, "v1")


def test_tick_draws_once_per_change_and_follows_a_started_run(runs_root):
    ctx = _ctx(runs_root)
    jt = JobTab(ctx, "ppo", _view, ("text",), view_inputs=("word",), follow=True)
    first = jt.tick("v1", None, "", "hi")
    assert first["text"] == "none hi" and first["seen"] == "no run" and "No job is running" in first["banner"]
    assert jt.tick("v1", None, first["seen"], "hi") == {"banner": first["banner"]}  # nothing new: banner only
    release = threading.Event()
    job = ctx.manager.start("ppo", _blocking_job(release), {}, owner="v2")
    time.sleep(0.2)
    followed = jt.tick("v1", None, first["seen"], "hi")  # someone started a run: the tab follows it
    assert followed["run"] == job.id and followed["text"] == f"{job.id} hi" and "another visitor" in followed["banner"]
    assert followed["runs"]["value"] == job.id and followed["seen"] == run_signature(job.run)
    assert "run" not in JobTab(ctx, "ppo", _view, ("text",)).tick("v1", None, "")  # a tab that does not follow
    assert jt.pace(TICK_IDLE)["pace"] == TICK_BUSY and jt.pace(TICK_BUSY) == {}  # a job runs: tick often
    with pytest.raises(ValueError, match="only the visitor who started"):
        jt.stop("v1")
    assert "Stopping" in jt.stop("v2")["banner"]
    release.set()
    ctx.manager.wait(10)
    assert jt.pace(TICK_BUSY)["pace"] == TICK_IDLE and jt.pace(TICK_IDLE) == {}  # none runs: rest
    assert jt.load("v1", "yo")["run"] == job.id and jt.load("v1", "yo")["text"] == f"{job.id} yo"  # reattaches
    picked = []
    jt.selected = picked.append
    assert jt.select(job.id, "x") == {"run": job.id, "seen": run_signature(job.run), "text": f"{job.id} x"}
    assert [r.id for r in picked] == [job.id]


def test_on_maps_names_to_components_and_names_are_unique(runs_root):
    with gr.Blocks() as demo:
        jt = JobTab(_ctx(runs_root, demo), "reward", _view, ("text",))
        jt.header()
        box = jt.add("text", gr.Markdown())
        jt.add("go", gr.Button())
        jt.on(jt.components["go"].click, lambda v: {"text": f"hello {v}"} if v else {}, ["visitor"], ["text", "banner"])
        with pytest.raises(KeyError, match="two components named 'text'"):
            jt.add("text", gr.Markdown())
    fn = demo.fns[max(demo.fns)]
    assert [o._id for o in fn.outputs] == [box._id, jt.components["banner"]._id]
    assert fn.fn("v1") == {box: "hello v1"}  # keyed by component: the banner, not returned, is left as it is
    assert fn.fn("") == gr.skip()  # nothing to change: every output skipped (gradio would read {} as a value)
