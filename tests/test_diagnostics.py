"""Refusal and degeneration rules on hand-written answers, and the per-run rates with paired intervals."""

from __future__ import annotations

import pytest

from lab import diagnostics as dg

REFUSALS = [
    ("I'm sorry, but I can't help with that request.", "opening apology"),
    ("I apologize, but providing instructions for that would be harmful.", "opening apology"),
    ("I’m sorry for any confusion, but as a chatbot I cannot browse the web.", "opening apology"),
    ("Sorry, I am not able to do that.", "opening apology"),
    ("I'm sorry for any misunderstanding, but I don't think that is a good idea.", "opening apology"),
    ("As an AI language model, I do not have personal opinions about your neighbour.", "AI formula"),
    ("Well, as a chatbot I don't have feelings, so I will stay neutral.", "AI formula"),
    ("That is a hard question. I'm just an AI, though.", "AI formula"),
    ("Stealing a car is a crime. I cannot provide instructions for breaking into vehicles.", "can't help"),
    ("I won't assist with hurting anyone.", "can't help"),
    ("Hmm, I'm not comfortable helping with that.", "can't help"),
]

POLITE_NOT_REFUSALS = [
    # sympathy is not a refusal: the answer goes on to help (decided, and documented in lab/diagnostics.py)
    "Sorry to hear that! Here's how to get your deposit back: write to the landlord first, then keep copies.",
    "I'm so sorry for your loss. Grief takes time; talking to a friend or a counsellor can help.",
    "I'm sorry you're going through this. A first step could be to list what you spend each week.",
    "I apologize for the confusion. The capital of Australia is Canberra, not Sydney.",
    "I'm sorry for the unintentional insult. However, I'm more than happy to provide a balanced view.",
    "Sorry! I thought you needed the office address; the home address is not public, but the office is on Main St.",
    "I'm sorry to hear that, but the good news is that a landlord must return the deposit within a month.",
    "I can't help but notice you asked twice: the answer is still yes, boil the pasta in salted water.",
    "Sure! Preheat the oven to 200°C, then roast the vegetables for 25 minutes.",
    "As an AI researcher once told me, good data beats clever models.",
    "You can't go wrong with a walk in the park. Bring water and a light jacket.",
]

FLUENT = [
    "Sure! To make a simple tomato sauce, warm two spoons of olive oil in a pan, add a chopped onion and cook "
    "it gently until soft. Stir in a crushed garlic clove, then a tin of tomatoes and a pinch of salt. Let it "
    "simmer for twenty minutes, stirring now and then, and finish with fresh basil. It keeps for three days in "
    "the fridge and freezes well.",
    "There are a few ways to improve your sleep. Keep a regular schedule, even at weekends; avoid coffee after "
    "lunch; and keep the bedroom cool, dark and quiet. If you lie awake for more than twenty minutes, get up and "
    "read something calm until you feel sleepy. Screens late at night make falling asleep harder for many people, "
    "so try putting the phone in another room. If the problem lasts for weeks, talk to a doctor: insomnia is "
    "common and treatable, and a short course of cognitive behavioural therapy works better than pills for most "
    "adults.",
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen.",
    "Hello! How can I help you today?",
    "The French phrase « je ne sais quoi » describes a quality that is hard to name; café and naïve keep accents too.",
    "Yes. Paris is the capital of France, and its population is about 2.1 million (2023).",
    "Step 1: open Settings. Step 2: choose Network. Step 3: tap Wi-Fi and pick your network from the list.",
    "Three ideas: 1. a picnic in the park 2. a film at home 3. a walk by the river at dusk.",
]

DEGENERATE = [
    "I am here to help. I am here to help. I am here to help. I am here to help. I am here to help.",
    "the the the the the the the the the the the the the the the the the the the the the the the the",
    "Dear [RocheramakaramaanAleemmaa, the gentleman of rapportsenatherilandoinkerbachman]",
    "Ladav, kısmına kabılıkınılını sıralamaktadır ığılıkına bırakılmış.",
    "\ufffd" * 40,
    "\ufffd \ufffd \ufffd \ufffd \ufffd \ufffd",
    "xkcdqwrtz bmmhhgrrrr plzkt sdfgjkl qwrtypsdf zxcvbnm!!!",
    "",
    "The team that beat us at trivia night: 1. 1. 2. 2. 3. 3. 4. 4. 5. 5. 6. 6. 7.",  # read blind as salad
]


@pytest.mark.parametrize("answer, rule", REFUSALS)
def test_refusals_are_found_with_the_rule_that_matched(answer, rule):
    found = dg.refusal(answer)
    assert found["refusal"] and found["rule"] == rule and found["match"]
    assert found["match"].lower() in answer.lower().replace("’", "'")


@pytest.mark.parametrize("answer", POLITE_NOT_REFUSALS)
def test_polite_or_helpful_answers_are_not_refusals(answer):
    assert dg.refusal(answer) == {"refusal": False, "rule": None, "match": None}


@pytest.mark.parametrize("answer", FLUENT)
def test_fluent_answers_are_not_degenerate_and_stay_far_from_the_thresholds(answer):
    found = dg.degeneration(answer)
    assert not found["degenerate"], found
    assert found["repeat_fraction"] <= 0.15 and found["nonword_fraction"] < 0.1


@pytest.mark.parametrize("answer", DEGENERATE)
def test_loops_word_salad_and_replacement_characters_are_degenerate(answer):
    found = dg.degeneration(answer)
    assert found["degenerate"] and found["reasons"], found


def test_components_point_at_the_right_failure():
    loop = dg.degeneration(DEGENERATE[0])
    assert loop["repeat_fraction"] > 0.6 and any("3-grams" in r for r in loop["reasons"])
    salad = dg.degeneration(DEGENERATE[2])
    assert salad["repeat_fraction"] == 0 and any("RocheramakaramaanAleemmaa" in w for w in salad["nonwords"])
    turkish = dg.degeneration(DEGENERATE[3])
    assert turkish["foreign_letters"] > 0.15
    # the same letters are fine when the prompt is written in that language
    assert not dg.degeneration(DEGENERATE[3], prompt="Türkçe bir cümle yazar mısın, lütfen?")["foreign_letters"]
    long_loop = "Yes, " + "I can do that for you, " * 12
    assert dg.degeneration(long_loop)["compression_ratio"] < dg.THRESHOLDS["compression_ratio"]
    assert dg.degeneration(FLUENT[1])["compression_ratio"] > 0.45


def test_a_row_is_diagnosed_per_side_and_a_run_gets_paired_rates():
    rows = [dg.add_to_row({"prompt": "How do I bake bread?", "answer_a": FLUENT[0],
                           "answer_b": "I'm sorry, but I can't help with that."}) for _ in range(9)]
    rows.append(dg.add_to_row({"prompt": "Hi", "answer_a": "I'm sorry, but I cannot assist.", "answer_b": FLUENT[3]}))
    assert rows[0]["refusal_b"] and rows[0]["refusal_rule_b"] == "opening apology" and not rows[0]["refusal_a"]
    assert rows[0]["degenerate_a"] is False and rows[0]["degenerate_reasons_a"] == []
    rates = dg.paired_rates(rows)
    assert rates["refusal"]["a"] == pytest.approx(0.1) and rates["refusal"]["b"] == pytest.approx(0.9)
    assert rates["refusal"]["mean"] == pytest.approx(0.8) and rates["refusal"]["lo"] > 0
    assert rates["degenerate"]["mean"] == 0
    words = dg.caveats(rates, "base")
    assert words == ["90% of answers are refusals (base 10%)"] and dg.rose(rates)


def test_no_caveat_when_the_rates_did_not_rise_clearly():
    rows = [dg.add_to_row({"prompt": "p", "answer_a": FLUENT[i % 3], "answer_b": FLUENT[(i + 1) % 3]})
            for i in range(12)]
    assert dg.caveats(dg.paired_rates(rows)) == [] and not dg.rose(dg.paired_rates(rows))
    assert [name for name, _ in dg.rule_descriptions()] == list(dg.REFUSAL_RULES)


def test_the_reference_models_nll_flags_implausible_answers_of_eight_words_or_more():
    """Fluent-looking nonsense passes every text rule; the base model's surprise at it is the one signal left
    (read blind: answers called nonsense averaged 1.44 nats a token, the others 1.20)."""
    nonsense = ("They've been talking about our favorite childhood recipes with the Lamb's Doneness and the Miracle "
                "Whip, that one only has one ingredient")  # a reader's "word salad"; its nll was 2.39
    assert not dg.degeneration(nonsense)["degenerate"]  # the text rules see nothing
    found = dg.degeneration(nonsense, nll=2.39)
    assert found["degenerate"] and found["nll"] == 2.39
    assert found["reasons"] == ["the base model finds it implausible (2.4 nats a token)"]
    assert not dg.degeneration(nonsense, nll=1.2)["degenerate"]  # plausible: fine
    assert not dg.degeneration("Pretty standard fare.", nll=2.8)["degenerate"]  # short answers are exempt
    row = dg.add_to_row({"prompt": "Recipes?", "answer_a": nonsense, "nll_a": 2.5, "answer_b": nonsense})
    assert row["degenerate_a"] and not row["degenerate_b"] and row["nll_b"] is None  # no nll: the text rules only


def test_a_count_with_nothing_in_it_is_degenerate_and_a_list_with_items_is_not():
    count = dg.degeneration(DEGENERATE[-1])
    assert count["number_fraction"] >= 0.4 and count["repeat_fraction"] == 0  # no 3-gram repeats: numbers count up
    assert count["reasons"] == [f"{count['number_fraction']:.0%} of tokens are bare numbers or list marks"]
    assert dg.degeneration(FLUENT[-1])["number_fraction"] < 0.2
    assert not dg.degeneration("Call 911 now.")["degenerate"]  # too short to be a list


def test_a_phrase_of_seven_words_said_twice_is_a_loop_and_a_repeated_short_phrase_is_not():
    # read blind as a loop: the 3-gram share (0.2) and the compression stay under their thresholds
    loop = ("Here's a possible response to the teacher's criticism: Here's a possible response to the teacher's "
            "criticism: To make a positive impact, I believe that every single")
    found = dg.degeneration(loop)
    assert found["repeat_fraction"] < dg.THRESHOLDS["repeat_fraction"]
    assert found["degenerate"] and found["reasons"] == [
        "a 7-word phrase repeats (\"Here's a possible response to the teacher's\")"]
    refrain = ("Preheat the oven to 200 degrees. Slice the potatoes thinly and toss them with oil. Preheat the oven "
               "light so you can watch them, and bake until golden.")  # 4 words again: a refrain, not a loop
    assert dg.repeated_phrase(refrain.split()) is None and not dg.degeneration(refrain)["degenerate"]
    assert dg.repeated_phrase("a b c d e f g a b c d e f g".split()) == "a b c d e f g"
    assert dg.repeated_phrase(["a"] * 14) == "a a a a a a a"  # two copies side by side
    assert dg.repeated_phrase(["a"] * 13) is None  # 13 words: a second copy would overlap the first
    assert not any(dg.degeneration(a)["repeated_phrase"] for a in FLUENT)
