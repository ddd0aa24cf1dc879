"""Assemble the tabs into one Blocks app."""

from __future__ import annotations

import importlib
from pathlib import Path

import gradio as gr

from lab.jobs import JobManager
from lab.presets import Preset
from lab.ui.common import PROJECT_ROOT, UIContext, new_visitor_id, running_tab

CSS_PATH = PROJECT_ROOT / "assets" / "style.css"
TABS = [("Data", "data"), ("Feedback", "feedback"), ("Reward model", "reward"), ("PPO", "ppo"), ("Compare", "compare")]


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
        with gr.Tabs() as tabs:
            for label, name in TABS:
                with gr.Tab(label, id=name, elem_id=f"tab-{name}"):
                    module = importlib.import_module(f"lab.ui.{name}")
                    getattr(module, f"build_{name}_tab")(ctx)
        demo.load(new_visitor_id, inputs=ctx.visitor, outputs=ctx.visitor)
        demo.load(lambda: _reopen_tab(manager), outputs=tabs, show_progress="hidden")  # a reload shows the job
    return demo


def _reopen_tab(manager: JobManager) -> gr.Tabs | dict:
    tab = running_tab(manager, [name for _, name in TABS])
    return gr.Tabs(selected=tab) if tab else gr.skip()


def launch_kwargs() -> dict:
    css = CSS_PATH.read_text() if CSS_PATH.exists() else None
    return {"css": css, "theme": gr.themes.Soft()}
