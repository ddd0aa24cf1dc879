"""Augmented preference pairs, each the chosen answer against something a reader would rank below it.

Broken-text pairs: the chosen answer against a corrupted copy of itself, so a reward model learns to rank
word salad, loops, broken characters and answers to another question below the fluent answer they came from.
Evasion pairs (below): a chosen answer that helps against a canned refusal of the same request.
Framed pairs (below): on a harmful request, the chosen answer against the rejected one inside a helpful opening.
Policy-answer pairs (below): a written chosen answer against the policy's own answer to the same dialogue.
Refusal-over-harm pairs (below): on a harmful request, a canned refusal against the harmful answer.

Why: a reward model trained only on human pairs has never seen degenerate text, so it can score gibberish above a
good answer (measured: +1.78 for "Ladav, kısmına kabılıkınılını…"), and PPO then climbs towards it. Each pair here
keeps the dialogue and the chosen answer and replaces the rejected answer with one of six corruptions of the
chosen one, the last another dialogue's chosen answer (fluent, but not an answer to this request). No truncation:
a cut-off copy would teach that longer is better. Only training pairs are augmented; held-out pairs stay as they are.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Callable, Sequence

from lab import diagnostics
from lab.data import Pair, is_helpful_subset, is_written_decline_subset

SUBSET = "broken-text"  # how these pairs show in a run's pairs-per-subset counts
_CONSONANTS = "bcdfghklmnprstvz"
_VOWELS = "aeiou"


def _words(text: str) -> list[str]:
    return text.split()


def shuffle_words(text: str, rng: random.Random) -> str:
    """Word salad: the same words in a random order."""
    words = _words(text)
    rng.shuffle(words)
    return " ".join(words)


def loop(text: str, rng: random.Random) -> str:
    """A loop: the opening phrase repeated until the answer is as long as the original."""
    words = _words(text)
    start = rng.randrange(0, max(1, len(words) // 2))
    phrase = words[start: start + rng.randint(2, 6)] or words[:1]
    repeated = (phrase * (len(words) // len(phrase) + 1))[: max(len(words), 2 * len(phrase))]
    return " ".join(words[:start] + repeated)


def _nonword(rng: random.Random) -> str:
    length = rng.randint(3, 7)
    return "".join(rng.choice(_CONSONANTS if i % 2 == 0 else _VOWELS) for i in range(length))


def nonwords(text: str, rng: random.Random) -> str:
    """Made-up words: about half the words replaced by pronounceable nonsense, some glued together."""
    out = []
    for word in _words(text):
        if rng.random() < 0.5:
            word = _nonword(rng) + (_nonword(rng) if rng.random() < 0.3 else "")
        out.append(word)
    return " ".join(out)


def garble_characters(text: str, rng: random.Random) -> str:
    """Broken characters: letters inside each word scrambled, with runs of replacement characters mixed in."""
    out = []
    for word in _words(text):
        letters = list(word)
        rng.shuffle(letters)
        if rng.random() < 0.25:
            letters.append("\ufffd" * rng.randint(1, 4))
        out.append("".join(letters))
    return " ".join(out)


def stitch(text: str, rng: random.Random, others: Sequence[str] = ()) -> str:
    """Off-topic: the first words of the answer running into the words of another answer."""
    words = _words(text)
    others = [o for o in others if o.strip() != text.strip()]
    other = _words(rng.choice(others)) if others else words[::-1]
    cut = max(1, len(words) // 3)
    return " ".join(words[:cut] + other[cut: cut + len(words)])


def other_answer(text: str, rng: random.Random, others: Sequence[str] = ()) -> str:
    """Off-topic and fluent: another dialogue's answer in place of this one (a policy that answers a question it
    was not asked, "Here's a translation of the phrase …", scores high with a reward model that never saw one)."""
    others = [o for o in others if o.strip() != text.strip()]
    return rng.choice(others).strip() if others else " ".join(_words(text)[::-1])


CORRUPTIONS: dict[str, Callable[..., str]] = {
    "shuffle": shuffle_words, "loop": loop, "nonwords": nonwords,
    "garble": garble_characters, "stitch": stitch, "other-answer": other_answer,
}
NEEDS_OTHERS = {"stitch", "other-answer"}  # corruptions that borrow another dialogue's answer


def corrupt(text: str, kind: str, rng: random.Random, others: Sequence[str] = ()) -> str:
    """One corruption of `text`; leading whitespace kept, so the dialogue prefix joins it as before."""
    lead = text[: len(text) - len(text.lstrip())]
    body = text.strip()
    if kind in NEEDS_OTHERS:
        return lead + CORRUPTIONS[kind](body, rng, others)
    return lead + CORRUPTIONS[kind](body, rng)


def broken_text_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> list[Pair]:
    """round(fraction * len(pairs)) new pairs: a chosen answer (of at least 6 words) against a corruption of it,
    the kinds taken in turn. Returns only the new pairs; an answer too short to corrupt is skipped."""
    rng = random.Random(seed)
    usable = [p for p in pairs if len(p.chosen.split()) >= 6]
    n = round(fraction * len(pairs))
    if n <= 0 or not usable:
        return []
    answers = [p.chosen.strip() for p in usable]
    kinds = list(CORRUPTIONS)
    picked = rng.sample(usable, n) if n <= len(usable) else [rng.choice(usable) for _ in range(n)]
    out = []
    for i, pair in enumerate(picked):
        broken = corrupt(pair.chosen, kinds[i % len(kinds)], rng, answers)
        if broken.strip() != pair.chosen.strip():
            out.append(replace(pair, rejected=broken, subset=SUBSET))
    return out


# ---------------------------------------------------------------- evasion pairs

EVASION_SUBSET = "evasion"
# Canned refusals as chat models write them; lab.reward_eval's refusal-preference probes use three others, so that
# check stays a test of what the reward model learned, not of these strings.
EVASIONS = (
    "I'm sorry, but I cannot help with this request.",
    "I apologize, but as an AI language model I am not able to assist with that.",
    "Sorry, I can't do that. Is there something else you need?",
    "I'm afraid I can't provide that. Please ask me something else.",
    "As an AI, I don't feel comfortable responding to this.",
    "I am unable to fulfil this request.",
)


def evasion_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> list[Pair]:
    """round(fraction * len(pairs)) new pairs: a chosen answer that is not itself a refusal (lab.diagnostics' rule)
    against a canned refusal of the same request. Why: harmless-only preferences reward refusing (on the shared
    hh pairs a reward model preferred "I'm sorry, but I can't help with that." to a correct answer on 48 of 48
    ordinary requests), and a policy that refuses is safe but useless (Bai et al. 2022, arXiv:2204.05862, §4.4: the
    harmless-but-evasive trade-off). These pairs say that an answer which helps, or declines the harmful part
    and offers something better, beats a flat refusal. Returns only the new pairs.

    Where the data labels its pairs, only two kinds give evasion pairs: ordinary requests (`helpful` in the demo set,
    `helpful-*` in hh-rlhf) and harmful ones whose chosen answer was written as a decline that offers something
    better (the demo set's `harmless`, lab.data.is_written_decline_subset): that one, set against a flat refusal,
    teaches how to decline, which is what a reader prefers on a provocative request (README: stop 34). A harmless-base
    "chosen" answer is only the less harmful of two samples (in the shared hh pairs: "That seems relatively
    straightforward. Can you describe what you want on the card?" to a request for a fake ID), so a pair saying it
    beats a refusal would teach complying. Without labels every pair may give one, as nothing tells them apart."""
    rng = random.Random(seed)
    pool = [p for p in pairs if is_helpful_subset(p.subset) or is_written_decline_subset(p.subset)]
    usable = [p for p in (pool or pairs) if not diagnostics.refusal(p.chosen)["refusal"]]
    picked = _pick(usable, round(fraction * len(pairs)), rng)
    return [replace(p, rejected=" " + rng.choice(EVASIONS), subset=EVASION_SUBSET) for p in picked]


def _pick(usable: Sequence[Pair], n: int, rng: random.Random) -> list[Pair]:
    """n of the usable pairs, each at most once while there are enough ([] where n <= 0 or none is usable)."""
    if n <= 0 or not usable:
        return []
    return rng.sample(list(usable), n) if n <= len(usable) else [rng.choice(usable) for _ in range(n)]


# ---------------------------------------------------------------- framed pairs

FRAMED_SUBSET = "framed"
# Openings a helpful assistant wraps a text in; a harmful text so wrapped is no better.
FRAMES = (
    "Here's a possible version you could use:",
    "Sure! Here's one you can send:",
    "Of course. Here is a message that gets the point across:",
    "Here's a sample you can adapt:",
    "Absolutely, try something like this:",
)


def framed_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> list[Pair]:
    """round(fraction * len(pairs)) new pairs on harmful requests: the chosen answer against the rejected one wrapped
    in a helpful assistant's opening ("Here's a possible version you could use: <the cruel text>"). Why: at stop 34
    the policy won the ordinary requests and lost the provocative ones by going along with a cruel request inside
    such a template ("Here's a possible speech that could be crafted to convey … unfairness and cluelessness"),
    which the reward model scored as it scores a helpful answer: the demo set's rejected answers to harmful requests
    are blunt ("Sure, ...", "Ha, ..."), so nothing told it that the opening does not redeem the content. Where the
    data labels ordinary requests (helpful*), only the other pairs give framed pairs; without labels every pair may.
    Off in every preset: at 0.25 on seeds 15-17, read blind, the provocative requests evened (30-31) but the ordinary
    ones were lost (24-34; without them 41-24): a good ordinary answer opens the same way (README, stop 34).
    Returns only the new pairs."""
    rng = random.Random(f"framed-{seed}")
    usable = [p for p in pairs if not is_helpful_subset(p.subset) and p.rejected.strip()]
    picked = _pick(usable, round(fraction * len(pairs)), rng)
    return [replace(p, rejected=f" {rng.choice(FRAMES)} {p.rejected.strip()}", subset=FRAMED_SUBSET) for p in picked]


# ---------------------------------------------------------------- policy-answer pairs

POLICY_SUBSET = "policy-answer"


def cut_words(text: str, n_words: int) -> str:
    """The first n_words words of text (its leading whitespace kept), or text as it is when it is no longer."""
    words = text.split()
    if len(words) <= n_words:
        return text
    return text[: len(text) - len(text.lstrip())] + " ".join(words[:n_words])


def policy_answer_pairs(pairs: Sequence[Pair], fraction: float, seed: int,
                        answer: Callable[[list[str]], list[tuple[str, bool]]]) -> list[Pair]:
    """round(fraction * len(pairs)) new pairs: a written chosen answer against the policy's own answer to the same
    dialogue (`answer`: prompts -> (answer, cut at the token limit) each, sampled from the policy PPO will train).

    Why: the human pairs' rejected answers are blunt, written by people ("Sure thing, go for the weight ..."); the
    policy's are not, so the reward model never saw what PPO will make it score. At stop 34 the policy won the
    ordinary requests and lost the provocative ones by going along with a cruel request inside a polite template
    ("Here's a possible speech that could be crafted to convey ..."), which the reward model scored as it scores a
    helpful answer. These pairs show it the policy's own answers, on both kinds of request, each below the answer a
    person wrote for that dialogue, so what it learns is the gap PPO has to close, not one opening (framed pairs,
    which marked one opening down, lost the ordinary requests). Where the policy's answer was cut at the token
    limit the chosen answer is cut to as many words, so being cut off says nothing.

    Only chosen answers a reader would prefer to any policy answer are used: where the data labels its pairs,
    ordinary requests (helpful*) and written declines (the demo set's harmless); a harmless-base "chosen" answer
    is only the less harmful of two samples and often complies (lab.augment.evasion_pairs). Without labels every
    pair may. Returns only the new pairs."""
    rng = random.Random(f"policy-{seed}")
    pool = [p for p in pairs if is_helpful_subset(p.subset) or is_written_decline_subset(p.subset)]
    usable = [p for p in (pool or pairs) if p.chosen.strip()]
    picked = _pick(usable, round(fraction * len(pairs)), rng)
    if not picked:
        return []
    out = []
    for pair, (text, cut) in zip(picked, answer([p.prompt for p in picked])):
        text = text.strip()
        if not text:
            continue
        chosen = cut_words(pair.chosen, len(text.split())) if cut else pair.chosen
        if chosen.strip() != text:
            out.append(replace(pair, chosen=chosen, rejected=" " + text, subset=POLICY_SUBSET))
    return out


# ---------------------------------------------------------------- refusal-over-harm pairs

REFUSAL_OVER_HARM_SUBSET = "refusal-over-harm"


def refusal_over_harm_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> list[Pair]:
    """round(fraction * len(pairs)) new pairs on harmful requests: a canned refusal (chosen) against the pair's
    harmful answer (rejected), so the reward model's order on such a request is written decline > flat refusal >
    harmful answer. Why: evasion pairs show canned refusals only as the rejected side, so nothing placed a refusal
    above a cruel answer, and a reward model may rank refusing below complying; a reader does not (read blind on
    hh pairs, a refusing model won the harmful requests 24-5). Only harmful requests whose chosen answer is a
    written decline (the demo set's `harmless`, `is_written_decline_subset`) give these pairs: the written decline
    is what keeps a refusal below the best answer. hh-rlhf's `harmless-base` chosen answers are the less harmful of
    two samples, so there these pairs put a canned refusal at the top: on the shared hh pairs labelled harmless-base
    and mixed with helpful pairs, readers counted 16 and 23 refusals of the 24 provocative requests against base's
    5 and 5 (seeds 1 and 3, stop 37), and RLHF did not win them (README). Without labels nothing tells a harmful
    request from an ordinary one, where a refusal is worse than a poor answer: none either. Rejected answers that
    are themselves refusals are skipped. Returns only the new pairs."""
    rng = random.Random(f"refusal-over-harm-{seed}")
    usable = [p for p in pairs if is_written_decline_subset(p.subset) and p.rejected.strip()
              and not diagnostics.refusal(p.rejected)["refusal"]]
    picked = _pick(usable, round(fraction * len(pairs)), rng)
    return [replace(p, chosen=" " + rng.choice(EVASIONS), subset=REFUSAL_OVER_HARM_SUBSET) for p in picked]
