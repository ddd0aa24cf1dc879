"""Click through the running app in headless Chromium, as a workshop visitor would.

Starts `app.py` on the cpu preset with a fresh runs folder, then drives all four tabs with tiny settings and saves a
screenshot of each (to LAB_SCREENSHOT_DIR, default a temp folder). A second browser context checks that another
visitor sees the running job and cannot start a second one. A last test seeds a feedback set: two visitors vote on
it at the same moment, both see the tally grow, and a reward model trains on the votes from the Reward tab.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_runs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("browser-runs")


def serve_app(runs: Path, preset: str, **env_extra: str) -> Iterator[str]:
    """`app.py` on `preset` in a process of its own, its runs under `runs`, its log in runs/app.log: yields its URL
    once the port answers, and stops it afterwards."""
    port = _free_port()
    env = {**os.environ, "LAB_RUNS_DIR": str(runs), "GRADIO_SERVER_PORT": str(port), "LAB_PRESET": preset,
           "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1", **env_extra}
    log = open(runs / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert proc.poll() is None, (runs / "app.log").read_text()
            time.sleep(0.3)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="module")
def app_url(app_runs):
    yield from serve_app(app_runs, "cpu")


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    out = os.environ.get("LAB_SCREENSHOT_DIR")
    path = Path(out) if out else tmp_path_factory.mktemp("shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _open(browser, url, ready: str = "#data-cards .pair-card"):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.goto(url)
    page.wait_for_selector(ready, timeout=60_000)
    return page


def _selected_tab(page) -> str:
    return page.locator("[role=tab][aria-selected=true]").first.inner_text().strip()


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()
    page.wait_for_timeout(500)


def test_data_tab(browser, app_url, shots):
    page = _open(browser, app_url)
    assert page.locator("#data-cards .pair-card").count() == 5
    assert "204" in page.locator("#data-stats").inner_text()
    page.get_by_label("Search text").fill("resume")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_function("document.querySelector('#data-page').innerText.includes('matching pairs')")
    assert "resume" in page.locator("#data-cards").inner_text().lower()
    page.get_by_label("Search text").fill("neighbour")  # British spelling; the data says "neighbor"
    page.get_by_label("Search text").press("Enter")
    from lab.data import load_pairs
    from lab.ui.data import filter_indices

    hits = len(filter_indices(load_pairs("bundled"), "neighbor", "all"))  # the American spelling, as the data has it
    assert hits > 0
    page.wait_for_function(f"document.querySelector('#data-page').innerText.includes('· {hits} matching pairs')",
                           timeout=30_000)
    assert "neighbor" in page.locator("#data-cards").inner_text().lower()
    page.get_by_label("Search text").fill("")
    page.get_by_label("Search text").press("Enter")
    page.wait_for_timeout(800)
    page.screenshot(path=str(shots / "screenshot-data.png"), full_page=True)

    # A path outside the lab's folders is refused in the lab's words, naming no server folder.
    page.get_by_label("Local file path").check()
    for source in ("/etc/passwd", "runs/../../../etc/shadow"):
        page.locator("#data-path").get_by_role("textbox").fill(source)
        page.locator("#data-load").click()
        toast = page.locator(".toast-body", has_text=f"'{source}' is not in a folder this lab may read").last
        toast.wait_for(timeout=20_000)
        text = toast.inner_text()
        assert source in text and str(ROOT) not in text and "/tmp/" not in text and "hub" not in text, text
    page.screenshot(path=str(shots / "screenshot-data-refused.png"))
    page.context.close()


# ---------------------------------------------------------------- the stages, in order, with tiny settings


def _set_number(page, label: str, value, tab: str) -> None:
    box = page.locator(f"#tab-{tab}").get_by_label(label, exact=False).first
    box.fill(str(value))
    box.press("Tab")


def _points(page, elem_id: str) -> int:
    """Number of x values across the traces of a plotly plot (0 when it has not been drawn)."""
    return page.evaluate(
        """id => { const el = document.querySelector(`#${id} .js-plotly-plot`);
                   return el && el.data ? el.data.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0; }""",
        elem_id,
    )


def _choose(page, elem_id: str, text: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=text, exact=False).first.click()
    page.wait_for_timeout(300)


def _wait_text(page, selector: str, words: tuple[str, ...], timeout_s: float, needs: str = "") -> str:
    deadline = time.time() + timeout_s
    text = ""
    while time.time() < deadline:
        text = page.locator(selector).inner_text()
        if needs in text and any(w in text for w in words):
            return text
        page.wait_for_timeout(500)
    raise AssertionError(f"{selector} never showed {words}: {text!r}")


def test_stages_click_through_with_a_second_visitor(browser, app_url, shots):
    page = _open(browser, app_url)

    # 2. Reward model: a few steps (each evaluated: a short run evaluates every step), proxy then judge; the loss
    # plot gains points while it trains.
    _tab(page, "Reward model")
    _set_number(page, "Max steps", 4, "reward")
    _set_number(page, "Epochs", 1, "reward")
    page.locator("#reward-start").click()
    seen = []
    deadline = time.time() + 240
    while time.time() < deadline:
        seen.append(_points(page, "reward-loss"))
        if "reward job" in (banner := page.locator("#reward-banner").inner_text()) and "done" in banner:
            break
        if seen[-1] >= 2 and not (shots / "screenshot-reward-mid.png").exists():  # mid-training, curves drawn
            page.screenshot(path=str(shots / "screenshot-reward-mid.png"), full_page=True)
        page.wait_for_timeout(700)
    seen.append(_points(page, "reward-loss"))
    assert max(seen) >= 2 and len(set(seen)) >= 2, f"the loss plot never grew: {seen}"
    _wait_text(page, "#reward-results", ("accuracy",), 60)
    page.screenshot(path=str(shots / "screenshot-reward-end.png"), full_page=True)
    _assert_shared_bins(page, "reward-margins")

    # 3. PPO: two tiny steps; reward and KL plots update. A second visitor sees the job and cannot start another.
    _tab(page, "PPO")
    page.get_by_role("button", name="↻ Refresh reward runs").click()  # list the reward run just trained
    page.wait_for_timeout(800)
    _choose(page, "ppo-reward-run", "reward-")
    page.locator("#tab-ppo").get_by_label("steps", exact=False).first.fill("")  # an emptied box: None, not a default
    page.locator("#ppo-start").click()
    empty = page.locator(".toast-body", has_text="is empty").last
    empty.wait_for(timeout=20_000)
    assert "'training steps (steps)' is empty" in empty.inner_text() and "nothing was started" in empty.inner_text()
    page.wait_for_timeout(1500)
    assert "Running" not in page.locator("#ppo-banner").inner_text()  # nothing started
    assert "Cost" in page.locator("#ppo-cost").inner_text()
    _set_number(page, "steps", 999, "ppo")  # over the limit: our words, not gradio's
    page.locator("#ppo-start").click()
    refusal = page.locator(".toast-body", has_text="above this machine's limit").last
    refusal.wait_for(timeout=20_000)
    assert "training steps (steps)" in refusal.inner_text() and "Value 999" not in page.content()
    page.locator("#ppo-eval-settings").get_by_text("Evaluation while training").first.click()  # unfold it
    page.wait_for_timeout(500)
    for label, value in (("steps", 2), ("batch_size", 4), ("mini_batch_size", 2), ("ppo_epochs", 1),
                         ("output_min_length", 6), ("output_max_length", 6),
                         ("eval_n_prompts", 4), ("eval_max_new_tokens", 8)):  # the evaluations at steps 0 and 2
        _set_number(page, label, value, "ppo")
    page.locator("#ppo-start").click()
    other = _open(browser, app_url, ready="#ppo-banner")  # a fresh page while PPO runs opens on the PPO tab
    assert _selected_tab(other) == "PPO"
    banner = _wait_text(other, "#ppo-banner", ("another visitor",), 60)
    assert "Running" in banner and banner.lower().count("running") == 1, banner
    other.locator("#ppo-start").click()
    other.wait_for_selector("text=one job runs at a time", timeout=20_000)
    phases, deadline = set(), time.time() + 240
    while time.time() < deadline:  # the banner says what the step is doing, and never shows gradio's progress text
        text = page.locator("#ppo-banner").inner_text()
        assert "processing" not in text and "processing" not in page.locator("#ppo-results").inner_text(), text
        if "step " in text and "/2: " in text:
            phases.add(text.split("/2: ")[1].split(" (")[0].split(",")[0])
        if "Last job" in text:
            break
        page.wait_for_timeout(300)
    _wait_text(page, "#ppo-banner", ("done", "failed"), 420, needs="ppo job")
    assert "failed" not in page.locator("#ppo-banner").inner_text()
    assert _points(page, "ppo-plot-0") >= 2 and _points(page, "ppo-plot-1") >= 2
    assert _points(page, "ppo-length-reward") >= 8  # every rollout of both steps
    assert len(phases - {""}) >= 1, phases
    page.screenshot(path=str(shots / "screenshot-ppo.png"), full_page=True)
    other.context.close()

    # 4. Compare: base vs the PPO run on three prompts.
    _tab(page, "Compare")  # Model B is already the PPO run that just finished: no refresh, no choosing
    page.wait_for_function("document.querySelector('#compare-model-b input').value.startsWith('ppo-')", timeout=30_000)
    fresh = _open(browser, app_url)  # and so on a fresh page
    _tab(fresh, "Compare")
    fresh.wait_for_function("document.querySelector('#compare-model-b input').value.startsWith('ppo-')",
                            timeout=30_000)
    fresh.context.close()
    _set_number(page, "Number of prompts", 3, "compare")
    _set_number(page, "Answers per prompt", 2, "compare")  # the cpu preset's 4, fewer to keep the test short
    page.locator("#compare-run").click()
    _wait_text(page, "#compare-banner", ("done", "failed"), 300, needs="compare job")
    assert "failed" not in page.locator("#compare-banner").inner_text()
    cards = page.locator("#compare-cards")
    assert cards.locator(".cmp-card").count() == 6 and "answer 2" in cards.inner_text()  # 3 prompts x 2 answers
    summary = page.locator("#compare-summary").inner_text()
    assert "toxicity" in summary.lower() and "mean answer length" in summary and "words, not intent" in summary
    assert "every prompt 2 times" in summary and "3 prompts × 2 answers" in summary
    assert _points(page, "compare-paired") == 3
    page.screenshot(path=str(shots / "screenshot-compare.png"), full_page=True)
    page.context.close()


def _assert_shared_bins(page, elem_id: str) -> None:
    """The histogram traces drawn on the same x axis have the same explicit bin edges (read from the figure JSON the
    page holds): plotly left to itself bins each trace on its own."""
    page.wait_for_function(
        """id => { const el = document.querySelector(`#${id} .js-plotly-plot`);
                   return el && el.data && el.data.some(t => t.type === 'histogram'); }""",
        arg=elem_id, timeout=30_000,
    )
    by_axis = page.evaluate(
        """id => { const el = document.querySelector(`#${id} .js-plotly-plot`);
                   const out = {};
                   for (const t of (el && el.data) || []) {
                     if (t.type !== 'histogram') continue;
                     (out[t.xaxis || 'x'] = out[t.xaxis || 'x'] || []).push(t.xbins || null);
                   }
                   return out; }""",
        elem_id,
    )
    assert by_axis, f"{elem_id}: no histogram drawn"
    for axis, bins in by_axis.items():
        assert len(bins) >= 2 and bins[0] and all(b == bins[0] for b in bins), (elem_id, axis, bins)


def _seed_misleading_runs(root: Path) -> dict[str, str]:
    """What misled a careless student: a newer reward run stopped half-way, a PPO run stopped at step 0 (adapters
    saved, nothing trained), a PPO run whose rollouts are emoji, and a comparison where every prompt is a near tie."""
    from lab.runs import new_run
    from lab.stats import paired_summary

    stopped_reward = new_run("reward", {"backbone": "x", "data": "bundled"}, root)
    stopped_reward.model_dir.mkdir()
    (stopped_reward.model_dir / "config.json").write_text("{}")
    stopped_reward.set_status("stopped", summary={"steps": 20, "eval_accuracy": 0.921})
    untrained = new_run("ppo", {"policy": "embedded:smollm2-135m-instruct", "steps": 64}, root)
    untrained.model_dir.mkdir()
    (untrained.model_dir / "adapter_config.json").write_text("{}")
    untrained.set_status("stopped", summary={"steps": 0})
    emoji = new_run("ppo", {"policy": "embedded:smollm2-135m-instruct", "steps": 2, "reward_model": "r"}, root)
    for step in (1, 2):
        emoji.log_metrics({"step": step, "env/reward_mean": 0.1 * step, "objective/kl": 0.01, "time/step": 1.0,
                           "objective/entropy_per_token": 2.0, "tokens/response_len_mean": 5.0})
    emoji.log_samples([{"step": 2, "prompt": "Celebrate!", "response": "Yay 🎉🙂", "reward": 0.2, "kl": 0.3,
                        "length": 7, "tokens": ["Yay", " 🎉", "🙂"], "span_len": [1, 3, 3],
                        "token_kl": [0.1, 0.2, 0.3, 0.4, 0.0, 0.1, 0.2]}])
    emoji.set_status("stopped", summary={"steps": 2})  # no adapters: never offered to Compare
    rows = [{"index": i, "prompt": f"Question {i}?", "model_a": "base", "model_b": untrained.id,
             "answer_a": f"An answer to question {i}.", "answer_b": f"A reply to question {i}.", "length_a": 24,
             "length_b": 22, "toxicity_a": 0.05, "toxicity_b": 0.05, "reward_a": 1.9 + 0.01 * i,
             "reward_b": 1.9 + 0.01 * i + 0.00005} for i in range(6)]
    tie = new_run("compare", {"model_a": "base", "model_b": untrained.id, "prompts": "bundled:heldout"}, root)
    tie.log_samples(rows)
    tie.set_status("done", summary={"n": 6, "paired": paired_summary(rows), "reward_model": "r", "seconds": 9.0,
                                    "prompts": "bundled:heldout"})
    return {"stopped_reward": stopped_reward.id, "untrained": untrained.id, "emoji": emoji.id, "tie": tie.id}


def test_stopped_runs_near_ties_and_emoji_never_mislead(browser, app_url, app_runs, shots):
    seeded = _seed_misleading_runs(app_runs)
    page = _open(browser, app_url)
    _assert_shared_bins(page, "data-lengths")
    assert "Who judged" in page.locator("#data-stats").inner_text()

    # PPO: the stopped reward run is listed and labelled, but never the default.
    _tab(page, "PPO")
    page.get_by_role("button", name="↻ Refresh reward runs").click()
    page.wait_for_timeout(800)
    picked = page.locator("#ppo-reward-run input").input_value()
    assert seeded["stopped_reward"] not in picked and "STOPPED" not in picked, picked
    page.locator("#ppo-reward-run input").click()
    stopped = page.get_by_role("option", name=seeded["stopped_reward"], exact=False).first
    assert "STOPPED after 20 steps (not finished)" in stopped.inner_text()
    page.keyboard.press("Escape")

    # PPO: an emoji rollout shows its emoji, never replacement characters.
    _choose(page, "ppo-runs", seeded["emoji"])
    rollouts = _wait_text(page, "#ppo-rollouts", ("🎉",), 20)
    assert "\ufffd" not in rollouts and "🙂" in rollouts
    assert "too few to say" in page.locator("#ppo-results").inner_text() or "step 1 → step 2" in page.locator(
        "#ppo-results").inner_text()

    # Compare: the PPO run stopped at step 0 is listed but not Model B; a near-tie is "about even", no badge.
    _tab(page, "Compare")
    model_b = page.locator("#compare-model-b input").input_value()
    assert seeded["untrained"] not in model_b, model_b
    _choose(page, "compare-runs", seeded["tie"])
    _wait_text(page, "#compare-cards", ("about even",), 20)
    cards = page.locator("#compare-cards").inner_text()
    assert "✓" not in cards and "reward model prefers" not in cards
    summary = page.locator("#compare-summary").inner_text()
    assert "never finished a PPO step" in summary and "B scores clearly higher" not in summary
    assert "about even on 6 of 6 prompts" in summary
    _assert_shared_bins(page, "compare-plot")
    page.screenshot(path=str(shots / "screenshot-compare-tie.png"), full_page=True)
    page.context.close()


# ---------------------------------------------------------------- feedback: two visitors vote, a reward model learns


def _seed_feedback(root: Path, n_pairs: int, n_votes: int) -> None:
    """A set 'workshop' of bundled pairs (answers shuffled left/right), most of them already voted on."""
    import random

    from lab import votes as store
    from lab.data import load_pairs

    fs = store.create_set("workshop", root)
    rows = [{"prompt": p.first_human_turn, "answer_a": p.chosen.strip(), "answer_b": p.rejected.strip(),
             "model_a": "careful-model", "model_b": "careless-model"} for p in load_pairs("bundled:train").pairs]
    pairs = store.add_pairs(fs, store.shuffle_sides(rows[:n_pairs], random.Random(0)))
    for i, pair in enumerate(pairs[:n_votes]):  # the teacher's votes: the hh-rlhf choice
        store.vote(fs, pair["id"], "a" if pair["model_a"] == "careful-model" else "b", "teacher", now=i * 2.0)


def _votes_shown(page) -> int:
    text = page.locator("#feedback-tallies").inner_text()
    return int(text.split(" vote")[0].split()[-1]) if " vote" in text else -1


def test_two_visitors_vote_at_once_and_a_reward_model_trains_on_the_votes(browser, app_url, app_runs, shots):
    _seed_feedback(app_runs, n_pairs=30, n_votes=24)
    pages = [_open(browser, app_url) for _ in range(2)]
    for page in pages:
        _tab(page, "Feedback")
        page.wait_for_selector("#feedback-pair .answer", timeout=30_000)
        page.wait_for_timeout(1000)  # the visitor id is set on load
        assert _votes_shown(page) == 24
        assert "careful-model" not in page.locator("#feedback-pair").inner_text()  # blind
    # Both visitors click at the same moment, three times; each vote is revealed and counted.
    for round_ in range(3):
        for page, button in zip(pages, ("#feedback-vote-a", "#feedback-vote-b")):
            page.locator(button).click()
        for page in pages:
            _wait_text(page, "#feedback-reveal", ("written by",), 20)
        page.wait_for_timeout(1300)  # a person reads for more than a second (the rate limit)
    for page in pages:
        deadline = time.time() + 20
        while _votes_shown(page) != 30 and time.time() < deadline:  # the other visitor's votes arrive on the tick
            page.wait_for_timeout(500)
        assert _votes_shown(page) == 30
        assert "you 3" in page.locator("#feedback-tallies").inner_text()
    pages[0].mouse.move(0, 0)
    pages[0].evaluate("document.activeElement && document.activeElement.blur()")
    pages[0].screenshot(path=str(shots / "screenshot-feedback.png"), full_page=True)
    pages[1].context.close()

    # The votes as training data: the button fills the Reward tab's source with feedback:workshop.
    page = pages[0]
    page.locator("#feedback-use").click()
    _tab(page, "Reward model")
    source = page.locator("#tab-reward").get_by_label("Training pairs").first
    deadline = time.time() + 10
    while source.input_value() != "feedback:workshop" and time.time() < deadline:
        page.wait_for_timeout(300)
    assert source.input_value() == "feedback:workshop"
    _set_number(page, "Max steps", 4, "reward")
    from lab.runs import list_runs

    before = {run.id for run in list_runs(kind="reward", root=app_runs)}  # an earlier test's run must not pass for it
    page.locator("#reward-start").click()
    deadline, new = time.time() + 30, []
    while not new and time.time() < deadline:
        new = [run.id for run in list_runs(kind="reward", root=app_runs) if run.id not in before]
        page.wait_for_timeout(300)
    assert new, "no reward run started"
    _wait_text(page, "#reward-banner", ("done", "failed"), 240, needs=new[0])
    assert "failed" not in page.locator("#reward-banner").inner_text()
    _wait_text(page, "#reward-results", ("accuracy",), 60, needs=new[0])
    assert "votes of set 'workshop'" in page.locator("#reward-results").inner_text()
    page.screenshot(path=str(shots / "screenshot-reward-feedback.png"), full_page=True)

    summary = list_runs(kind="reward", root=app_runs)[0].summary()
    assert summary["data"].startswith("feedback:workshop@") and summary["train_pairs"] >= 20
    assert summary["feedback_votes"]["workshop"]["votes"] == int(summary["data"].split("@")[1]) >= 30
    page.context.close()
