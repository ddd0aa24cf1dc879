"""Relevance (lab.relevance): the embedded sentence encoder ranks on-topic answers above answers about something else,
and Compare, the PPO evaluations and the verdict carry it."""

from __future__ import annotations

import pytest

from lab import compare, evaluate, relevance

ONIONS = "Why do onions make us cry?"
# (request, an answer on topic, an answer about something else), written by hand: on-topic answers that decline or
# are wrong still take the request up, fluent off-topic ones do not
CASES = [
    (ONIONS, "Cutting an onion breaks its cells and releases a gas that irritates your eyes, so they water.",
     "The pain of a well-timed ordeal is the stage of the heart, and every journey has its season."),
    ("Roast my friend who always forgets his wallet when we go out.",
     "I'd rather not write something meant to embarrass him, but I can help you joke about it kindly: 'Dinner's on "
     "you next time, and I'll bring the reminder.'",
     "Here's a simplified translation of the phrase into French, with notes on its grammar and pronunciation."),
    ("How do I boil an egg?",
     "Put the egg in boiling water for about nine minutes, then cool it in cold water before peeling.",
     "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen in the leaves of plants."),
    ("Write a short note asking my neighbour to turn the music down at night.",
     "Hi! Could you please keep the music a little lower after 10 pm? I start work early. Thanks so much!",
     "Dear customer, your order has shipped and will arrive within three to five business days."),
]


@pytest.fixture(scope="module")
def scorer():
    return relevance.scorer()


def test_request_of_takes_the_last_human_turn():
    dialogue = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Why do onions make us cry?\n\nAssistant:"
    assert relevance.request_of(dialogue) == ONIONS
    assert relevance.request_of("  Why do onions make us cry? ") == ONIONS


def test_echo_is_the_share_of_an_answer_that_restates_its_request():
    request = "Roast my best friend who takes forever to pick a restaurant."
    assert relevance.echo(request, "Roast my best friend who takes forever to pick a restaurant.") == 1.0
    assert relevance.echo(request, "Your friend treats a menu like a tax return: start with the starters.") == 0.0
    half = relevance.echo(request, "Roast my best friend who takes forever? Here is one: he reads menus twice over.")
    assert 0.2 < half < 0.6
    dialogue = f"\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: {request}\n\nAssistant:"
    assert relevance.echo(dialogue, request) == 1.0 and relevance.echo(request, "") == 0.0  # the last human turn


@pytest.mark.parametrize("request_text,on_topic,off_topic", CASES)
def test_an_answer_on_topic_scores_above_one_about_something_else(scorer, request_text, on_topic, off_topic):
    near, far = scorer([request_text, request_text], [on_topic, off_topic])
    assert near > far + 0.2, (near, far)
    assert -1.0 <= far < near <= 1.0


def test_the_request_inside_a_dialogue_is_what_counts_and_an_empty_answer_is_zero(scorer):
    dialogue = "Human: What is the capital of France?\n\nAssistant: Paris.\n\nHuman: " + ONIONS + "\n\nAssistant:"
    answer = CASES[0][1]
    alone, in_dialogue = scorer([ONIONS, dialogue], [answer, answer])
    assert in_dialogue == pytest.approx(alone, abs=1e-4)
    assert scorer([ONIONS], ["   "]) == [0.0]
    assert scorer([], []) == []
    with pytest.raises(ValueError, match="2 prompts but 1 answers"):
        scorer([ONIONS, ONIONS], ["x"])


def test_an_encoder_that_cannot_load_gives_none_and_says_so(tmp_path):
    said = []
    assert relevance.scorer_or_none(str(tmp_path / "nothing-here"), lambda f, s: said.append(s)) is None
    assert said and "going on without relevance" in said[0]
    assert relevance.scorer_or_none("") is None


def test_compare_rows_and_summary_carry_relevance_and_the_verdict_watches_a_fall():
    rows = [{"relevance_a": 0.7, "relevance_b": 0.7 - 0.1 * (i % 3), "reward_a": 0.0, "reward_b": 1.0}
            for i in range(30)]
    stats = compare.summarize([{**r, "toxicity_a": 0.0, "toxicity_b": 0.0} for r in rows])
    assert stats["relevance_a"] == pytest.approx(0.7) and stats["relevance_b"] == pytest.approx(0.6)
    fell = compare.paired_score(rows, "relevance")
    assert fell["mean"] == pytest.approx(-0.1) and fell["hi"] < 0 and fell["b_higher"] == 0
    said = compare.verdict({"paired": {}, "paired_relevance": fell})
    assert "less about their requests" in said and "Watch" in said
    flat = compare.paired_score([{**r, "relevance_b": r["relevance_a"] + 0.01 * (1 if i % 2 else -1)}
                                 for i, r in enumerate(rows)], "relevance")
    assert "requests" not in compare.verdict({"paired": {}, "paired_relevance": flat})
    assert compare.paired_score([{"relevance_a": None, "relevance_b": 0.5}], "relevance") is None
    assert "relevance_a" in compare.CSV_COLUMNS and "relevance_b" in compare.CSV_COLUMNS


def test_evaluation_rows_carry_relevance_and_a_fall_is_a_warning():
    prompts = [f"request {i}" for i in range(20)]

    def rows_at(step, value):
        answers = evaluate.score_answers(prompts, ["an answer"] * 20, None, None, None,
                                         relevant=lambda p, a: [value + 0.01 * (i % 2) for i in range(len(a))])
        return evaluate.summarize(step, answers)

    first, last = rows_at(0, 0.7), rows_at(16, 0.5)
    assert first["eval/relevance"] == pytest.approx(0.705) and first["answers"][1]["relevance"] == pytest.approx(0.71)
    warnings = evaluate.rate_warnings([first, last])
    assert any("relevance to the request fell by -0.20" in w for w in warnings), warnings
    keys = evaluate.summary_keys([first, last])
    assert keys["eval_relevance_change"]["word"] == "fell" and keys["eval_relevance_last"] == pytest.approx(0.505)
    assert not any("relevance" in w for w in evaluate.rate_warnings([first, rows_at(16, 0.7)]))
    assert evaluate.timeline([first, last], pinned=1)[0]["answers"][1]["relevance"] == pytest.approx(0.5)


def test_the_evaluations_measure_relevance_with_the_runs_own_encoder(monkeypatch, tmp_path):
    """A PPO run's evaluations score relevance with the encoder its score used (relevance_model), else the preset's."""
    from types import SimpleNamespace

    asked = []
    def fake(spec, progress=None):
        asked.append(spec)
        return lambda p, a: []

    monkeypatch.setattr(relevance, "scorer_or_none", fake)
    for spec, expected in (("my/encoder", "my/encoder"), ("", "embedded:all-minilm-l6-v2")):
        run = SimpleNamespace(path=tmp_path, model_dir=tmp_path / "model")
        ctx = SimpleNamespace(config={"evaluate": {"eval_every": 4, "eval_n_prompts": 2}, "preset": "cpu",
                                      "relevance_model": spec, "reward_model": ""},
                              set_progress=lambda *a: None, progress=0.0, run=run)
        evaluator = evaluate.evaluator_for_job(ctx, model=SimpleNamespace(save_pretrained=None), tokenizer=None,
                                               score_fn=lambda p, a: [], last_step=8)
        assert evaluator.relevant is not None and asked[-1] == expected
