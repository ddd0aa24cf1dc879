"""The app's tab wiring: the five tabs in order, each built by its module, its Start wired by name, and a reload
reopening the tab of the running job."""

from __future__ import annotations

import gradio as gr

from lab.jobs import JobManager
from lab.presets import get_preset
from lab.ui import app


def _build(runs_root):
    manager = JobManager(runs_root, mark_interrupted=False)
    return manager, app.build_app(manager, get_preset("cpu"), [runs_root])


def test_the_five_tabs_in_order_each_from_its_module(runs_root):
    assert [(label, name) for label, name, _ in app.TABS] == [
        ("Data", "data"), ("Feedback", "feedback"), ("Reward model", "reward"), ("PPO", "ppo"), ("Compare", "compare")]
    assert all(build.__module__ == f"lab.ui.{name}" and build.__name__ == f"build_{name}_tab"
               for _, name, build in app.TABS)
    _, demo = _build(runs_root)
    tabs = [b for b in demo.blocks.values() if isinstance(b, gr.Tab)]
    assert [(t.label, t.id, t.elem_id) for t in tabs] == [(label, name, f"tab-{name}") for label, name, _ in app.TABS]


def test_each_job_tab_has_its_start_stop_and_api_endpoints(runs_root):
    _, demo = _build(runs_root)
    ids = {b.elem_id for b in demo.blocks.values() if getattr(b, "elem_id", None)}
    assert {"reward-start", "reward-stop", "ppo-start", "ppo-stop", "compare-run", "compare-stop",
            "feedback-generate"} <= ids
    api = {fn.api_name for fn in demo.fns.values()}
    assert {"reward_start", "ppo_start", "compare_start", "feedback_generate", "data_load"} <= api


def test_start_gets_the_form_by_name(runs_root):
    """Start's inputs are the visitor and the tab's FORM, in that order, and the handler receives them as a dict."""
    from lab.ui import ppo

    _, demo = _build(runs_root)
    start = next(fn for fn in demo.fns.values() if fn.api_name == "ppo_start")
    labels = [getattr(block, "label", None) for block in start.inputs]
    assert len(start.inputs) == 1 + len(ppo.FORM)
    assert labels[1:4] == ["Reward model (a reward run with a saved model; a stopped one says so)", "Prompts", "policy"]
    assert labels[4] == "training steps (steps), at most 200"  # the first PPOConfig field, its label from metadata


def test_a_reload_reopens_the_tab_of_the_running_job(runs_root, monkeypatch):
    manager, _ = _build(runs_root)
    assert app._reopen_tab(manager) == gr.skip()

    class Running:
        kind = "ppo"

    monkeypatch.setattr(manager, "active", lambda: Running())
    assert app._reopen_tab(manager).selected == "ppo"
