"""Assemble the tabs into one Blocks app."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from lab.jobs import JobManager
from lab.presets import Preset
from lab.ui.common import PROJECT_ROOT, UIContext, new_visitor_id, running_tab
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
            allowed_dirs=list(allowed_dirs or []),
        )
        gr.Markdown(
            f"# RLHF Lab\nPreference data → reward model → PPO → compare. "
            f"Preset **{preset.name}**: {preset.description}",
            elem_id="lab-header",
        )
        with gr.Tabs() as tabs:
            for label, name, build_tab in TABS:
                with gr.Tab(label, id=name, elem_id=f"tab-{name}"):
                    build_tab(ctx)
        demo.load(new_visitor_id, inputs=ctx.visitor, outputs=ctx.visitor)
        demo.load(lambda: _reopen_tab(manager), outputs=tabs, show_progress="hidden")  # a reload shows the job
    return demo


def _reopen_tab(manager: JobManager) -> gr.Tabs | dict:
    tab = running_tab(manager, [name for _, name, _ in TABS])
    return gr.Tabs(selected=tab) if tab else gr.skip()


def launch_kwargs() -> dict:
    css = CSS_PATH.read_text() if CSS_PATH.exists() else None
    return {"css": css, "theme": gr.themes.Soft()}
