"""The Gradio app: one module per tab, each `build_<tab>_tab(ctx)`. Only this package imports gradio."""

from lab.ui.app import build_app

__all__ = ["build_app"]
