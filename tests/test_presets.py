"""lab/presets.py: choosing a preset, and the machine limits every stage's prepare checks."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from lab import compare, feedback, ppo, reward
from lab.generate import STAGE_KEYS
from lab.presets import CPU, PRESETS, get_preset


def test_get_preset_by_name_then_env_then_hardware(monkeypatch):
    monkeypatch.setenv("LAB_PRESET", "a100")
    assert get_preset("cpu").name == "cpu"  # a name wins
    assert get_preset().name == "a100"  # then LAB_PRESET
    monkeypatch.delenv("LAB_PRESET")
    monkeypatch.setattr("lab.presets._cuda_present", lambda: False)
    assert get_preset().name == "cpu"  # then the hardware
    monkeypatch.setattr("lab.presets._cuda_present", lambda: True)
    assert get_preset().name == "a100"


def test_unknown_preset_names_the_choices(monkeypatch):
    with pytest.raises(ValueError, match=r"unknown preset 'tpu' \(choose from a100, cpu\)"):
        get_preset("tpu")
    monkeypatch.setenv("LAB_PRESET", "gpu")
    with pytest.raises(ValueError, match="unknown preset 'gpu'"):
        get_preset()


def test_limits_check_names_the_field_and_the_limit():
    CPU.limits.check({"steps": 5, "batch_size": 4, "max_new_tokens": 32, "adap_kl_ctrl": True})
    with pytest.raises(ValueError, match="max_new_tokens 100000 is above this machine's limit of 128; choose 128"):
        CPU.limits.check({"max_new_tokens": 100000})
    with pytest.raises(ValueError, match="batch_size 4096 is above this machine's limit of 32"):
        CPU.limits.check({"batch_size": 4096})
    for key, limit in [("steps", 200), ("max_steps", 200), ("mini_batch_size", 32), ("output_max_length", 128),
                       ("n_prompts", 100), ("n_pairs", 100)]:
        with pytest.raises(ValueError, match=f"{key} {limit + 1} is above this machine's limit of {limit}"):
            CPU.limits.check({key: limit + 1})


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_presets_defaults_pass_its_own_limits(name):
    preset = get_preset(name)
    ppo_cfg = ppo.validate(ppo.config_from(preset), preset.limits)
    preset.limits.check(asdict(ppo_cfg))
    assert {k: getattr(ppo_cfg, k) for k in preset.ppo} == preset.ppo  # the preset's values, not the defaults
    reward_cfg = reward.validate(reward.config_from(preset), preset.limits)
    preset.limits.check(asdict(reward_cfg))
    assert {k: getattr(reward_cfg, k) for k in preset.reward} == preset.reward
    assert reward_cfg.step_cap == preset.limits.max_steps and reward_cfg.backbone == preset.reward_backbone
    gen = compare.config_from(preset).generate
    preset.limits.check({"n_prompts": preset.generate["n_prompts"], **gen})
    assert {k: v for k, v in preset.generate.items() if k not in STAGE_KEYS} == gen
    compare_cfg = compare.config_from(preset)
    assert compare_cfg.answers_per_prompt == preset.generate.get("answers_per_prompt", 1)
    feedback_cfg = feedback.config_from(preset)
    preset.limits.check(asdict(feedback_cfg))
    assert (feedback_cfg.policy, feedback_cfg.max_pairs) == (preset.policy, preset.limits.max_prompts)


def test_each_stage_refuses_values_beyond_the_limits():
    with pytest.raises(ValueError, match="batch_size 36 is above this machine's limit of 32"):
        ppo.validate(ppo.config_from(CPU, batch_size=36, mini_batch_size=4), CPU.limits)
    with pytest.raises(ValueError, match="batch_size 33 is above this machine's limit of 32"):
        reward.validate(reward.config_from(CPU, batch_size=33), CPU.limits)
    with pytest.raises(ValueError, match="max_new_tokens 129 is above this machine's limit of 128"):
        compare.validate(compare.config_from(CPU, model_b="x", max_new_tokens=129), CPU.limits)


def test_unknown_settings_are_listed():
    with pytest.raises(ValueError, match="unknown PPO setting\\(s\\): bogus, lr"):
        ppo.config_from(CPU, lr=1e-3, bogus=1)
    with pytest.raises(ValueError, match="unknown reward setting"):
        reward.prepare(CPU, {"nope": 1})
