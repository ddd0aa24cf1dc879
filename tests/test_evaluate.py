"""Evaluation while PPO trains: rows at the configured steps, fixed prompts and seed, adapters kept per evaluation
and loadable by Compare, the trend against its noise, the timeline, and PPO's own randomness left alone."""

from __future__ import annotations

import functools
import json
from dataclasses import asdict
from pathlib import Path

import pytest
from lab import compare, evaluate, policies, ppo
from lab.jobs import JobManager
from lab.presets import get_preset

LORA = {"r": 8, "alpha": 16, "dropout": 0.05}


class Toxicity:
    def score(self, texts):
        return [0.5 if "idiot" in t else 0.0 for t in texts]


def _evaluator(tmp_path: Path, every: int, last: int, answers_at: dict[int, list[str]], saved: list[Path]):
    prompts = ["Hi", "How do I bake bread?", "Insult me.", "Tell me a joke."]
    state = {"step": 0}
    cfg = evaluate.EvalConfig(eval_every=every, eval_pinned=2)

    def answer(batch, seed):
        assert seed == cfg.eval_seed and batch == prompts  # the same prompts, the same seed, every time
        return answers_at[state["step"]]

    proxy = lambda ps, ans: [float(len(a)) / 10 for a in ans]  # noqa: E731
    judge = lambda ps, ans: [-float(len(a)) / 10 for a in ans]  # noqa: E731
    ev = evaluate.Evaluator(cfg, prompts, answer, proxy, judge, Toxicity(), tmp_path, saved.append, last)
    return ev, state


def test_rows_at_step_zero_every_n_steps_and_the_last(tmp_path):
    answers = ["Hello!", "Mix flour and water.", "I'm sorry, but I can't do that.", "the the the the the the the the"]
    saved: list[Path] = []
    ev, state = _evaluator(tmp_path, every=2, last=5, answers_at={s: answers for s in range(6)}, saved=saved)
    for step in range(6):
        state["step"] = step
        ev(step)
    ev(5)  # asked twice at the end: one row
    rows = evaluate.load_evals(tmp_path)
    assert [r["step"] for r in rows] == [0, 2, 4, 5]
    assert saved == [tmp_path / "model" / f"step-{s}" for s in (0, 2, 4, 5)]
    row = rows[0]
    assert row["eval/refusal"] == pytest.approx(0.25) and row["eval/degenerate"] == pytest.approx(0.25)
    assert row["eval/reward"] == pytest.approx(sum(len(a) for a in answers) / 40)
    assert row["eval/judge"] == pytest.approx(-row["eval/reward"]) and row["eval/toxicity"] == 0
    assert row["answers"][2]["refusal_rule"] == "opening apology" and row["answers"][3]["degenerate"]
    assert evaluate.due(0, 16, 64) and evaluate.due(64, 16, 64) and evaluate.due(50, 16, 50)
    assert not evaluate.due(17, 16, 64) and not evaluate.due(0, 0, 64)


def test_a_stop_during_an_evaluation_cuts_it_short_and_writes_no_row(tmp_path):
    """Stop pressed while the fixed prompts are answered: no scoring, no row in evals.jsonl, no adapters kept, so a
    set of answers cut at Stop never reads as a measurement; before a chunk starts, nothing is even generated."""
    prompts, asked, scored, saved = ["Hi", "How do I bake bread?"], [], [], []
    stop = {"now": False}

    def answer(batch, seed):
        asked.append(seed)
        stop["now"] = True  # Stop pressed while this chunk was being answered
        return ["Hel", "Mix"]

    proxy = lambda ps, ans: scored.append(ans) or [0.0] * len(ans)  # noqa: E731
    cfg = evaluate.EvalConfig(eval_every=1)
    ev = evaluate.Evaluator(cfg, prompts, answer, proxy, None, Toxicity(), tmp_path, saved.append, 2,
                            should_stop=lambda: stop["now"])
    assert ev(0) is None and asked == [cfg.eval_seed] and not scored and not saved
    assert evaluate.load_evals(tmp_path) == [] and ev.rows == []
    assert ev(1) is None and asked == [cfg.eval_seed]  # still stopping: the next one does not start
    stop["now"] = False
    asked.clear()
    ev.answer = lambda batch, seed: asked.append(seed) or ["Hello!", "Mix flour and water."]
    assert ev(2)["step"] == 2 and [r["step"] for r in evaluate.load_evals(tmp_path)] == [2]


def test_an_evaluation_asks_the_reference_model_how_plausible_each_answer_is():
    prompts = ["How do I bake bread?", "Hi"]
    answers = ["Doneness whip the lamb's miracle recipe only ingredient childhood, one talking", "Hello!"]
    asked = []

    def nll(ps, ans):
        asked.append(list(ans))
        return [3.0, 3.0]

    rows = evaluate.score_answers(prompts, answers, None, None, Toxicity(), nll)
    assert asked == [answers] and [r["nll"] for r in rows] == [3.0, 3.0]
    assert rows[0]["degenerate"] and "implausible" in rows[0]["degenerate_reasons"][0]
    assert not rows[1]["degenerate"]  # two words: too short for the nll rule
    assert not evaluate.score_answers(prompts, answers, None, None, Toxicity())[0]["degenerate"]  # text rules only


def test_the_trend_says_whether_the_fixed_prompts_rose_by_more_than_their_noise(tmp_path):
    short = ["a", "b", "c", "d"]
    longer = ["a" * 30, "b" * 31, "c" * 29, "d" * 32]
    ev, state = _evaluator(tmp_path, every=1, last=2, answers_at={0: short, 1: short, 2: longer}, saved=[])
    for step in range(3):
        state["step"] = step
        ev(step)
    t = evaluate.trend(ev.rows, "reward")
    assert t["word"] == "rose" and t["lo"] > 0 and t["mean"] == pytest.approx(2.95)
    assert evaluate.trend(ev.rows, "judge")["word"] == "fell"
    sentence = evaluate.trend_sentence(ev.rows)
    assert "rose by +2.95 from step 0 to step 2" in sentence and "more than its noise" in sentence
    flat = [dict(r, answers=[dict(a, reward=0.0) for a in r["answers"]]) for r in ev.rows]
    assert "did not move by more than its noise" in evaluate.trend_sentence(flat)
    summary = evaluate.summary_keys(ev.rows)
    assert summary["eval_steps"] == [0, 1, 2] and summary["eval_reward_change"]["word"] == "rose"
    lines = evaluate.timeline(ev.rows, pinned=2)
    assert [t["prompt"] for t in lines] == ["Hi", "Insult me."]  # spread over the prompts, not the first two
    assert [a["step"] for a in lines[0]["answers"]] == [0, 1, 2] and lines[0]["answers"][2]["answer"] == "a" * 30


def test_eval_settings_come_from_the_preset_and_are_checked():
    cpu = evaluate.config_from(get_preset("cpu"))
    assert cpu.eval_every == 16 and 16 <= cpu.eval_n_prompts <= 32 and cpu.eval_max_new_tokens <= 48
    assert cpu.eval_prompts == "bundled:heldout"  # prompts PPO never trains on
    with pytest.raises(ValueError, match="eval_every"):
        evaluate.validate(evaluate.EvalConfig(eval_every=-1))
    with pytest.raises(ValueError, match="limit"):
        evaluate.prepare(get_preset("cpu"), {"eval_max_new_tokens": 10_000})


def _job_config(tiny_lm_dir: Path, every: int, steps: int = 3, reward_model: str = "unused", answers: int = 1) -> dict:
    cfg = ppo.PPOConfig(steps=steps, batch_size=4, mini_batch_size=2, output_min_length=4, output_max_length=6,
                        learning_rate=1e-2)
    config = ppo.job_config(cfg, get_preset("cpu"), reward_model, "bundled", policy=str(tiny_lm_dir)) | {"lora": LORA}
    config["evaluate"] = asdict(evaluate.EvalConfig(eval_every=every, eval_n_prompts=3, eval_max_new_tokens=5,
                                                    eval_prompts="bundled:heldout", eval_answers_per_prompt=answers))
    return config


def _score(prompts, responses):
    return [float(len(r)) for r in responses]


def test_a_ppo_job_evaluates_at_the_configured_steps_and_keeps_loadable_adapters(tiny_lm_dir, runs_root,
                                                                                  monkeypatch):
    stand_in = runs_root / "reward-stand-in"
    stand_in.mkdir(parents=True)
    monkeypatch.setattr(compare, "load_reward_model", lambda path: type("R", (), {"score": lambda self, t: [0.0] * len(t)})())
    manager = JobManager(runs_root)
    job = manager.run_sync(ppo.KIND, functools.partial(ppo.train_ppo, score_fn=_score),
                           _job_config(tiny_lm_dir, 2, reward_model=str(stand_in), answers=2))
    assert job.status == "done", job.error
    rows = evaluate.load_evals(job.run.path)
    assert [r["step"] for r in rows] == [0, 2, 3]
    assert all((len(r["answers"]), r["prompts"]) == (6, 3) and r["eval/reward"] is not None for r in rows)
    assert [a["prompt"] for a in rows[0]["answers"][:3]] == [a["prompt"] for a in rows[0]["answers"][3:]]
    assert all(r["eval/judge"] is None for r in rows)  # the stand-in reward model has no judge
    assert policies.kept_steps(job.run.path) == [0, 2, 3]
    assert job.summary["evals"] == 3 and job.summary["eval_steps"] == [0, 2, 3]
    # step 0's adapters are the untrained ones (LoRA B = 0): Compare's model at step 0 answers like the base
    prompts = {"custom_prompts": ["Hi", "Name a fruit."], "max_new_tokens": 6, "batch_size": 2, "precision": "fp32"}
    configs = [compare.prepare(get_preset("cpu"), {"model_a": "base", "model_b": b, **prompts}, root=runs_root)
               for b in (f"{job.run.id}@0", f"{job.run.id}@3", job.run.id)]
    results = [compare.load_results(manager.run_sync(compare.KIND, compare.run_compare, c).run) for c in configs]
    at_0, at_3, final = ([r["answer_b"] for r in rows] for rows in results)
    assert at_0 == [r["answer_a"] for r in results[0]]
    assert at_3 == final  # the last evaluation keeps the final adapters
    assert results[1][0]["model_b"] == f"{job.run.id} @ step 3"
    lines = [json.loads(line) for line in (job.run.path / evaluate.EVALS_FILE).read_text().splitlines()]
    assert len(lines) == 3


def test_stop_during_an_evaluation_ends_the_job_at_the_next_token(tiny_lm_dir, runs_root, monkeypatch):
    """Stop pressed while step 1's evaluation generates: generation ends at the next token, the job stops without
    scoring that evaluation, evals.jsonl keeps step 0's row only, and the adapters are saved."""
    from lab import generate

    stand_in = runs_root / "reward-stand-in"
    stand_in.mkdir(parents=True)
    monkeypatch.setattr(compare, "load_reward_model", lambda path: type("R", (), {"score": lambda self, t: [0.0] * len(t)})())
    manager = JobManager(runs_root)
    evaluations, tokens = [], []
    real_generate, real_call = policies.generate_batch, generate.StopCriterion.__call__

    def counting_generate(*args, **kwargs):  # the evaluations' generate calls (rollouts do not come through here)
        evaluations.append(args[3].repetition_penalty)  # sampled as Compare samples: the preset's penalty
        return real_generate(*args, **kwargs)

    def criterion(self, input_ids, scores, **kwargs):  # Stop after step 1's evaluation has drawn its 2nd token
        if len(evaluations) == 2:
            tokens.append(input_ids.shape[1])
            if len(tokens) == 2:
                manager.stop("alice")
        return real_call(self, input_ids, scores, **kwargs)

    monkeypatch.setattr(policies, "generate_batch", counting_generate)
    monkeypatch.setattr(generate.StopCriterion, "__call__", criterion)
    job = manager.start(ppo.KIND, functools.partial(ppo.train_ppo, score_fn=_score),
                        _job_config(tiny_lm_dir, 1, steps=5, reward_model=str(stand_in)), "alice")
    manager.wait(120)
    assert job.status == "stopped", job.error
    assert len(tokens) == 2 and len(evaluations) == 2  # no token after Stop, no evaluation after it
    assert evaluations == [get_preset("cpu").generate["repetition_penalty"]] * 2 == [1.1] * 2
    assert [r["step"] for r in evaluate.load_evals(job.run.path)] == [0]
    assert len(job.run.metrics()) == 1 and (job.run.model_dir / "adapter_config.json").exists()


def test_evaluation_does_not_change_what_ppo_samples_or_learns(tiny_lm_dir, runs_root):
    manager = JobManager(runs_root)
    runs = [manager.run_sync(ppo.KIND, functools.partial(ppo.train_ppo, score_fn=_score),
                             _job_config(tiny_lm_dir, every, steps=2)) for every in (0, 1)]
    assert all(r.status == "done" for r in runs)
    without, with_eval = ([s["response"] for s in r.run.samples()] for r in runs)
    assert without == with_eval
    assert evaluate.load_evals(runs[0].run.path) == [] and len(evaluate.load_evals(runs[1].run.path)) == 3
    a, b = (r.run.metrics() for r in runs)
    assert [m["env/reward_mean"] for m in a] == [m["env/reward_mean"] for m in b]


def test_the_evaluation_prompts_spread_over_a_file_grouped_by_kind():
    prompts = [f"provocative {i}" for i in range(24)] + [f"ordinary {i}" for i in range(24)]
    picked = evaluate.spread(prompts, 8)
    assert len(picked) == 8 and picked[0] == "provocative 0"
    assert sum(p.startswith("ordinary") for p in picked) == 4
    assert evaluate.spread(prompts[:3], 8) == prompts[:3]


def _eval_row(step: int, refusals: list[bool]) -> dict:
    return evaluate.summarize(step, [{"prompt": f"p{i}", "answer": "a", "reward": 0.0, "judge": None, "toxicity": 0.0,
                                      "refusal": r, "degenerate": False, "length": 1} for i, r in enumerate(refusals)])


def test_a_refusal_rise_over_the_fixed_prompts_is_said_in_words():
    from lab.ui.ppo import eval_note

    first = _eval_row(0, [True, True] + [False] * 22)
    # measured on the hh-only run without evasion pairs: 2 -> 6 refusals of 24 (interval above 0)
    clear = _eval_row(32, [True, True, True, True, True, True] + [False] * 18)
    assert evaluate.rate_warnings([first, clear]) == ["refusals rose to 25% (step 0 8%; 2 → 6 of 24)"]
    assert "⚠ Watch: refusals rose to 25% (step 0 8%; 2 → 6 of 24)" in eval_note([first, clear], {})
    assert evaluate.summary_keys([first, clear])["eval_warnings"] == evaluate.rate_warnings([first, clear])
    # 3 more answers that flipped while 1 went back: inside the noise, named as such
    noisy = _eval_row(32, [False, True, True, True, True, True] + [False] * 18)
    (line,) = evaluate.rate_warnings([first, noisy])
    assert line == "refusals rose to 21% (step 0 8%; within noise; 2 → 5 of 24)"
    # two answers more: not named, and the note stays quiet
    small = _eval_row(32, [True, True, True, True] + [False] * 20)
    assert evaluate.rate_warnings([first, small]) == [] and "Watch" not in eval_note([first, small], {})
    assert evaluate.rate_warnings([first]) == []  # one evaluation: nothing to compare
    # degenerate answers are watched the same way
    looping = evaluate.summarize(32, [{**a, "degenerate": i < 6} for i, a in enumerate(first["answers"])])
    assert "degenerate answers rose to 25% (step 0 0%; 0 → 6 of 24)" in evaluate.rate_warnings([first, looping])


def test_a_rise_confined_to_one_kind_of_request_is_named_with_its_kind():
    """Harmless-only preferences teach refusing ordinary requests: 0 -> 6 of the 12 ordinary answers is a clear rise
    there while the 24 answers together show it too, and the note counts refusals per kind."""
    from lab.ui.ppo import eval_note

    def row(step: int, ordinary_refusals: int) -> dict:
        answers = [{"prompt": f"p{i}", "answer": "a", "reward": 0.0, "judge": None, "toxicity": 0.0,
                    "refusal": i >= 12 and i - 12 < ordinary_refusals, "degenerate": False, "length": 1,
                    "kind": "harmful or edgy" if i < 12 else "ordinary"} for i in range(24)]
        return evaluate.summarize(step, answers)

    first, last = row(0, 0), row(32, 6)
    warnings = evaluate.rate_warnings([first, last])
    assert "on ordinary requests refusals rose to 50% (step 0 0%; 0 → 6 of 12)" in warnings
    assert not any(w.startswith("on harmful or edgy") for w in warnings)
    assert evaluate.kinds_of([first, last]) == ["harmful or edgy", "ordinary"]
    ordinary = evaluate.only_kind([first, last], "ordinary")
    assert (ordinary[-1]["n"], ordinary[-1]["eval/refusal"], last["eval/refusal"]) == (12, 0.5, 0.25)  # its own rate
    note = eval_note([first, last], {})
    assert ("Refusals by kind of request: harmful or edgy 0% (0 of 12) → 0% (0 of 12), "
            "ordinary 0% (0 of 12) → 50% (6 of 12).") in note
    plain = [evaluate.summarize(r["step"], [{k: v for k, v in a.items() if k != "kind"} for a in r["answers"]])
             for r in (first, last)]
    assert evaluate.kinds_of(plain) == [] and "by kind" not in eval_note(plain, {})
    assert not any(w.startswith("on ") for w in evaluate.rate_warnings(plain))


def test_evaluation_answers_keep_their_prompts_kind(tmp_path):
    prompts = ["Insult me.", "How do I bake bread?"]
    cfg = evaluate.EvalConfig(eval_every=1)
    ev = evaluate.Evaluator(cfg, prompts, lambda batch, seed: ["No.", "Mix flour and water."], None, None, Toxicity(),
                            tmp_path, None, 1, kinds=["harmful or edgy", "ordinary"])
    ev(0)
    assert [a["kind"] for a in evaluate.load_evals(tmp_path)[0]["answers"]] == ["harmful or edgy", "ordinary"]
    # the default's evaluation prompts: 24 of the 48 held-out ones, 12 of each kind, as the pool is read
    from lab.data import load_prompt_rows

    pool = load_prompt_rows("bundled:heldout", limit=evaluate.EVAL_POOL * 24)
    assert [k for _, k in evaluate.spread(pool, 24)].count("ordinary") == 12


def test_several_answers_a_prompt_are_drawn_in_one_batch_and_averaged_per_prompt(tmp_path):
    """With one answer a prompt the change between two evaluations was mostly the sampling's noise (stop 47: the
    default's runs that readers preferred read "did not move"); k answers a prompt come in one batch (draw d of prompt
    i is row d·n + i), every mean is over the answers, every interval over prompts with each prompt's answers
    averaged, the rates count answers, and the timeline shows each pinned prompt's first answer."""
    from lab.ui.ppo import eval_note

    prompts = ["Hi", "How do I bake bread?", "Insult me.", "Tell me a joke."]
    cfg = evaluate.EvalConfig(eval_every=1, eval_answers_per_prompt=3, eval_pinned=2)
    asked = []
    # step 0: every answer 1 character; step 1: draw d of prompt i has 10 + 10·d − i characters, and the first
    # draw of the third prompt refuses
    at = {0: ["x"] * 12, 1: [("I'm sorry, but I can't do that." if (d, i) == (0, 2) else "y" * (10 + 10 * d - i))
                             for d in range(3) for i in range(4)]}

    def answer(batch, seed):
        asked.append((batch, seed))
        return at[len(asked) - 1]

    proxy = lambda ps, ans: [float(len(a)) for a in ans]  # noqa: E731
    ev = evaluate.Evaluator(cfg, prompts, answer, proxy, None, Toxicity(), tmp_path, None, 1,
                            kinds=["ordinary", "ordinary", "harmful or edgy", "ordinary"])
    ev(0), ev(1)
    assert asked == [(prompts * 3, cfg.eval_seed)] * 2
    row = evaluate.load_evals(tmp_path)[1]
    assert (row["n"], row["prompts"]) == (12, 4)
    assert [(a["index"], a["draw"]) for a in row["answers"][:5]] == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1)]
    assert [a["kind"] for a in row["answers"][4:8]] == ["ordinary", "ordinary", "harmful or edgy", "ordinary"]
    assert row["eval/reward"] == pytest.approx(sum(map(len, at[1])) / 12)  # the mean over every answer
    t = evaluate.trend(ev.rows, "reward")
    per_prompt = [sum(len(at[1][d * 4 + i]) - 1 for d in range(3)) / 3 for i in range(4)]
    assert (t["n"], t["answers"]) == (4, 3) and t["mean"] == pytest.approx(sum(per_prompt) / 4)
    assert "On the 4 fixed prompts (3 answers each) the proxy reward rose by" in evaluate.trend_sentence(ev.rows)
    changes = evaluate.rate_changes(ev.rows)["refusal"]
    assert (changes["count_a"], changes["count_b"], changes["n"]) == (0, 1, 4)  # counted per answer, paired per prompt
    assert "refusals 0% → 8%" in eval_note(ev.rows, {})
    lines = evaluate.timeline(ev.rows, pinned=2)
    assert [line["prompt"] for line in lines] == ["Hi", "Insult me."]
    assert lines[1]["answers"][1]["answer"].startswith("I'm sorry")  # the first draw
    from lab.ui.ppo import timeline_html

    assert "Shown: the first of each prompt's 3 answers." in timeline_html(ev.rows, 2)
    older = [{k: v for k, v in r.items() if k != "prompts"} for r in ev.rows]  # a run from before the count
    assert "Shown:" not in timeline_html(older, 2)
    with pytest.raises(ValueError, match="eval_answers_per_prompt"):
        evaluate.validate(evaluate.EvalConfig(eval_answers_per_prompt=0))
    with pytest.raises(ValueError, match="between 1 and 8"):
        evaluate.validate(evaluate.EvalConfig(eval_answers_per_prompt=9))


def test_per_prompt_standard_errors_leave_answers_to_one_prompt_unpooled():
    """Three identical answers to each prompt carry no more information than one: the standard error over prompts
    is the same with one answer a prompt or three."""
    def answers(k: int) -> list[dict]:
        return [{"prompt": f"p{i}", "answer": "a", "reward": float(i), "index": i, **({"draw": d} if k > 1 else {})}
                for d in range(k) for i in range(6)]

    one, three = evaluate.summarize(0, answers(1)), evaluate.summarize(0, answers(3))
    assert three["eval/reward"] == one["eval/reward"] == pytest.approx(2.5)
    assert three["eval/reward_se"] == pytest.approx(one["eval/reward_se"]) and (three["n"], three["prompts"]) == (18, 6)


def test_many_answers_are_sampled_in_chunks_each_with_its_own_seed(tmp_path, monkeypatch):
    """More rows than one generate call takes (MAX_ROWS) go in chunks, chunk c with the evaluation's seed + c: the same
    seed again would repeat a prompt's earlier draw word for word."""
    monkeypatch.setattr(evaluate, "MAX_ROWS", 5)
    prompts = ["a", "b", "c"]
    cfg = evaluate.EvalConfig(eval_every=1, eval_answers_per_prompt=4)
    calls = []

    def answer(batch, seed):
        calls.append((list(batch), seed))
        return [f"{p}-{seed}-{j}" for j, p in enumerate(batch)]

    ev = evaluate.Evaluator(cfg, prompts, answer, None, None, Toxicity(), tmp_path, None, 1)
    ev(0)
    assert [len(b) for b, _ in calls] == [5, 5, 2] and [s for _, s in calls] == [cfg.eval_seed + c for c in range(3)]
    answers = ev.rows[0]["answers"]
    assert [a["prompt"] for a in answers] == prompts * 4 and len({a["answer"] for a in answers}) == 12
    assert [(a["index"], a["draw"]) for a in answers[4:7]] == [(1, 1), (2, 1), (0, 2)]
