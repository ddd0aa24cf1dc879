"""The ppo tab (being built)."""

from __future__ import annotations

import gradio as gr

from lab.ui.common import UIContext


def build_ppo_tab(ctx: UIContext) -> None:
    gr.Markdown("This stage is being built.")
