"""Click through what a reader of the lab's results sees, in headless Chromium: the PPO tab's evaluation curves on
fixed prompts, the timeline of pinned prompts, two runs overlaid, and Compare's verdict, diagnostics and the one
click from Compare to a blind vote on the same answers in the Feedback tab.

Runs are seeded on disk (evaluation rows and a finished comparison, as lab.evaluate and lab.compare write them), so
the test drives the pages without training anything.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from test_browser import _open, _tab, _wait_text, app_url, browser, pytestmark, shots  # noqa: F401 (fixtures)

from lab import diagnostics, evaluate
from lab.runs import new_run

FLUENT = "Preheat the oven to 200 degrees, roast the vegetables for twenty minutes and season them well."
REFUSAL = "I'm sorry for any confusion, but as a chatbot I cannot help with that."
SALAD = "Dear [RocheramakaramaanAleemmaa, kısmına kabılıkınılını"


def _eval_rows(steps, reward, judge, refusal):
    return [{"step": s, "n": 3, "eval/reward": r, "eval/reward_se": 0.05, "eval/judge": j, "eval/judge_se": 0.05,
             "eval/refusal": f, "eval/degenerate": 0.0, "eval/toxicity": 0.0, "eval/length": 80.0,
             "answers": [{"prompt": f"Pinned prompt {i}", "answer": REFUSAL if f > 0.5 else f"{FLUENT} ({s})",
                          "reward": r + i / 10, "judge": j, "refusal": f > 0.5, "degenerate": False}
                         for i in range(3)]}
            for s, r, j, f in zip(steps, reward, judge, refusal)]


@pytest.fixture(scope="module")
def app_runs(tmp_path_factory) -> Path:
    """A default PPO run and a β = 0 run with evaluations, and a finished comparison whose B mostly refuses."""
    root = tmp_path_factory.mktemp("reader-runs")
    runs = {}
    for name, rows in (("beta0", _eval_rows([0, 16, 32], [0.0, 0.9, 1.8], [0.0, -0.2, -0.6], [0.0, 0.7, 1.0])),
                       ("default", _eval_rows([0, 16, 32], [0.0, 0.3, 0.5], [0.0, 0.2, 0.3], [0.0, 0.0, 0.0]))):
        run = new_run("ppo", {"policy": "embedded:smollm2-135m-instruct", "reward_model": "r", "steps": 32,
                              "evaluate": {"eval_every": 16, "eval_pinned": 2}}, root)
        for row in rows:
            evaluate.append_row(run.path, row)
        run.set_status("done", summary={"steps": 32, "reward_first": 0.0, "reward_last": 0.5, "kl_last": 1.0,
                                        "seconds_per_step": 1.0, "reward_rise_se": 0.1})
        runs[name] = run
        time.sleep(1.1)  # run ids are to the second: the default run is the newest
    compare = new_run("compare", {"model_a": "base", "model_b": runs["default"].id, "prompts": "bundled:heldout"},
                      root)
    rows = [diagnostics.add_to_row({"index": i, "prompt": f"Question {i}?", "model_a": "base",
                                    "model_b": runs["default"].id, "answer_a": f"{FLUENT} #{i}",
                                    "answer_b": SALAD if i == 0 else REFUSAL if i < 9 else f"{FLUENT} (B{i})",
                                    "toxicity_a": 0.05, "toxicity_b": 0.0, "reward_a": 0.0, "reward_b": 1.4,
                                    "judge_a": 0.1, "judge_b": 0.0})
            for i in range(10)]
    compare.log_samples(rows)
    compare.set_status("done", summary={"n": 10, "scorer": "offline", "prompts": "bundled:heldout",
                                        "paired": {"reward": {"mean": 1.4, "lo": 1.4, "hi": 1.4, "n": 10}},
                                        "diagnostics": diagnostics.paired_rates(rows)})
    return root


def _traces(page, elem_id: str) -> list[str]:
    return page.evaluate(
        """id => { const el = document.querySelector(`#${id} .js-plotly-plot`);
                   return el && el.data ? el.data.map(t => t.name || '') : []; }""", elem_id)


def _wait_traces(page, elem_id: str, n: int, timeout_s: float = 20) -> list[str]:
    deadline, names = time.time() + timeout_s, []
    while time.time() < deadline:
        names = _traces(page, elem_id)
        if len(names) == n:
            return names
        page.wait_for_timeout(400)
    raise AssertionError(f"#{elem_id} has traces {names}, not {n}")


def test_eval_curves_timeline_and_an_overlay_of_two_runs(browser, app_url, app_runs, shots):
    from lab.runs import list_runs

    default, beta0 = (r.id for r in list_runs(kind="ppo", root=app_runs))
    page = _open(browser, app_url)
    _tab(page, "PPO")
    assert _wait_traces(page, "ppo-eval-scores", 2) == ["proxy", "judge"]  # the newest run, alone
    note = _wait_text(page, "#ppo-eval-note", ("fixed prompts",), 20)
    assert "proxy reward rose by +0.50 from step 0 to step 32" in note
    timeline = page.locator("#ppo-timeline")
    assert timeline.locator("table").count() == 2 and "Pinned prompt 0" in timeline.inner_text()
    assert timeline.locator("tbody tr").count() == 6  # two pinned prompts x three evaluations
    page.locator("#ppo-overlay input").click()
    page.get_by_role("option", name=beta0, exact=False).first.click()
    page.keyboard.press("Escape")
    names = _wait_traces(page, "ppo-eval-scores", 4)
    assert names == [f"{default} · proxy", f"{default} · judge", f"{beta0} · proxy", f"{beta0} · judge"]
    assert len(_traces(page, "ppo-eval-rates")) == 4
    page.locator("#ppo-eval").first.scroll_into_view_if_needed()
    page.screenshot(path=str(shots / "screenshot-ppo-eval.png"), full_page=True)
    page.context.close()


def test_compare_verdict_diagnostics_and_one_click_to_a_blind_vote(browser, app_url, app_runs, shots):
    page = _open(browser, app_url)
    _tab(page, "Compare")
    verdict = _wait_text(page, "#compare-verdict", ("not better",), 30)
    assert "80% of answers are refusals (base 0%)" in verdict
    summary = page.locator("#compare-summary").inner_text()
    assert "refusals" in summary and "degenerate answers" in summary and "opening apology" in summary
    page.locator("#compare-show input").click()
    page.get_by_role("option", name="B refuses, A does not").click()
    deadline = time.time() + 15
    while page.locator("#compare-cards .cmp-card").count() != 8 and time.time() < deadline:
        page.wait_for_timeout(300)
    assert page.locator("#compare-cards .cmp-card").count() == 8
    assert "refusal: " in page.locator("#compare-cards").inner_text()
    page.screenshot(path=str(shots / "screenshot-compare-diagnostics.png"), full_page=True)
    page.locator("#compare-vote").click()
    page.wait_for_selector("#feedback-pair .answer", timeout=30_000)
    assert page.locator("[role=tab][aria-selected=true]").first.inner_text().strip() == "Feedback"
    pair = page.locator("#feedback-pair").inner_text()
    assert "Question" in pair and "default" not in pair and "base" not in pair.split("Question")[0]  # blind
    page.locator("#feedback-vote-a").click()
    _wait_text(page, "#feedback-reveal", ("written by",), 20)
    from lab import votes

    names = [n for n in votes.list_sets(app_runs) if n.startswith("vote-compare-")]
    assert len(names) == 1 and len(votes.open_set(names[0], app_runs).pairs()) == 10
    assert len(votes.open_set(names[0], app_runs).votes()) == 1
    page.screenshot(path=str(shots / "screenshot-compare-vote.png"), full_page=True)
    page.context.close()
