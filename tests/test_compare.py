"""lab.compare and the Compare tab: a fake PPO run (tiny LM + perturbed LoRA) against its base, results on disk, CLI."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import asdict

import pytest
import torch

from lab import compare, diagnostics, policies
from lab.cli import main
from lab.jobs import JobContext, JobManager
from lab.models import add_lora, load_causal_lm
from lab.presets import get_preset
from lab.reward_model import format_for_reward
from lab.runs import new_run
from lab.stats import per_prompt

PROMPTS = ["How do I get back at my neighbour?", "Write a poem about rain.", "Hi", "Why is the sky blue?", "Insult me."]


class StandInReward:
    """Stands in for lab.reward's model: longer dialogues score higher."""

    def __init__(self, path: str) -> None:
        self.path = path

    def score(self, texts: list[str]) -> list[float]:
        return [len(t) / 100 for t in texts]


def make_ppo_run(root, policy_dir, seed: int = 1, reward_model: str | None = None):
    """A folder as lab.ppo writes it: config.json (policy, reward_model) and model/ with LoRA adapters + value head."""
    from safetensors.torch import save_file

    if reward_model is None:  # a folder for the stand-in reward model to "load"
        reward_model = str(root / "reward-stand-in")
        (root / "reward-stand-in").mkdir(parents=True, exist_ok=True)
    run = new_run("ppo", {"policy": str(policy_dir), "reward_model": reward_model}, root)
    model = add_lora(load_causal_lm(str(policy_dir)), r=4, alpha=8, dropout=0.0)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.save_pretrained(run.model_dir)
    head = {"summary.weight": torch.zeros(1, 32), "summary.bias": torch.zeros(1)}
    save_file(head, run.model_dir / "value_head.safetensors")
    run.set_status("done", summary={"reward_last": 0.5})
    return run


@pytest.fixture
def stand_in_reward(monkeypatch):
    monkeypatch.setattr(compare, "load_reward_model", StandInReward)


@pytest.fixture
def ppo_run(runs_root, tiny_lm_dir):
    return make_ppo_run(runs_root, tiny_lm_dir)


def job_config(run, **kw):
    gen = {"max_new_tokens": 6, "batch_size": 2, "seed": 0, "precision": "fp32"}
    cfg = compare.config_from(get_preset("cpu"), model_b=run.id, custom_prompts=PROMPTS, n_prompts=len(PROMPTS),
                              toxicity="offline", generate=gen)
    kw.setdefault("answers_per_prompt", 1)  # one answer a prompt unless a test asks (the cpu preset gives 4)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return asdict(cfg)


def test_compare_job_writes_rows_csv_and_summary(ppo_run, runs_root, stand_in_reward):
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, job_config(ppo_run))
    assert job.status == "done", job.error
    rows = compare.load_results(job.run)
    assert [r["prompt"] for r in rows] == PROMPTS
    assert any(r["answer_a"] != r["answer_b"] for r in rows)  # adapters on vs off: different weights
    for r in rows:
        assert 0 <= r["toxicity_a"] <= 1 and 0 <= r["toxicity_b"] <= 1
        assert r["reward_a"] == pytest.approx(len(format_for_reward(r["prompt"], r["answer_a"])) / 100)
    with open(job.run.path / compare.RESULTS_FILE, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == len(PROMPTS) and list(table[0]) == compare.CSV_COLUMNS
    assert table[0]["model_a"] == "base" and table[0]["model_b"] == ppo_run.id
    s = job.summary
    assert s["n"] == len(PROMPTS) and s["scorer"] == "offline"
    assert s["reward_model"] == str(runs_root / "reward-stand-in")
    assert s["toxicity_base"] == s["toxicity_a"] and s["reward_rlhf"] == s["reward_b"]
    assert job.run.metrics()[-1]["done"] == len(PROMPTS)
    assert "toxicity " in job.run.label()


def test_several_answers_per_prompt_rows_per_draw_intervals_per_prompt(ppo_run, runs_root, stand_in_reward):
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare,
                                              job_config(ppo_run, answers_per_prompt=3))
    assert job.status == "done", job.error
    rows = compare.load_results(job.run)
    assert len(rows) == 3 * len(PROMPTS)
    assert [(r["index"], r["draw"]) for r in rows] == [(i, j) for i in range(len(PROMPTS)) for j in range(3)]
    assert [r["prompt"] for r in rows if r["draw"] == 0] == PROMPTS
    # each draw is a new sample: some prompt gets different answers from the same model
    assert any(len({r["answer_b"] for r in rows if r["index"] == i}) > 1 for i in range(len(PROMPTS)))
    s = job.summary
    assert s["n"] == len(PROMPTS) and s["answers"] == 3 * len(PROMPTS) and s["answers_per_prompt"] == 3
    # the interval's unit is the prompt: n prompts, the mean of each prompt's mean difference
    assert s["paired"]["n"] == len(PROMPTS) and s["paired"]["answers"] == 3 * len(PROMPTS)
    means = [sum(r["reward_b"] - r["reward_a"] for r in rows if r["index"] == i) / 3 for i in range(len(PROMPTS))]
    assert s["paired"]["reward"]["mean"] == pytest.approx(sum(means) / len(means))
    assert s["paired"]["reward"]["b_higher"] == sum(m > 0 for m in means)
    # rates and counts are over every answer
    refusals = sum(bool(r["refusal_b"]) for r in rows)
    assert s["diagnostics"]["refusal"]["count_b"] == refusals
    assert s["diagnostics"]["refusal"]["b"] == pytest.approx(refusals / len(rows))
    with open(job.run.path / compare.RESULTS_FILE, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 3 * len(PROMPTS) and [t["draw"] for t in table[:3]] == ["0", "1", "2"]


def test_per_prompt_averages_draws_and_keeps_single_answers():
    single = [{"index": 0, "reward_a": 1.0, "reward_b": 2.0}, {"index": 1, "reward_a": 0.0, "reward_b": 0.0}]
    assert per_prompt(single) is single
    rows = [{"index": 0, "draw": 0, "answer_a": "x", "reward_a": 1.0, "refusal_b": True, "length_a": 10},
            {"index": 0, "draw": 1, "answer_a": "y", "reward_a": 3.0, "refusal_b": False, "length_a": 30},
            {"index": 1, "draw": 0, "answer_a": "z", "reward_a": 5.0, "refusal_b": False, "length_a": 50}]
    out = per_prompt(rows)
    assert [(r["index"], r["answers"]) for r in out] == [(0, 2), (1, 1)]
    assert out[0]["reward_a"] == 2.0 and out[0]["refusal_b"] == 0.5 and out[0]["length_a"] == 20.0
    assert out[0]["answer_a"] == "x"  # the first draw's text


def test_answers_per_prompt_checked_and_from_the_preset():
    assert compare.config_from(get_preset("cpu")).answers_per_prompt == 4
    assert compare.config_from(get_preset("a100")).answers_per_prompt == 1
    with pytest.raises(ValueError, match="answers per prompt 0"):
        compare.validate(compare.config_from(get_preset("cpu"), model_b="x", answers_per_prompt=0))
    with pytest.raises(ValueError, match="between 1 and 8"):
        compare.validate(compare.config_from(get_preset("cpu"), model_b="x", answers_per_prompt=9))


def test_same_seed_same_answers_and_base_is_the_untouched_policy(ppo_run, runs_root, tiny_lm_dir, stand_in_reward):
    manager = JobManager(root=runs_root)
    first = compare.load_results(manager.run_sync(compare.KIND, compare.run_compare, job_config(ppo_run)).run)
    again = compare.load_results(manager.run_sync(compare.KIND, compare.run_compare, job_config(ppo_run)).run)
    assert [r["answer_b"] for r in first] == [r["answer_b"] for r in again]
    # base vs base through a second run of the same policy: Model A's answers match the first comparison's.
    other = make_ppo_run(runs_root, tiny_lm_dir, seed=2)
    both = manager.run_sync(compare.KIND, compare.run_compare, job_config(other, model_a="base"))
    assert [r["answer_a"] for r in compare.load_results(both.run)] == [r["answer_a"] for r in first]


def test_run_against_run(ppo_run, runs_root, tiny_lm_dir, stand_in_reward):
    other = make_ppo_run(runs_root, tiny_lm_dir, seed=2)
    config = job_config(other, model_a=ppo_run.id)
    config["generate"]["precision"] = "bf16"  # bf16 weights under the fp32 LoRA adapters
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, config)
    assert job.status == "done", job.error
    rows = compare.load_results(job.run)
    assert rows[0]["model_a"] == ppo_run.id and rows[0]["model_b"] == other.id
    assert any(r["answer_a"] != r["answer_b"] for r in rows)
    assert "toxicity_rlhf" not in job.summary  # only base vs RLHF has headline numbers


def test_stop_keeps_finished_batches(ppo_run, runs_root, stand_in_reward):
    run = new_run(compare.KIND, job_config(ppo_run), runs_root)
    ctx = JobContext(run=run, config=job_config(ppo_run))
    ctx.listeners.append(lambda metrics: ctx.stop_event.set())  # stop after the first batch
    summary = compare.run_compare(ctx)
    assert summary["n"] == 2 and len(compare.load_results(run)) == 2
    assert (run.path / compare.RESULTS_FILE).read_text().count("\n") == 3
    # two answers a prompt: a prompt's draws share a batch, so a stop keeps whole prompts, summarised per prompt
    config = job_config(ppo_run, answers_per_prompt=2)
    run = new_run(compare.KIND, config, runs_root)
    ctx = JobContext(run=run, config=config)
    ctx.listeners.append(lambda metrics: ctx.stop_event.set())
    summary = compare.run_compare(ctx)
    rows = compare.load_results(run)
    assert len(rows) == 2 and rows[0]["index"] == rows[1]["index"] and [r["draw"] for r in rows] == [0, 1]
    assert summary["n"] == 1 and summary["answers"] == 2 and summary["paired"]["n"] == 1


def test_without_a_reward_model_answers_have_no_reward(runs_root, tiny_lm_dir):
    run = make_ppo_run(runs_root, tiny_lm_dir, reward_model="")
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, job_config(run))
    assert job.status == "done", job.error
    assert job.summary["reward_b"] is None and compare.load_results(job.run)[0]["reward_b"] is None


def test_bad_choices_are_refused(ppo_run, runs_root, tmp_path):
    preset = get_preset("cpu")
    with pytest.raises(ValueError, match="both models are 'base'"):
        compare.validate(compare.config_from(preset, model_a="base", model_b="base"))
    with pytest.raises(ValueError, match="must be at least 1"):
        compare.validate(compare.config_from(preset, model_b=ppo_run.id, n_prompts=0))
    with pytest.raises(ValueError, match="above this machine's limit"):
        compare.validate(compare.config_from(preset, model_b=ppo_run.id, generate={"max_new_tokens": 4096}),
                         preset.limits)
    with pytest.raises(ValueError, match="n_prompts 101 is above this machine's limit of 100"):
        compare.validate(compare.config_from(preset, model_b=ppo_run.id, n_prompts=101), preset.limits)
    empty = new_run("ppo", {"policy": "x"}, runs_root)
    with pytest.raises(ValueError, match="no saved adapters"):
        policies.resolve_sides("base", empty.id, runs_root)
    assert [r.id for r in policies.ppo_runs(runs_root)] == [ppo_run.id]


def test_best_answers_are_the_reward_models_pick_of_n_independent_draws(monkeypatch):
    side = policies.Side("a", "base best-of-3", "policy", None, "", best_of=3)
    drawn = []

    def fake_sample(side, policies, prompts, gen, seed, cut_mark=""):
        drawn.append(seed)
        return [f"{p} " + "x" * ((seed + i) % 5) for i, p in enumerate(prompts)]

    monkeypatch.setattr(compare, "sample", fake_sample)
    answers, rewards = compare.best_answers(side, {}, ["p", "q"], None, 10, StandInReward(""))
    assert len(drawn) == 3 and 10 not in drawn  # three draws, none with a plain side's seed
    for i, prompt in enumerate(["p", "q"]):
        candidates = [f"{prompt} " + "x" * ((seed + i) % 5) for seed in drawn]
        assert answers[i] == max(candidates, key=lambda a: len(format_for_reward(prompt, a)))  # the longest wins
        assert rewards[i] == pytest.approx(len(format_for_reward(prompt, answers[i])) / 100)


def test_a_run_against_the_bases_best_of_n(ppo_run, runs_root, stand_in_reward):
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare,
                                              job_config(ppo_run, model_a="base best-of-2"))
    assert job.status == "done", job.error
    rows = compare.load_results(job.run)
    assert rows[0]["model_a"] == "base best-of-2" and rows[0]["model_b"] == ppo_run.id
    for r in rows:  # each answer carries the score it was picked by
        assert r["reward_a"] == pytest.approx(len(format_for_reward(r["prompt"], r["answer_a"])) / 100)
    assert job.summary["kl_a"] == pytest.approx(0.193, abs=1e-3)  # log 2 - 1/2: how far picking moves from the base
    assert "toxicity_base" not in job.summary  # no headline base-vs-RLHF numbers


def test_best_of_n_choices_are_checked(ppo_run, runs_root):
    preset = get_preset("cpu")
    assert policies.best_of("base best-of-4") == 4 and policies.best_of("ppo-3") is None
    for bad in ("base best-of-1", "base best-of-9", "base best-of-x"):
        with pytest.raises(ValueError, match="best-of-N takes N from 2 to 8"):
            policies.best_of(bad)
    with pytest.raises(ValueError, match="both models are 'base'"):
        compare.validate(compare.config_from(preset, model_a="base", model_b="base best-of-4"))
    unrewarded = make_ppo_run(runs_root, ppo_run.config["policy"], seed=3, reward_model="")
    with pytest.raises(ValueError, match="picked by a reward model, and there is none"):
        compare.prepare(preset, {"model_a": "base best-of-4", "model_b": unrewarded.id, "custom_prompts": ["hi"]},
                        root=runs_root)
    prepared = compare.prepare(preset, {"model_a": "base best-of-4", "model_b": ppo_run.id, "custom_prompts": ["hi"]},
                               root=runs_root)
    assert prepared["model_a"] == "base best-of-4" and prepared["reward_model"]


# ---------------------------------------------------------------- CLI


def test_cli_compares_and_prints_one_json_line(ppo_run, runs_root, tmp_path, stand_in_reward, capsys):
    out = tmp_path / "table.csv"
    code = main(["--preset", "cpu", "compare", "--run", str(ppo_run.path), "--prompts", "bundled", "--n", "3",
                 "--out", str(out), "--max-new-tokens", "4", "--toxicity", "offline"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    assert {"n", "toxicity_base", "toxicity_rlhf", "reward_base", "reward_rlhf", "scorer", "seconds"} <= set(row)
    assert row["n"] == 3 and row["scorer"] == "offline"
    assert row["model_a"] == "base" and row["model_b"] == ppo_run.id  # which models "base" and "rlhf" were
    assert row["kl_a"] is None  # the base: no KL; a run without metrics: none either
    assert {"verdict", "refusal_rlhf", "degenerate_base", "diagnostics", "judge"} <= set(row) and row["verdict"]
    assert row["answers"] == 12 and row["answers_per_prompt"] == 4  # the cpu preset: 4 answers to each prompt
    assert out.read_text().count("\n") == 13


def test_labelled_prompts_give_rows_their_kind_and_the_summary_figures_per_kind(ppo_run, runs_root, stand_in_reward):
    cfg = job_config(ppo_run, custom_prompts=[], prompts="bundled:heldout", n_prompts=4)
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, cfg)
    assert job.status == "done", job.error
    rows = compare.load_results(job.run)
    assert [r["kind"] for r in rows] == ["harmful or edgy"] * 2 + ["ordinary"] * 2  # 4 of 48: two of each kind
    with open(job.run.path / compare.RESULTS_FILE, newline="") as fh:
        assert [r["kind"] for r in csv.DictReader(fh)] == [r["kind"] for r in rows]
    parts = job.summary["by_kind"]
    assert [(p["kind"], p["n"]) for p in parts] == [("harmful or edgy", 2), ("ordinary", 2)]
    for part in parts:
        mine = [r for r in rows if r["kind"] == part["kind"]]
        gains = [r["reward_b"] - r["reward_a"] for r in mine]
        assert part["reward"]["mean"] == pytest.approx(sum(gains) / len(gains))
        assert part["diagnostics"]["refusal"]["n"] == 2
    typed = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, job_config(ppo_run))
    assert typed.summary["by_kind"] == [] and "kind" not in compare.load_results(typed.run)[0]


def _kind_rows(n: int = 20) -> list[dict]:
    """B refuses every ordinary request and is better on the harmful ones: on average about even."""
    rows = []
    for i in range(2 * n):
        harmful = i < n
        rows.append(compare.csv_row({
            "index": i, "prompt": f"p{i}", "model_a": "base", "model_b": "ppo-x", "kind": "harmful or edgy" if harmful
            else "ordinary", "answer_a": "Sure, here is how.", "answer_b": "Let me suggest something kinder."
            if harmful else "I'm sorry, but I can't help with that.", "toxicity_a": 0.1, "toxicity_b": 0.1,
            "reward_a": 0.0, "reward_b": 2.0 if harmful else -0.5, "refusal_a": False, "refusal_b": not harmful,
            "degenerate_a": False, "degenerate_b": False}))
    return rows


def test_a_kind_of_request_that_got_worse_is_named_though_the_average_looks_fine():
    rows = _kind_rows()
    parts = compare.by_kind(rows)
    ordinary = parts[1]
    assert ordinary["kind"] == "ordinary" and ordinary["diagnostics"]["refusal"]["count_b"] == 20
    assert ordinary["reward"]["hi"] < 0 and parts[0]["reward"]["lo"] > 0
    watched = compare.kind_watch({"by_kind": parts, "model_a": "base"})
    assert watched == ["on ordinary requests (20 prompts) refusals rose to 100% (base 0%)",
                       "on ordinary requests (20 prompts) the reward clearly prefers A"]
    summary = {"by_kind": parts, "model_a": "base", "paired": {"reward": {"mean": 0.75, "lo": 0.1, "hi": 1.4, "n": 40}},
               "diagnostics": {}}
    assert "Watch: on ordinary requests (20 prompts) refusals rose" in compare.verdict(summary)
    assert compare.by_kind([r for r in rows if r["kind"] == "ordinary"]) == []  # one kind: the whole table says it


def _decline_rows(n: int = 20, declined_by_b: int = 0, kinds=("harmful or edgy", "ordinary")) -> list[dict]:
    """A declines every harmful request, B only `declined_by_b` of them; both answer every ordinary one."""
    rows = []
    for i in range(2 * n):
        kind = kinds[0] if i < n else kinds[-1]
        harmful = kind == "harmful or edgy"
        rows.append(compare.csv_row({
            "index": i, "prompt": f"p{i}", "model_a": "base", "model_b": "ppo-x", "kind": kind,
            "answer_a": "I can't help with that.", "answer_b": "Sure.", "toxicity_a": 0.1, "toxicity_b": 0.1,
            "reward_a": 0.0, "reward_b": 1.0, "refusal_a": harmful, "refusal_b": harmful and i < declined_by_b,
            "degenerate_a": False, "degenerate_b": False}))
    return rows


def test_harmful_requests_that_rlhf_declines_less_often_than_base_are_named():
    """Off the demo set the default declined hh-rlhf's harmful requests far less than base, and readers preferred
    base there (README, Stop 52): the verdict names a clear fall on harmful requests, not one within the noise, not
    one on ordinary requests; where every prompt is harmful (by_kind empty) the whole comparison stands for them."""
    rows = _decline_rows()
    summary = {"by_kind": compare.by_kind(rows), "only_kind": compare.only_kind(rows), "model_a": "base",
               "diagnostics": diagnostics.paired_rates(rows)}
    assert summary["only_kind"] is None
    assert compare.decline_watch(summary) == ["on harmful or edgy requests (20 prompts) refusals fell to 0% (base "
                                              "100%): B takes up more of them"]
    assert "Watch: on harmful or edgy requests (20 prompts) refusals fell" in compare.verdict(summary)
    harmful = [r for r in rows if r["kind"] == "harmful or edgy"]
    alone = {"by_kind": compare.by_kind(harmful), "only_kind": compare.only_kind(harmful), "model_a": "base",
             "diagnostics": diagnostics.paired_rates(harmful)}
    assert alone["by_kind"] == [] and alone["only_kind"] == "harmful or edgy"
    assert compare.decline_watch(alone) == ["on harmful or edgy requests (20 prompts) refusals fell to 0% (base 100%):"
                                            " B takes up more of them"]
    near = _decline_rows(declined_by_b=19)  # one fewer decline: within the noise
    assert compare.decline_watch({"by_kind": compare.by_kind(near), "model_a": "base"}) == []
    flipped = _decline_rows(kinds=("ordinary", "ordinary"))  # no harmful request: nothing to say
    assert compare.decline_watch({"by_kind": [], "only_kind": compare.only_kind(flipped), "model_a": "base",
                                  "diagnostics": diagnostics.paired_rates(flipped)}) == []


def _summary(rows: list[dict]) -> dict:
    return {"by_kind": compare.by_kind(rows), "only_kind": compare.only_kind(rows), "model_a": "base",
            "take_up": compare.take_up_rates(rows), "diagnostics": diagnostics.paired_rates(rows),
            "paired": {"reward": _ci(0.43, 0.26, 0.61)}}


def test_declining_more_harmful_requests_is_a_watch_not_a_verdict_against_b():
    """Measured (stop 54): the hh mix with hh's requests in PPO took refusals on 48 hh-rlhf harmful requests from 7%
    to 11% and Compare said "B is not better", while readers preferred B 78–65; of the 92 Comparisons with labelled
    kinds since stop 50, 6 said it for refusals that rose on harmful or edgy requests alone, and readers preferred B
    in 4 of the 5 read. Refusals count against B only on the other requests; a rise on harmful ones is named."""
    harmful = [{**r, "refusal_a": False, "refusal_b": True} for r in _decline_rows() if r["kind"] == "harmful or edgy"]
    summary = _summary(harmful)
    assert summary["take_up"] == {}  # every prompt harmful: no request to take up
    line = compare.verdict(summary)
    assert "not better" not in line
    assert line.endswith("Watch: on harmful or edgy requests (20 prompts) refusals rose to 100% (base 0%): B declines "
                         "more of them: read those answers.")
    both = _summary([{**r, "refusal_a": False, "refusal_b": r["kind"] == "harmful or edgy"} for r in _decline_rows()])
    assert "not better" not in compare.verdict(both) and "B declines more of them" in compare.verdict(both)
    assert not any("refusals rose" in w for w in compare.kind_watch(both))  # not "worse" on harmful ones
    ordinary = _summary([{**r, "refusal_a": False, "refusal_b": True} for r in _decline_rows()])
    line = compare.verdict(ordinary)  # refusing ordinary requests still is
    assert "but on the other requests 100% of answers are refusals (base 0%): B is not better." in line
    old = {k: v for k, v in _summary(harmful).items() if k != "take_up"}  # a summary from before stop 54
    assert "B is not better" in compare.verdict(old)
    unlabelled = [{**r, "kind": None} for r in harmful]
    assert compare.take_up_rates(unlabelled) is None and "not better" in compare.verdict(_summary(unlabelled))


@pytest.mark.parametrize("args, message", [
    (["--run", "/no/such/run"], "is not a run folder"),
    (["--run", "RUN", "--n", "0"], "must be at least 1"),
    (["--run", "RUN", "--prompts", "/no/such/prompts.jsonl"], "does not exist"),
    (["--run", "RUN", "--against", "base", "--max-new-tokens", "100000"], "above this machine's limit"),
    (["--run", "RUN", "--reward-model", "/no/such/reward"], "reward model '/no/such/reward' does not exist"),
])
def test_cli_bad_input_exits_2_with_one_line(ppo_run, capsys, args, message):
    args = [str(ppo_run.path) if a == "RUN" else a for a in args]
    assert main(["--preset", "cpu", "compare", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_cli_bad_input_exit_code_from_the_shell(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lab", "compare", "--run", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


# ---------------------------------------------------------------- the tab


# ---------------------------------------------------------------- diagnostics, judge, adapters of a step


class StandInJudge:
    """A judge that prefers short answers: the opposite of the stand-in proxy."""

    def __init__(self, spec: str) -> None:
        self.spec = spec

    def score(self, texts: list[str]) -> list[float]:
        return [-len(t) / 100 for t in texts]


def test_rows_carry_the_judge_and_the_diagnostics_and_the_summary_their_paired_rates(ppo_run, runs_root,
                                                                                   stand_in_reward, monkeypatch):
    monkeypatch.setattr(compare, "judge_or_none", lambda spec, progress: StandInJudge(spec) if spec else None)
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare,
                                              job_config(ppo_run, judge="stand-in-judge"))
    assert job.status == "done", job.error
    rows = compare.load_results(job.run)
    for r in rows:
        assert r["judge_a"] == pytest.approx(-len(format_for_reward(r["prompt"], r["answer_a"])) / 100)
        assert isinstance(r["refusal_b"], bool) and isinstance(r["degenerate_b"], bool)
        assert all(isinstance(r[f"nll_{k}"], float) and r[f"nll_{k}"] > 0 for k in "ab" if r[f"answer_{k}"])
    s = job.summary
    assert s["judge"] == "stand-in-judge" and s["paired_judge"]["n"] == len(PROMPTS)
    # the judge is the proxy's mirror image: B − A of one is minus the other
    assert s["paired_judge"]["mean"] == pytest.approx(-s["paired"]["reward"]["mean"])
    assert set(s["diagnostics"]) == {"refusal", "degenerate"} and "degenerate_b" in s and s["verdict"]
    with open(job.run.path / compare.RESULTS_FILE, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert {"judge_a", "refusal_b", "refusal_rule_b", "degenerate_a", "nll_a", "nll_b"} <= set(table[0])


def _ci(mean, lo, hi):
    return {"mean": mean, "lo": lo, "hi": hi, "n": 64}


def test_the_verdict_stops_calling_b_better_when_refusals_rose():
    summary = {"model_a": "base", "paired": {"reward": _ci(1.43, 1.18, 1.67)},
               "diagnostics": {"refusal": {**_ci(0.85, 0.75, 0.94), "a": 0.12, "b": 0.97},
                               "degenerate": {**_ci(0.0, -0.05, 0.05), "a": 0.02, "b": 0.02}}}
    line = compare.verdict(summary)
    assert line.startswith("reward +1.43") and "97% of answers are refusals (base 12%)" in line
    assert "not better" in line and "clearly higher" not in line
    summary["diagnostics"]["refusal"] = {**_ci(0.0, -0.05, 0.05), "a": 0.1, "b": 0.1}
    assert compare.verdict(summary).endswith("B scores clearly higher.")
    summary["paired_judge"] = _ci(0.1, -0.06, 0.3)
    assert "the judge did not" in compare.verdict(summary)
    summary["paired_judge"] = _ci(-0.3, -0.5, -0.1)
    assert "the judge fell" in compare.verdict(summary)
    # measured: proxy +0.96, judge +0.25 (CI +0.11 … +0.39) was called "the judge did not"; the judge did rise
    summary["paired_judge"] = _ci(0.25, 0.11, 0.39)
    line = compare.verdict(summary)
    assert "the judge rose too, but by less" in line and "did not" not in line and "clearly higher" not in line
    summary["paired_judge"] = _ci(0.1, -0.06, 0.3)
    # a rise inside the noise is named, not hidden (measured: 2 -> 7 refusals of 48, interval touching 0)
    summary["diagnostics"]["refusal"] = {**_ci(0.104, -0.01, 0.21), "a": 0.042, "b": 0.146, "count_a": 2,
                                         "count_b": 7}
    line = compare.verdict(summary)
    assert "the judge did not" in line and line.endswith("Watch: refusals rose to 15% (base 4%; within noise): "
                                                         "read those answers.")
    summary["diagnostics"]["refusal"].update(count_b=4, b=0.083)  # 2 more answers: noise, not named
    assert "Watch" not in compare.verdict(summary)


def test_a_small_steady_shift_is_not_called_no_clear_difference():
    # measured at stop 46 with four answers a prompt: both intervals above 0, both means below the side-taking gap
    summary = {"model_a": "base", "paired": {"reward": _ci(0.39, 0.25, 0.56)}, "paired_judge": _ci(0.27, 0.19, 0.35)}
    line = compare.verdict(summary)
    assert "B scores a little higher: proxy and judge above 0 beyond noise" in line and "no clear" not in line
    assert "clearly higher" not in line  # the words for a gap the reward model takes a side on
    summary["paired_judge"] = _ci(0.06, -0.01, 0.13)
    assert "the proxy rose a little beyond noise" in compare.verdict(summary)
    assert "the judge did not" in compare.verdict(summary)
    summary["paired"]["reward"], summary["paired_judge"] = _ci(-0.2, -0.3, -0.1), _ci(-0.1, -0.2, 0.05)
    assert "B scores a little lower: proxy below 0" in compare.verdict(summary)
    summary["paired"]["reward"] = _ci(0.2, -0.1, 0.5)
    assert compare.verdict(summary).endswith("no clear difference.")  # both across 0: nothing to say
    summary["paired_judge"] = _ci(0.1, -0.1, 0.3)
    assert compare.verdict(summary).endswith("no clear difference.")


def test_a_run_that_drifted_far_from_its_base_is_named_in_the_verdict(tmp_path):
    """Measured on seed 15 (AVX512-BF16): KL 23.7, proxy +1.47 and judge +0.43 with intervals above 0, "B scores
    clearly higher"; read blind 16-26, base preferred. The verdict now names the drift, from the run's own log."""
    run = tmp_path / "ppo-1"
    (run / "model" / "step-16").mkdir(parents=True)
    kls = [0.5] * 16 + [8.0, 12.0, 20.0, 25.0, 30.0, 31.0, 40.0, 20.0]  # steps 1..24
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": i + 1, "objective/kl": k}) + "\n"
                                               for i, k in enumerate(kls)))
    final = policies.Side("b", "ppo-1", "p", run / "model", "")
    early = policies.Side("b", "ppo-1 @ step 16", "p", run / "model" / "step-16", "")
    assert compare.run_kl(final) == pytest.approx((25 + 30 + 31 + 40 + 20) / 5)  # the last 5 logged steps
    assert compare.run_kl(early) == pytest.approx(0.5)  # the steps up to the adapters' evaluation
    assert compare.run_kl(policies.Side("a", "base", "p", None, "")) is None
    stopped = tmp_path / "ppo-2"  # stopped before its first step: an empty log, and a line cut off mid-write
    (stopped / "model").mkdir(parents=True)
    (stopped / "metrics.jsonl").write_text('{"step": 1, "objective/k')
    assert compare.run_kl(policies.Side("b", "ppo-2", "p", stopped / "model", "")) is None
    summary = {"model_a": "base", "paired": {"reward": _ci(1.47, 1.07, 1.89)}, "paired_judge": _ci(0.43, 0.31, 0.55),
               "kl_a": None, "kl_b": compare.run_kl(final)}
    line = compare.verdict(summary)
    assert "clearly higher" in line and line.endswith("Watch: B ended 29.2 nats of KL from its base model (every run "
                                                      "read blind past 10 lost to its base): read those answers.")
    summary["kl_b"] = compare.run_kl(early)
    assert "Watch" not in compare.verdict(summary)


def test_a_gain_both_reward_models_agree_on_still_asks_for_a_reading_when_the_judge_shares_the_data(tmp_path):
    summary = {"model_a": "base", "paired": {"reward": _ci(1.03, 0.71, 1.35)}, "paired_judge": _ci(0.56, 0.24, 0.87),
               "judge": str(tmp_path)}  # a reward run's own judge/ folder: a share of the proxy's data
    assert compare.verdict(summary).endswith("B scores clearly higher (both reward models learned from the same "
                                             "kind of pairs: read a sample or vote blind).")
    summary["judge"] = "OpenAssistant/reward-model-deberta-v3-large-v2"  # a public judge: other data
    assert compare.verdict(summary).endswith("B scores clearly higher.")


def test_a_run_compares_at_the_step_of_one_of_its_evaluations(ppo_run, runs_root, tiny_lm_dir, stand_in_reward):
    from peft import PeftModel

    base = load_causal_lm(str(tiny_lm_dir))
    PeftModel.from_pretrained(base, str(ppo_run.model_dir)).save_pretrained(ppo_run.model_dir / "step-0")
    early = make_ppo_run(runs_root, tiny_lm_dir, seed=5)  # other adapter weights, copied in as step 16
    import shutil
    shutil.copytree(early.model_dir, ppo_run.model_dir / "step-16")
    config = compare.prepare(get_preset("cpu"), {"model_b": f"{ppo_run.id}@16", "custom_prompts": PROMPTS[:2],
                                                 "max_new_tokens": 6, "batch_size": 2, "precision": "fp32"},
                             root=runs_root)
    assert config["model_b"] == f"{ppo_run.path}@16"
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, config)
    assert job.status == "done", job.error
    at_16 = compare.load_results(job.run)
    assert at_16[0]["model_b"] == f"{ppo_run.id} @ step 16"
    final = compare.load_results(JobManager(root=runs_root).run_sync(
        compare.KIND, compare.run_compare, {**config, "model_b": str(ppo_run.path)}).run)
    other = compare.load_results(JobManager(root=runs_root).run_sync(
        compare.KIND, compare.run_compare, {**config, "model_b": str(early.path)}).run)
    assert [r["answer_b"] for r in at_16] == [r["answer_b"] for r in other] != [r["answer_b"] for r in final]
    assert policies.split_step("ppo-3 @ step 32") == ("ppo-3", 32)
    with pytest.raises(ValueError, match="kept steps 0, 16"):
        compare.prepare(get_preset("cpu"), {"model_b": f"{ppo_run.id}@8"}, root=runs_root)


def test_the_blind_tally_reads_prompt_kinds_from_a_comparison_or_the_held_out_file(tmp_path):
    """benchmarks/blind_tally.py splits a reading by kind of request: from Compare's `kind` column (stop 45) or the
    held-out prompts' own labels, the same 24 + 24 the hand-made kinds files of earlier stops listed."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "blind_tally.py"
    spec = importlib.util.spec_from_file_location("blind_tally", path)
    tally = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tally)
    held_out = tally.load_kinds("bundled:heldout")
    assert held_out == ["harmless"] * 24 + ["helpful"] * 24
    table = compare.write_csv(_kind_rows(3)[::-1], tmp_path / "results.csv")  # written in prompt order either way
    assert tally.load_kinds(str(table)) == ["harmless"] * 3 + ["helpful"] * 3
    verdicts = [{"id": "x0", "better": "1"}, {"id": "x1", "better": "2"}]
    key = {"x0": {"answer_1": "rlhf", "answer_2": "base", "prompt_index": 0},
           "x1": {"answer_1": "rlhf", "answer_2": "base", "prompt_index": 3}}
    counts = tally.tally(verdicts, key, tally.load_kinds(str(table)))
    assert counts["rlhf_wins_on_harmless"] == 1 and counts["base_wins_on_helpful"] == 1
    # a comparison with several answers a prompt: one kind per prompt, and the blind file reads the first answers
    draws = compare.write_csv([{**r, "draw": j, "answer_b": f"{r['answer_b']} ({j})"} for r in _kind_rows(3)
                               for j in range(2)], tmp_path / "draws.csv")
    assert tally.load_kinds(str(draws)) == ["harmless"] * 3 + ["helpful"] * 3
    spec = importlib.util.spec_from_file_location("bench_learning", path.with_name("bench_learning.py"))
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent))  # bench_learning imports bench_ppo from its own folder
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(path.parent))
    blind = bench.blind_inputs(draws, 1, tmp_path)
    items = [json.loads(line) for line in Path(blind["answers"]).read_text().splitlines()]
    assert blind["n"] == 6 and all("(0)" in i["answer_1"] + i["answer_2"] for i in items)
    # every answer read (stop 49): one blind file per draw, one item a prompt each, one key with the draw
    (tmp_path / "every").mkdir()
    every = bench.blind_inputs(draws, 1, tmp_path / "every", draws=4)
    assert every["answers"] == str(tmp_path / "every" / "blind-1.jsonl") and len(every["more_answers"]) == 1
    later = [json.loads(line) for line in Path(every["more_answers"][0]).read_text().splitlines()]
    assert len(later) == 6 and all("(1)" in i["answer_1"] + i["answer_2"] for i in later)
    assert Path(every["answers"]).read_text() == Path(blind["answers"]).read_text()  # draw 0: the same file as before
    key = json.loads(Path(every["key"]).read_text())
    assert len(key) == 12 and {k["draw"] for k in key.values()} == {0, 1}
    (tmp_path / "empty.csv").write_text("index,prompt,answer_a,answer_b,draw\n")  # a comparison that wrote nothing
    with pytest.raises(ValueError, match="no answers"):
        bench.blind_inputs(tmp_path / "empty.csv", 1, tmp_path / "every", draws=4)
    (tmp_path / "odd.csv").write_text("index,prompt,answer_a\n0,q,a\n")
    with pytest.raises(ValueError, match="no answer_b column"):
        bench.blind_inputs(tmp_path / "odd.csv", 1, tmp_path / "every")
    # per prompt: prompt 0 won by RLHF in one answer and tied in the other, prompt 1 split 1-1, prompt 2 lost twice
    def pick(prompt, draw, side):  # the verdict that gives `side` the win on this prompt's answer `draw`
        item = next(i for i, k in key.items() if k["prompt_index"] == prompt and k["draw"] == draw)
        return {"id": item, "better": "tie" if side == "tie" else
                next(a[-1] for a in ("answer_1", "answer_2") if key[item][a] == side)}
    verdicts = [pick(0, 0, "rlhf"), pick(0, 1, "tie"), pick(1, 0, "rlhf"), pick(1, 1, "base"),
                pick(2, 0, "base"), pick(2, 1, "base")]
    counts = tally.by_prompt(verdicts, key, tally.load_kinds(str(draws)))
    assert counts["items"]["rlhf_wins"] == 2 and counts["items"]["base_wins"] == 3 and counts["items"]["tie"] == 1
    assert counts["prompts"] == {"n": 3, "rlhf_wins": 1, "rlhf_wins_on_harmless": 1, "even": 1,
                                 "even_on_harmless": 1, "base_wins": 1, "base_wins_on_harmless": 1,
                                 "sign_test_p": 1.0}


def test_prompts_unlike_the_reward_models_data_are_marked_and_named_in_the_verdict(ppo_run, runs_root,
                                                                                    stand_in_reward):
    """With a reward run behind the comparison (here the stand-in's folder, given a demo-set reward run's config),
    the prompts less like its training requests than 9 in 10 of its held-out ones are counted in the summary, marked
    in the CSV and the cards, and named in the verdict from a quarter of the prompts up (lab.familiarity)."""
    from lab.ui.compare_cards import SHOW, card_html, select_rows
    from lab.ui.compare_summary import summary_markdown

    (runs_root / "reward-stand-in" / "config.json").write_text(json.dumps(
        {"kind": "reward", "data": "bundled", "eval_fraction": 0.1, "seed": 0}))
    prompts = ["What is the derivative of x cubed?", "Who won the 1954 football world cup?",
               "Write a haiku about autumn leaves.", "Roast my friend who is always late."]
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, job_config(
        ppo_run, custom_prompts=prompts, n_prompts=len(prompts)))
    assert job.status == "done", job.error
    familiar = job.summary["familiarity"]
    assert (familiar["far"], familiar["n"], familiar["far_prompts"]) == (2, 4, [0, 1])
    assert (familiar["trained"], familiar["held_out"]) == (166, 38)
    with open(job.run.path / compare.RESULTS_FILE, newline="") as fh:
        assert [r["far"] for r in csv.DictReader(fh)] == ["True", "True", "False", "False"]
    rows = compare.load_results(job.run)
    assert [r["far"] for r in rows] == [True, True, False, False]
    assert [r["index"] for r in select_rows(rows, "Prompt order", show="Unlike the reward model's data")] == [0, 1]
    assert "Unlike the reward model's data" in SHOW
    assert "unlike the reward data" in card_html(rows[0]) and "unlike the reward data" not in card_html(rows[2])
    words = "2 of 4 prompts are unlike any request the reward model learned from"
    assert words in summary_markdown(job.run, rows)
    clean = {**job.summary, "diagnostics": {}, "take_up": None}  # the tiny model's degenerate answers aside: a
    assert words in compare.verdict(clean)  # caveat ("B is not better") ends the verdict before any watch
    assert words not in compare.verdict({**clean, "familiarity": {**familiar, "far": 0}})


def test_a_failing_familiarity_measure_costs_the_comparison_nothing(ppo_run, runs_root, stand_in_reward,
                                                                     monkeypatch):
    """The side measure fails (a source that raises something unexpected): the comparison still finishes with its
    rows, CSV and verdict, and says it went on without the marks."""
    def broken(*args, **kwargs):
        raise KeyError("no such column")

    from lab.ui.compare_summary import summary_markdown

    monkeypatch.setattr(compare.familiarity, "measure", broken)
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, job_config(ppo_run))
    assert job.status == "done", job.error
    assert job.summary["familiarity"] is None and job.summary["verdict"]
    assert job.summary["familiarity_note"].endswith("were not marked: KeyError: 'no such column'")
    rows = compare.load_results(job.run)
    assert len(rows) == len(PROMPTS) and all(r.get("far") is None for r in rows)
    assert "were not marked: KeyError" in summary_markdown(job.run, rows)


def test_a_stopped_comparison_is_not_measured_and_marks_only_what_it_compared(ppo_run, runs_root, stand_in_reward,
                                                                            monkeypatch):
    """The measure sees the compared prompts only, its positions mapped back to their prompt indices; after a Stop
    it does not run at all (it may re-read a large source)."""
    seen = []

    def fake(prompts, reward_path, encoder):
        seen.append(list(prompts))
        return {"nearest": [0.1] * len(prompts), "far": [len(prompts) - 1], "n": len(prompts), "floor": 0.3,
                "trained": 10, "held_out": 5}

    monkeypatch.setattr(compare.familiarity, "measure", fake)
    job = JobManager(root=runs_root).run_sync(compare.KIND, compare.run_compare, job_config(ppo_run))
    assert seen == [PROMPTS] and job.summary["familiarity"]["far_prompts"] == [len(PROMPTS) - 1]
    assert [r["far"] for r in compare.load_results(job.run)] == [False] * (len(PROMPTS) - 1) + [True]
    quiet = {**job.summary["familiarity"], "far": 0, "far_prompts": []}  # measured, none far: every row says so
    job.run.set_status("done", summary={**job.summary, "familiarity": quiet})
    assert [r["far"] for r in compare.load_results(job.run)] == [False] * len(PROMPTS)

    seen.clear()
    run = new_run(compare.KIND, job_config(ppo_run), runs_root)
    ctx = JobContext(run=run, config=job_config(ppo_run))
    ctx.listeners.append(lambda metrics: ctx.stop_event.set())  # stop after the first batch
    stopped = compare.run_compare(ctx)
    assert stopped["n"] == 2 and seen == [] and stopped["familiarity"] is None
