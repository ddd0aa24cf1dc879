"""The Space's click path in headless Chromium: `app.py` on the `a100` preset, reading the simulated hub offline
(tests/hubsim.py). Data loads hh-rlhf from the hub cache, Reward trains distilroberta-base for a few steps, PPO runs
two tiny steps on zephyr-7b-alpha's stand-in in 4-bit NF4 + LoRA, Compare scores three prompts with the roberta
classifier."""

from __future__ import annotations

import os

import pytest

from test_browser import CHROMIUM, _choose, _open, _points, _set_number, _tab, _wait_text, serve_app
from test_browser import browser, shots  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.browser, pytest.mark.slow,
              pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="Debian's chromium is not installed")]


@pytest.fixture(scope="module")
def space_url(simulated_hub, tmp_path_factory):
    runs = tmp_path_factory.mktemp("browser-a100-runs")
    yield from serve_app(runs, "a100", HF_HOME=str(simulated_hub), HF_HUB_CACHE=str(simulated_hub / "hub"))


def test_the_space_click_path_on_the_simulated_hub(browser, space_url, shots):  # noqa: F811
    page = _open(browser, space_url)

    # 1. Data: hh-rlhf from the hub cache, every subset.
    page.get_by_label("Hub dataset id").check()
    page.get_by_placeholder("Anthropic/hh-rlhf/harmless-base:test").fill("Anthropic/hh-rlhf")
    page.locator("#data-load").click()
    stats = _wait_text(page, "#data-stats", ("Anthropic/hh-rlhf",), 60)
    assert "harmless-base" in stats and "helpful-base" in stats, stats
    page.screenshot(path=str(shots / "screenshot-a100-data.png"), full_page=True)

    # 2. Reward: distilroberta-base on hh-rlhf (the preset's), a few steps.
    _tab(page, "Reward model")
    _set_number(page, "Max steps", 3, "reward")
    page.locator("#reward-start").click()
    _wait_text(page, "#reward-banner", ("done", "failed"), 240, needs="reward job")
    assert "failed" not in page.locator("#reward-banner").inner_text()
    _wait_text(page, "#reward-results", ("accuracy",), 60)

    # 3. PPO: two tiny steps on the 4-bit policy with real-toxicity-prompts.
    _tab(page, "PPO")
    page.get_by_role("button", name="↻ Refresh reward runs").click()
    page.wait_for_timeout(800)
    _choose(page, "ppo-reward-run", "reward-")
    for label, value in (("steps", 2), ("batch_size", 4), ("mini_batch_size", 2), ("ppo_epochs", 1),
                         ("output_min_length", 4), ("output_max_length", 6)):
        _set_number(page, label, value, "ppo")
    page.locator("#ppo-start").click()
    _wait_text(page, "#ppo-banner", ("done", "failed"), 420, needs="ppo job")
    assert "failed" not in page.locator("#ppo-banner").inner_text(), page.locator("#ppo-banner").inner_text()
    assert _points(page, "ppo-plot-0") >= 2

    # 4. Compare: base vs the PPO run on three prompts, roberta toxicity.
    _tab(page, "Compare")
    page.wait_for_function("document.querySelector('#compare-model-b input').value.startsWith('ppo-')", timeout=30_000)
    _set_number(page, "Number of prompts", 3, "compare")
    page.get_by_text("Sampling (the same for both models)").click()
    _set_number(page, "Max new tokens", 8, "compare")
    page.locator("#compare-run").click()
    _wait_text(page, "#compare-banner", ("done", "failed"), 300, needs="compare job")
    assert "failed" not in page.locator("#compare-banner").inner_text()
    assert _points(page, "compare-paired") == 3
    summary = page.locator("#compare-summary").inner_text()
    assert "toxicity" in summary.lower()
    page.screenshot(path=str(shots / "screenshot-a100-compare.png"), full_page=True)
    page.context.close()
