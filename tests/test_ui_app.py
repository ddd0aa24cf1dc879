"""The app's tab wiring: the five tabs in order, each built by its module, its Start wired by name, a reload
reopening the tab of the running job, and only the tab on screen ticking."""

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


def _timers(demo) -> dict[int, gr.Timer]:
    return {b._id: b for b in demo.blocks.values() if isinstance(b, gr.Timer)}


def test_a_reload_reopens_the_tab_of_the_running_job_and_only_it_ticks(runs_root, monkeypatch):
    manager, demo = _build(runs_root)
    tabs = next(b for b in demo.blocks.values() if isinstance(b, gr.Tabs))
    timers = {name: [t] for name, t in zip(("feedback", "reward", "ppo", "compare"), _timers(demo).values())}
    idle = app._reopen_tab(manager, tabs, timers)
    assert tabs not in idle and all(update.active is False for update in idle.values())  # the first tab: no timer

    class Running:
        kind = "ppo"

    monkeypatch.setattr(manager, "active", lambda: Running())
    shown = app._reopen_tab(manager, tabs, timers)
    assert shown.pop(tabs).selected == "ppo"
    assert {t: u.active for t, u in shown.items()} == {ts[0]: name == "ppo" for name, ts in timers.items()}


def test_every_timer_starts_paused_and_opening_a_tab_lets_only_its_own_tick(runs_root):
    """Each tick makes the browser copy the page's whole state, so hidden tabs must not tick (they kept a 2-core
    visitor's browser busy most of a core)."""
    _, demo = _build(runs_root)
    timers = _timers(demo)
    assert len(timers) == 4 and not any(t.active for t in timers.values())
    tab_of = {b._id: b.id for b in demo.blocks.values() if isinstance(b, gr.Tab)}
    switches = {tab_of[fn.targets[0][0]]: fn for fn in demo.fns.values()
                if fn.targets and fn.targets[0][1] == "select" and fn.targets[0][0] in tab_of
                and fn.outputs and all(isinstance(o, gr.Timer) for o in fn.outputs)}
    assert set(switches) == {"data", "feedback", "reward", "ppo", "compare"}
    ticking = {}
    for name, fn in switches.items():
        assert {o._id for o in fn.outputs} == set(timers)  # each switch sets every timer
        ticking[name] = [t for t, u in fn.fn().items() if u.active]
    assert ticking["data"] == []
    owner = {}  # the timer each job tab's own tick handler listens to
    for fn in demo.fns.values():
        for block_id, event in fn.targets:
            if event == "tick":
                owner.setdefault(block_id, set()).add(fn)
    for name in ("feedback", "reward", "ppo", "compare"):
        (timer,) = ticking[name]
        assert timer._id in owner  # something listens to it
        # the tab's select event also refreshes it at once (the same handlers as its tick)
        tab_id = next(i for i, n in tab_of.items() if n == name)
        on_select = {fn.fn for fn in demo.fns.values() if (tab_id, "select") in fn.targets} - {switches[name].fn}
        assert len(on_select) == len(owner[timer._id])
    assert len({ticking[n][0]._id for n in ("feedback", "reward", "ppo", "compare")}) == 4
