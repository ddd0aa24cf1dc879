"""Assemble the tabs into one Blocks app."""

from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr

from lab.jobs import JobManager
from lab.presets import Preset
from lab.ui.common import PROJECT_ROOT, UIContext, new_visitor_id, running_tab, timer_updates
from lab.ui.compare import build_compare_tab
from lab.ui.data import build_data_tab
from lab.ui.feedback import build_feedback_tab
from lab.ui.ppo import build_ppo_tab
from lab.ui.reward import build_reward_tab

CSS_PATH = PROJECT_ROOT / "assets" / "style.css"
TABS = [("Data", "data", build_data_tab), ("Feedback", "feedback", build_feedback_tab),
        ("Reward model", "reward", build_reward_tab), ("PPO", "ppo", build_ppo_tab), ("Compare", "compare", build_compare_tab)]


def build_app(manager: JobManager, preset: Preset, allowed_dirs: list[Path] | None = None) -> gr.Blocks:
    """The whole lab; `manager` is shared by every visitor, everything else is per browser."""
    with gr.Blocks(title="RLHF Lab") as demo:
        ctx = UIContext(
            manager=manager,
            preset=preset,
            demo=demo,
            visitor=gr.BrowserState(None, storage_key="rlhf-lab-visitor"),
            data_source=gr.State(preset.pairs),
            vote_set=gr.State(None),
            allowed_dirs=list(allowed_dirs or []),
        )
        gr.Markdown(
            f"# RLHF Lab\nPreference data → reward model → PPO → compare. "
            f"Preset **{preset.name}**: {preset.description}",
            elem_id="lab-header",
        )
        built = {}
        with gr.Tabs() as tabs:
            for label, name, build_tab in TABS:
                with gr.Tab(label, id=name, elem_id=f"tab-{name}") as ctx.tab:
                    ctx.tab_name = name
                    build_tab(ctx)
                    built[name] = ctx.tab
        ctx.tab, ctx.tab_name = None, ""
        for name, tab in built.items():  # only the tab on screen ticks
            tab.select(functools.partial(timer_updates, ctx.timers, name), None, _all(ctx.timers),
                       show_progress="hidden", api_visibility="private")
        demo.load(new_visitor_id, inputs=ctx.visitor, outputs=ctx.visitor)
        demo.load(lambda: _reopen_tab(manager, tabs, ctx.timers), outputs=[tabs, *_all(ctx.timers)],
                  show_progress="hidden")  # a reload shows the job
    return demo


def _all(timers: dict[str, list]) -> list:
    return [t for ts in timers.values() for t in ts]


def _reopen_tab(manager: JobManager, tabs: gr.Tabs, timers: dict[str, list]) -> dict:
    """The running job's tab, ticking (a page opens on the first tab, which has no timer, when nothing runs)."""
    tab = running_tab(manager, [name for _, name, _ in TABS])
    return {**timer_updates(timers, tab), **({tabs: gr.Tabs(selected=tab)} if tab else {})}


def launch_kwargs() -> dict:
    css = CSS_PATH.read_text() if CSS_PATH.exists() else None
    return {"css": css, "theme": gr.themes.Soft()}
