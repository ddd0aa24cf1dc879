"""The Space card and requirements cannot drift from pyproject.toml and the a100 preset."""

from __future__ import annotations

import tomllib

import yaml

from lab.presets import A100
from lab.space import PROJECT_ROOT, build_space, requirements, space_card


def test_committed_requirements_match_pyproject():
    committed = (PROJECT_ROOT / "requirements.txt").read_text()
    assert committed == requirements(), "requirements.txt drifted: run `python -m lab space` and copy it, or regenerate"


def test_space_card_names_what_the_a100_preset_uses():
    card = space_card()
    assert card["sdk"] == "gradio" and card["app_file"] == "app.py" and card["suggested_hardware"] == "a100-large"
    assert {A100.policy, A100.reward_backbone, A100.judge} <= set(card["models"])  # the judge is downloaded too
    hub_datasets = {s.split(":")[0] for s in (A100.pairs, A100.ppo_prompts, A100.compare_prompts)}
    assert hub_datasets <= set(card["datasets"])
    gradio_spec = next(d for d in tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
                       if d.startswith("gradio"))
    assert card["sdk_version"].split(".")[0] == gradio_spec.split(">=")[1].split(".")[0]


def test_space_card_names_the_toxicity_classifier():
    from lab.toxicity import ROBERTA_ID

    assert ROBERTA_ID in space_card()["models"]


def test_build_space_folder(tmp_path):
    files = build_space(tmp_path / "space")
    assert {"README.md", "requirements.txt", "app.py", "lab", "assets"} <= set(files)
    text = (tmp_path / "space" / "README.md").read_text()
    front = yaml.safe_load(text.split("---\n")[1])
    assert front == space_card()
    assert (tmp_path / "space" / "requirements.txt").read_text() == requirements()
