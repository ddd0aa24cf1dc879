"""The config dataclasses are the single source of every form: each input bound to a config field shows the label
and help of its field metadata, and no help text of a config field is written anywhere else."""

from __future__ import annotations

import ast
from dataclasses import fields
from pathlib import Path

import gradio as gr
import pytest

from lab import compare, evaluate, feedback, ppo, reward
from lab.config import label_of
from lab.generate import GenerateConfig
from lab.jobs import JobManager
from lab.presets import get_preset
from lab.ui import compare as compare_tab
from lab.ui import feedback as feedback_tab
from lab.ui import ppo as ppo_tab
from lab.ui import reward as reward_tab
from lab.ui.common import UIContext

LAB = Path(__file__).resolve().parent.parent / "lab"
CONFIGS = (ppo.PPOConfig, reward.RewardConfig, compare.CompareConfig, feedback.FeedbackConfig, GenerateConfig)
# tab -> (its builder, its fields by form input name: inputs named like a field, plus those named otherwise)
TABS = {
    "ppo": (ppo_tab.build_ppo_tab, {**ppo_tab.PPO_FIELDS, **ppo_tab.EVAL_FIELDS}),
    "reward": (reward_tab.build_reward_tab, reward_tab.REWARD_FIELDS),
    "compare": (compare_tab.build_compare_tab, {**compare_tab.COMPARE_FIELDS,
                                                "prompt_mode": compare_tab.COMPARE_FIELDS["prompts"],
                                                "typed": compare_tab.COMPARE_FIELDS["custom_prompts"]}),
    "feedback": (feedback_tab.build_feedback_tab, feedback_tab.FEEDBACK_FIELDS),
}
DYNAMIC_INFO = {("reward", "eval_fraction")}  # says why the share is off when the held-out pairs come from elsewhere


def _components(tab: str, runs_root) -> dict:
    """The tab's components by name, built as the app builds them."""
    seen = {}
    original = feedback_tab.JobTab.add

    def add(self, name, component):
        seen[name] = component
        return original(self, name, component)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(feedback_tab.JobTab, "add", add)
        with gr.Blocks() as demo:
            ctx = UIContext(manager=JobManager(runs_root, mark_interrupted=False), preset=get_preset("cpu"),
                            demo=demo, visitor=gr.State("v"), data_source=gr.State("bundled"))
            TABS[tab][0](ctx)
    return seen


@pytest.mark.parametrize("tab", sorted(TABS))
def test_every_input_bound_to_a_config_field_shows_its_metadata(tab, runs_root):
    by_name = TABS[tab][1]
    form = {"ppo": ppo_tab, "reward": reward_tab, "compare": compare_tab, "feedback": feedback_tab}[tab].FORM
    bound = {name: c for name, c in _components(tab, runs_root).items() if name in by_name and name in form}
    assert len(bound) >= 5, sorted(bound)
    for name, component in bound.items():
        f = by_name[name]
        assert component.label.startswith(label_of(f)), (name, component.label)
        if (tab, name) not in DYNAMIC_INFO:
            assert component.info == f.metadata["help"], name


def test_the_ppo_form_shows_every_ppo_and_evaluation_setting():
    assert set(ppo_tab.FORM) == {"reward_run", "prompts", "policy", *(f.name for f in fields(ppo.PPOConfig)),
                                 *(f.name for f in fields(evaluate.EvalConfig))}


def _string_constants(path: Path) -> set[str]:
    """Every string literal of a module, implicit concatenations joined."""
    return {node.value for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


def test_no_help_or_label_of_a_config_field_is_written_outside_its_metadata():
    strings = set().union(*(_string_constants(p) for p in [LAB / "cli.py", *sorted((LAB / "ui").glob("*.py"))]))
    for cls in CONFIGS:
        for f in fields(cls):
            assert f.metadata["help"] not in strings, f"{cls.__name__}.{f.name}'s help is written twice"
            if f.metadata.get("label"):
                assert label_of(f) not in strings, f"{cls.__name__}.{f.name}'s label is written twice"
