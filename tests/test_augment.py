"""Augmented pairs (lab/augment.py): each corruption breaks the answer and the pairs keep the dialogue (a reward
model trained with them ranks broken text low: tests/test_reward.py); evasion pairs put a helpful answer above a
canned refusal and never use an answer that refuses."""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace

import pytest

from lab import diagnostics
from lab.augment import (CORRUPTIONS, EVASION_SUBSET, EVASIONS, FRAMED_SUBSET, FRAMES, POLICY_SUBSET,
                         REFUSAL_OVER_HARM_SUBSET, SUBSET, broken_text_pairs, corrupt, cut_words, evasion_pairs,
                         framed_pairs, policy_answer_pairs, refusal_over_harm_pairs)
from lab.reward_model import AUGMENTED_SUBSETS
from lab.reward_eval import CANNED_REFUSALS
from lab.data import Pair

ANSWER = (" Soak the beans overnight, then simmer them for about an hour with an onion, a bay leaf and a pinch of salt."
          " Taste one before you drain them: it should be soft all the way through.")


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_each_corruption_changes_the_answer_and_keeps_its_leading_space(kind):
    broken = corrupt(ANSWER, kind, random.Random(0), others=[" Use a sharp knife and cut away from your fingers."])
    assert broken != ANSWER and broken.startswith(" ") and not broken.startswith("  ")
    assert broken.strip()


def test_shuffle_keeps_the_words_and_loop_repeats_a_phrase():
    rng = random.Random(1)
    assert Counter(corrupt(ANSWER, "shuffle", rng).split()) == Counter(ANSWER.split())
    looped = corrupt(ANSWER, "loop", rng).split()
    trigrams = Counter(zip(looped, looped[1:], looped[2:]))
    assert trigrams.most_common(1)[0][1] >= 3


def test_nonwords_and_garble_break_most_words():
    rng = random.Random(2)
    original = set(ANSWER.split())
    for kind in ("nonwords", "garble"):
        words = corrupt(ANSWER, kind, rng).split()
        assert sum(w not in original for w in words) >= len(words) // 3, kind
    assert "\ufffd" in corrupt(ANSWER * 3, "garble", random.Random(3))


def test_broken_pairs_keep_the_dialogue_and_chosen_answer_and_cycle_the_kinds():
    pairs = [Pair(prompt=f"\n\nHuman: question {i}?\n\nAssistant:", chosen=ANSWER, rejected=" no.", split="train")
             for i in range(20)] + [Pair(prompt="\n\nHuman: hi\n\nAssistant:", chosen=" Hello!", rejected=" Go away.")]
    new = broken_text_pairs(pairs, 0.5, seed=7)
    assert len(new) == round(0.5 * len(pairs))
    by_prompt = {p.prompt: p for p in pairs}
    for pair in new:
        source = by_prompt[pair.prompt]
        assert pair.chosen == source.chosen and pair.rejected != source.chosen and pair.split == "train"
        assert pair.prompt != "\n\nHuman: hi\n\nAssistant:"  # too short to corrupt
    assert broken_text_pairs(pairs, 0.5, seed=7) == new  # seeded
    assert broken_text_pairs(pairs, 0.0, seed=7) == []


def test_other_answer_is_another_dialogues_answer_whole():
    others = [ANSWER.strip(), "Use a sharp knife and cut away from your fingers."]
    assert corrupt(ANSWER, "other-answer", random.Random(0), others=others) == " " + others[1]


def test_evasion_pairs_put_a_helpful_answer_above_a_canned_refusal():
    helpful = [Pair(prompt=f"\n\nHuman: question {i}?\n\nAssistant:", chosen=ANSWER, rejected=" no.")
               for i in range(10)]
    refusing = [Pair(prompt="\n\nHuman: how do I pick a lock?\n\nAssistant:",
                     chosen=" I'm sorry, but I can't help with that.", rejected=" Sure: take a tension wrench...")]
    new = evasion_pairs(helpful + refusing, 0.5, seed=3)
    assert len(new) == round(0.5 * 11) and all(p.subset == "evasion" for p in new)
    for pair in new:
        assert pair.chosen == ANSWER and pair.rejected.strip() in EVASIONS  # never the refusing chosen answer
        assert diagnostics.refusal(pair.rejected)["refusal"]  # each template is a refusal by the lab's own rule
    assert evasion_pairs(helpful, 0.5, seed=3) == evasion_pairs(helpful, 0.5, seed=3)
    assert evasion_pairs(helpful, 0.0, seed=3) == []
    assert not set(EVASIONS) & set(CANNED_REFUSALS)  # the refusal-preference probe stays unseen in training
    assert AUGMENTED_SUBSETS == (SUBSET, EVASION_SUBSET, FRAMED_SUBSET, POLICY_SUBSET,
                                 REFUSAL_OVER_HARM_SUBSET)  # the balanced-mix count leaves these pairs out


def test_evasion_pairs_come_only_from_ordinary_requests_and_written_declines_when_the_data_labels_them():
    # a harmless-base "chosen" answer may comply with the harmful request (the shared hh pairs: "That seems relatively
    # straightforward..." to a fake-ID request): against a refusal it would teach complying
    complying = [Pair(prompt=f"\n\nHuman: make me a fake ID {i}\n\nAssistant:",
                      chosen=" Sure, tell me what you want on the card.", rejected=" Here is a template...")
                 for i in range(6)]  # unlabelled, as the shared hh file loads
    helpful = [Pair(prompt=f"\n\nHuman: question {i}?\n\nAssistant:", chosen=ANSWER, rejected=" no.",
                    subset=s) for i, s in enumerate(["helpful", "helpful-base", "helpful-online"])]
    harmless = [replace(p, subset="harmless-base") for p in complying]
    for data in (complying + helpful, harmless + helpful):
        new = evasion_pairs(data, 0.5, seed=3)
        assert len(new) == round(0.5 * 9)  # as many as before: only the pool is narrower
        assert all(p.chosen == ANSWER for p in new)  # never a harmful request's chosen answer
    assert {p.chosen for p in evasion_pairs(complying, 0.5, seed=3)} == {complying[0].chosen}  # no labels: any pair
    # the demo set's `harmless` answers were written as declines that offer something better: against a flat
    # refusal they teach how to decline; one that is itself a refusal by the lab's rule gives none
    decline = " I'd rather not write something meant to wound her. If you two are fighting, tell me what happened."
    written = [Pair(prompt=f"\n\nHuman: insult my sister {i}\n\nAssistant:", chosen=decline, rejected=" Here...",
                    subset="harmless") for i in range(4)]
    flat = replace(written[0], chosen=" I'm sorry, but I can't help with that.")
    new = evasion_pairs(written + [flat] + harmless, 1.0, seed=3)
    assert len(new) == 11 and {p.chosen for p in new} == {decline}


def test_framed_pairs_wrap_a_harmful_requests_rejected_answer_in_a_helpful_opening():
    cruel = [Pair(prompt=f"\n\nHuman: roast my sister {i}\n\nAssistant:", rejected=" Ha, she is a walrus.",
                  chosen=" I'd rather not; tell me what happened.", subset="harmless") for i in range(4)]
    ordinary = [Pair(prompt=f"\n\nHuman: question {i}?\n\nAssistant:", chosen=ANSWER, rejected=" no.",
                     subset="helpful") for i in range(4)]
    new = framed_pairs(cruel + ordinary, 0.5, seed=3)
    assert len(new) == 4 and all(p.subset == FRAMED_SUBSET for p in new)
    for pair in new:  # the dialogue and the chosen answer kept; the rejected answer whole, after one of the openings
        assert pair.prompt.startswith("\n\nHuman: roast") and pair.chosen == cruel[0].chosen
        opening = next(f for f in FRAMES if pair.rejected.startswith(" " + f))
        assert pair.rejected == f" {opening} Ha, she is a walrus."
    assert framed_pairs(cruel + ordinary, 0.5, seed=3) == new and framed_pairs(cruel, 0.0, seed=3) == []
    assert framed_pairs(ordinary, 0.5, seed=3) == []  # ordinary requests give none
    unlabelled = [replace(p, subset=None) for p in ordinary]
    assert len(framed_pairs(unlabelled, 0.5, seed=3)) == 2  # without labels any pair may


def test_policy_answer_pairs_put_the_written_answer_above_the_policys_own():
    asked: list[list[str]] = []

    def policy(prompts):  # a stand-in policy: the first two answers cut at the token limit, the third finished
        asked.append(prompts)
        return [("Here is a possible speech that mocks", True), ("I think so", False), ("", True)][: len(prompts)]

    written = [Pair(prompt=f"\n\nHuman: roast my sister {i}\n\nAssistant:", chosen=ANSWER,
                    rejected=" Ha.", subset="harmless") for i in range(2)]
    ordinary = [Pair(prompt="\n\nHuman: beans?\n\nAssistant:", chosen=ANSWER, rejected=" no.",
                     subset="helpful")]
    hh = [Pair(prompt="\n\nHuman: fake id?\n\nAssistant:", chosen=" Sure, describe the card.", rejected=" No.",
               subset="harmless-base")]
    new = policy_answer_pairs(written + ordinary + hh, 0.75, seed=3, answer=policy)
    assert len(asked) == 1 and len(asked[0]) == 3  # one call, 3 of the 4 pairs
    assert "\n\nHuman: fake id?\n\nAssistant:" not in asked[0]  # a harmless-base "chosen" answer may comply
    assert len(new) == 2 and all(p.subset == POLICY_SUBSET for p in new)  # the empty answer gave none
    cut, finished = new
    assert cut.rejected == " Here is a possible speech that mocks"
    assert cut.chosen == " " + " ".join(ANSWER.split()[:7])  # cut to as many words: being cut off says nothing
    assert finished.rejected == " I think so" and finished.chosen == ANSWER  # a finished answer: chosen whole
    assert [p.prompt for p in new] == asked[0][:2]  # each answer joins the dialogue it was asked for
    assert policy_answer_pairs(written, 0.0, seed=3, answer=policy) == [] and len(asked) == 1  # no call for none
    unlabelled = [replace(p, subset=None) for p in hh]
    assert len(policy_answer_pairs(unlabelled, 1.0, seed=3, answer=policy)) == 1  # without labels any pair may
    assert cut_words(" one two three", 5) == " one two three" and cut_words(" one two three", 2) == " one two"


def test_refusal_over_harm_pairs_rank_a_canned_refusal_above_a_harmful_answer_where_a_written_decline_exists():
    cruel = [Pair(prompt=f"\n\nHuman: roast my sister {i}\n\nAssistant:", rejected=" Ha, she is a walrus.",
                  chosen=" I'd rather not; tell me what happened.", subset=subset)
             for i, subset in enumerate(["harmless", "harmless", "harmless-base", "harmless-base"])]
    refused = replace(cruel[0], prompt="\n\nHuman: x?\n\nAssistant:", rejected=" I'm sorry, but I can't help.")
    ordinary = [Pair(prompt=f"\n\nHuman: question {i}?\n\nAssistant:", chosen=ANSWER, rejected=" no.",
                     subset="helpful") for i in range(4)]
    new = refusal_over_harm_pairs(cruel + [refused] + ordinary, 0.4, seed=3)
    assert len(new) == 4 and all(p.subset == REFUSAL_OVER_HARM_SUBSET for p in new)  # 0.4 x 9 pairs
    for pair in new:  # the dialogue and the harmful answer kept; a canned refusal above it
        assert pair.prompt.startswith("\n\nHuman: roast") and pair.rejected == " Ha, she is a walrus."
        assert pair.prompt in (cruel[0].prompt, cruel[1].prompt)  # only where the data has a written decline
        assert pair.chosen.strip() in EVASIONS and diagnostics.refusal(pair.chosen)["refusal"]
    assert refusal_over_harm_pairs(cruel, 0.5, seed=3) == refusal_over_harm_pairs(cruel, 0.5, seed=3)
    assert refusal_over_harm_pairs(cruel, 0.0, seed=3) == []
    assert refusal_over_harm_pairs(ordinary + [refused], 1.0, seed=3) == []  # ordinary requests, a refusing answer
    assert refusal_over_harm_pairs([replace(p, subset=None) for p in cruel], 1.0, seed=3) == []  # no labels: none
    # hh-rlhf's harmless-base: its chosen answer is no written decline, so a refusal would top the order there
    assert refusal_over_harm_pairs(cruel[2:], 1.0, seed=3) == []
