"""Start the Gradio app: pick the preset, build the job manager, allow-list data folders, launch."""

from __future__ import annotations

import os
from pathlib import Path

from lab.jobs import JobManager
from lab.presets import get_preset
from lab.runs import runs_root
from lab.ui.app import build_app, launch_kwargs

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def allowed_data_dirs() -> list[Path]:
    """Folders a typed local path may point into: the project's data, runs, and `LAB_DATA_DIRS` (os.pathsep list)."""
    dirs = [PROJECT_ROOT / "assets", PROJECT_ROOT / "data", runs_root()]
    extra = os.environ.get("LAB_DATA_DIRS", "")
    dirs += [Path(d).expanduser() for d in extra.split(os.pathsep) if d.strip()]
    return [d.resolve() for d in dirs]


def launch(preset_name: str | None = None, share: bool = False) -> None:
    """Build the app for the preset (None = chosen automatically) and serve it."""
    preset = get_preset(preset_name)
    manager = JobManager()
    demo = build_app(manager, preset, allowed_data_dirs())
    limits = preset.limits
    demo.queue(default_concurrency_limit=8).launch(
        share=share,
        max_file_size=f"{limits.max_upload_mb:g}mb",
        show_error=True,
        **launch_kwargs(),
    )
