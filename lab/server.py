"""Start the Gradio app: pick the preset, build the job manager, allow-list data folders, launch."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lab.jobs import JobManager
from lab.presets import get_preset
from lab.runs import runs_root

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def allowed_data_dirs() -> list[Path]:
    """Folders a typed local path may point into: the project's data, runs, and `LAB_DATA_DIRS` (os.pathsep list)."""
    dirs = [PROJECT_ROOT / "assets", PROJECT_ROOT / "data", runs_root()]
    extra = os.environ.get("LAB_DATA_DIRS", "")
    dirs += [Path(d).expanduser() for d in extra.split(os.pathsep) if d.strip()]
    return [d.resolve() for d in dirs]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="RLHF Lab web app")
    parser.add_argument("--preset", help="a100 or cpu (default: LAB_PRESET, else by CUDA availability)")
    parser.add_argument("--share", action="store_true", help="ask gradio for a public link")
    args = parser.parse_args(argv)

    from lab.ui import build_app
    from lab.ui.app import launch_kwargs

    preset = get_preset(args.preset)
    manager = JobManager()
    demo = build_app(manager, preset, allowed_data_dirs())
    limits = preset.limits
    demo.queue(default_concurrency_limit=8).launch(
        share=args.share,
        max_file_size=f"{limits.max_upload_mb:g}mb",
        show_error=True,
        **launch_kwargs(),
    )
