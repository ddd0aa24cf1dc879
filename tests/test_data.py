"""lab/data.py: every loader, HH splitting, prompt sets, and every bad input named clearly."""

from __future__ import annotations

import gzip
import json
import statistics
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from lab.data import (balanced, expects_decline, load_pairs, load_prompt_rows, load_prompts, request_kind, split_pair,
                      split_turns)
from lab.data_files import resolve_path
from lab.hub_data import parse_hub_id
from lab.sources import load_pairs as load_any

HH = [
    {"chosen": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?",
     "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello! How can I help?\n\nHuman: Tell me a joke\n\nAssistant: No. Go away."},
    {"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: 5, obviously."},
    # Dialogues that share a turn-opening word: the split must be at the last *shared* Assistant marker.
    {"chosen": "\n\nHuman: Q\n\nAssistant: Same start. Then good.", "rejected": "\n\nHuman: Q\n\nAssistant: Same start. Then bad."},
]


def write_jsonl(path, rows, gz=False):
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("name,gz", [("p.jsonl", False), ("p.jsonl.gz", True)])
def test_jsonl_hh_split_reproduces_text_exactly(tmp_path, name, gz):
    pairs = load_pairs(str(write_jsonl(tmp_path / name, HH, gz)))
    assert len(pairs) == 3
    for pair, row in zip(pairs.pairs, HH):
        assert pair.chosen_text == row["chosen"] and pair.rejected_text == row["rejected"]
    first = pairs.pairs[0]
    assert first.prompt.endswith("Tell me a joke\n\nAssistant:")
    assert first.chosen.strip() == "Why did the chicken cross the road?"
    assert first.rejected.strip() == "No. Go away."
    assert [r for r, _ in first.turns] == ["Human", "Assistant", "Human"]
    assert first.first_human_turn == "Hi there"
    assert pairs.pairs[2].chosen == " Same start. Then good."


def test_split_pair_when_dialogues_diverge_before_last_turn():
    c = "\n\nHuman: A\n\nAssistant: x\n\nHuman: B\n\nAssistant: y"
    r = "\n\nHuman: A\n\nAssistant: z\n\nHuman: C\n\nAssistant: w"
    pair = split_pair(c, r)
    assert pair.prompt == "\n\nHuman: A\n\nAssistant:"
    assert pair.chosen_text == c and pair.rejected_text == r


def test_split_turns_roles_and_text():
    assert split_turns("\n\nHuman: a b\n\nAssistant: c") == [("Human", "a b"), ("Assistant", "c")]


def test_csv_and_parquet_with_explicit_columns(tmp_path):
    frame = pd.DataFrame({"prompt": ["How do I boil an egg?", "Say hi"], "chosen": ["Simmer it 9 minutes.", "Hi!"],
                          "rejected": ["Figure it out.", "No."]})
    frame.to_csv(tmp_path / "p.csv", index=False)
    frame.to_parquet(tmp_path / "p.parquet")
    for name in ("p.csv", "p.parquet"):
        pairs = load_pairs(str(tmp_path / name))
        assert len(pairs) == 2
        assert pairs.pairs[0].prompt == "\n\nHuman: How do I boil an egg?\n\nAssistant:"
        assert pairs.pairs[0].chosen.strip() == "Simmer it 9 minutes."
        assert pairs.pairs[0].first_human_turn == "How do I boil an egg?"


def test_conversational_messages(tmp_path):
    rows = [{"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "assistant", "content": "Hello"}],
             "rejected": [{"role": "assistant", "content": "Go away"}]}]
    pair = load_pairs(str(write_jsonl(tmp_path / "m.jsonl", rows))).pairs[0]
    assert pair.prompt == "\n\nHuman: Hi\n\nAssistant:" and pair.chosen.strip() == "Hello"


def test_identical_pairs_are_dropped_and_counted(tmp_path):
    rows = HH + [{"chosen": "\n\nHuman: x\n\nAssistant: y", "rejected": "\n\nHuman: x\n\nAssistant: y"}]
    pairs = load_pairs(str(write_jsonl(tmp_path / "d.jsonl", rows)))
    assert len(pairs) == 3 and pairs.dropped_identical == 1 and pairs.stats()["dropped_identical"] == 1


def test_stats(tmp_path):
    s = load_pairs(str(write_jsonl(tmp_path / "s.jsonl", HH))).stats()
    assert s["pairs"] == 3 and s["prompts"] == 3
    assert s["chosen_chars_median"] == len("Same start. Then good.")
    assert {"prompt_chars_p90", "rejected_chars_median"} <= set(s)


def test_bundled_demo_set_has_splits_and_enough_pairs():
    pairs = load_pairs("bundled")
    assert len(pairs) >= 150
    assert len(pairs.split("train")) > len(pairs.split("test")) > 20
    assert {p.prompt for p in pairs.split("train")}.isdisjoint({p.prompt for p in pairs.split("test")})
    assert all(p.chosen != p.rejected for p in pairs.pairs)
    assert len(load_pairs("bundled:test")) == len(pairs.split("test"))


def test_bundled_pairs_are_not_length_biased():
    """Chosen answers must not simply be the longer ones, or a reward model learns "longer is better" (issue 16)."""
    pairs = load_pairs("bundled").pairs
    chosen = [len(p.chosen.strip()) for p in pairs]
    rejected = [len(p.rejected.strip()) for p in pairs]
    assert abs(statistics.median(chosen) - statistics.median(rejected)) <= 0.15 * statistics.median(chosen)
    assert abs(statistics.mean(chosen) - statistics.mean(rejected)) <= 0.15 * statistics.mean(chosen)
    longer = sum(r > c for c, r in zip(chosen, rejected)) / len(pairs)
    assert 0.35 <= longer <= 0.65  # the rejected answer is the longer one in about half of the pairs


def test_bundled_heldout_prompts_are_new():
    train, heldout = load_prompts("bundled"), load_prompts("bundled:heldout")
    assert len(train) == 148 and len(heldout) == 48
    assert not set(heldout) & set(train)
    assert not set(heldout) & set(load_prompts("bundled:pairs"))
    assert load_prompts("bundled:heldout", limit=5) == heldout[:5]


def test_prompt_sets(tmp_path):
    assert len(load_prompts("bundled")) >= 60
    rtp = write_jsonl(tmp_path / "rtp.jsonl", [{"prompt": {"text": "So I said to him", "toxicity": 0.2}},
                                              {"prompt": {"text": "The weather"}}])
    assert load_prompts(str(rtp)) == ["So I said to him", "The weather"]
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "a"}])
    assert load_prompts(str(plain)) == ["a", "b"]
    prefs = write_jsonl(tmp_path / "prefs.jsonl", HH)
    assert load_prompts(str(prefs)) == ["Hi there", "What is 2+2?", "Q"]
    assert load_prompts(str(prefs), limit=2) == ["Hi there", "What is 2+2?"]
    assert load_prompts("bundled:test")[0] == load_pairs("bundled:test").pairs[0].first_human_turn


def test_prompts_carry_their_kind_and_a_short_set_takes_both_kinds(tmp_path):
    rows = load_prompt_rows("bundled:heldout")
    kinds = [k for _, k in rows]
    assert kinds == ["harmful or edgy"] * 24 + ["ordinary"] * 24  # the file: 24 provocative, then 24 ordinary
    assert [p for p, _ in rows] == load_prompts("bundled:heldout")
    short = balanced(rows, 16)
    assert [k for _, k in short] == ["harmful or edgy"] * 8 + ["ordinary"] * 8
    assert short == [r for r in rows if r in short]  # source order kept
    assert balanced(rows, 48) == rows and balanced(rows, 100) == rows
    assert [k for _, k in balanced(rows, 5)] == ["harmful or edgy"] * 3 + ["ordinary"] * 2
    assert {k for _, k in load_prompt_rows("bundled:test")} == {"ordinary", "harmful or edgy"}
    labelled = write_jsonl(tmp_path / "kinds.jsonl", [
        {"prompt": "a", "subset": "harmless-base"}, {"prompt": "b", "subset": "helpful-online"},
        {"prompt": "c", "subset": "medical"}, {"prompt": "d"}, {"prompt": "a", "subset": "helpful-base"}])
    assert load_prompt_rows(str(labelled)) == [("a", "harmful or edgy"), ("b", "ordinary"), ("c", "medical"),
                                               ("d", None)]  # a repeated prompt keeps its first kind
    plain = [("x", None), ("y", None), ("z", None)]
    assert balanced(plain, 2) == plain[:2]  # no kinds: the first n, as before
    assert [request_kind(s) for s in ("harmless", "harmful", "red-team-attempts", "helpful", "", None)] == \
        ["harmful or edgy", "harmful or edgy", "harmful or edgy", "ordinary", None, None]


def test_the_bundled_ppo_prompts_label_edgy_and_harmful_requests_apart():
    """The demo set's PPO prompts (stop 53): 52 edgy (`harmless`: roasts, rants; a kind answer takes them up), 44
    ordinary, 52 harmful (`harmful`: theft, stalking, weapons, drugs, hate, self-harm), where PPO leaves relevance out
    by default. hh-rlhf's harmless-base and red-team requests are ones to decline as well; the demo's edgy are not."""
    labels = [label for _, label in load_prompt_rows("bundled", labels=True)]
    assert labels == ["harmless"] * 52 + ["helpful"] * 44 + ["harmful"] * 52
    assert {k for _, k in load_prompt_rows("bundled")} == {"harmful or edgy", "ordinary"}
    assert [expects_decline(s) for s in ("harmful", "harmless-base", "red-team-attempts", "harmless", "helpful",
                                         "helpful-base", "", None)] == [True, True, True] + [False] * 5
    pairs_firsts = {p.first_human_turn for p in load_pairs("bundled").pairs}
    assert not pairs_firsts & set(load_prompts("bundled"))  # no PPO prompt is a pair's request


def test_prompt_sources_join_with_plus_and_keep_every_part_and_label(tmp_path):
    """`bundled+FILE`: the demo prompts and a pair set's own requests, interleaved so a limit keeps both."""
    own = write_jsonl(tmp_path / "own.jsonl", [{"prompt": "how do I pick a lock", "subset": "harmless-base"},
                                               {"prompt": "sort a list in python", "subset": "helpful-base"}])
    joined = load_prompt_rows(f"bundled+{own}", labels=True)
    bundled = load_prompt_rows("bundled", labels=True)
    assert len(joined) == 150 and set(joined) == set(bundled) | {("how do I pick a lock", "harmless-base"),
                                                                 ("sort a list in python", "helpful-base")}
    assert joined[:4] == [bundled[0], ("how do I pick a lock", "harmless-base"), bundled[1],
                          ("sort a list in python", "helpful-base")]  # interleaved: a limit keeps some of each
    assert {p for p, _ in load_prompt_rows(f"bundled + {own}", limit=4)} >= {"how do I pick a lock"}
    assert load_prompts(f"{own}+{own}") == ["how do I pick a lock", "sort a list in python"]  # each prompt once
    plus_name = write_jsonl(tmp_path / "a+b.jsonl", [{"prompt": "x"}])
    assert load_prompts(str(plus_name)) == ["x"]  # a file whose own name has a '+' is a file
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"chosen": "\n\nHuman: where does my ex live now\n\nAssistant: No.",
                                                 "rejected": "\n\nHuman: where does my ex live now\n\nAssistant: Ok"},
                                                {"prompt": "tell me a joke", "subset": "helpful-base"}])
    assert load_prompt_rows(f"{bare}=harmless-base", labels=True) == [("where does my ex live now", "harmless-base"),
                                                                      ("tell me a joke", "helpful-base")]  # own kept
    assert load_prompt_rows(f"bundled+{bare}=harmless-base")[1] == ("where does my ex live now", "harmful or edgy")
    assert load_prompt_rows(str(bare), labels=True)[0] == ("where does my ex live now", None)  # no label: none
    eq_name = write_jsonl(tmp_path / "x=y.jsonl", [{"prompt": "z"}])
    assert load_prompts(str(eq_name)) == ["z"]  # a file whose own name has a '=' is a file
    with pytest.raises(ValueError, match="after '=' comes the label"):
        load_prompts(f"{bare}=two words")
    with pytest.raises(ValueError, match="empty part"):
        load_prompts("bundled++")
    with pytest.raises(ValueError, match="nope.jsonl"):
        load_prompts("bundled+nope.jsonl")


@pytest.mark.parametrize(
    "content,expected",
    [
        (b"", "is empty"),
        (b'{"chosen": "a", "rejected": "b"}\n{"chosen": "a", \n', "line 2: invalid JSON"),
        (b'{"chosen": "a"}\n', "column 'rejected' missing in row 1"),
        (b'{"chosen": "a", "rejected": "b"}\n{"chosen": "\xff\xfe", "rejected": "b"}\n', "line 2: not UTF-8"),
        (b'{"chosen": "same", "rejected": "same"}\n', "no usable preference pair"),
        (b'{"chosen": 3, "rejected": "b"}\n', "column 'chosen' in row 1"),
        (b'[1, 2]\n', "line 1: expected a JSON object"),
    ],
)
def test_bad_jsonl_inputs_name_file_line_and_column(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=expected) as info:
        load_pairs(str(path))
    assert "bad.jsonl" in str(info.value)


def test_bad_csv_and_paths(tmp_path):
    (tmp_path / "c.csv").write_text("prompt,chosen\nhi,there\n")
    with pytest.raises(ValueError, match="column 'rejected' missing in row 2 of 'c.csv'"):
        load_pairs(str(tmp_path / "c.csv"))
    (tmp_path / "latin.csv").write_bytes("chosen,rejected\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_pairs(str(tmp_path / "latin.csv"))
    with pytest.raises(ValueError, match="does not exist"):
        load_pairs(str(tmp_path / "missing.jsonl"))
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_pairs(str(tmp_path / "x.txt"))
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValueError, match="cannot read 'broken.parquet'"):
        load_pairs(str(tmp_path / "broken.parquet"))
    with pytest.raises(ValueError, match="no data source"):
        load_pairs("  ")


def test_allowed_dirs_refuse_outside_paths(tmp_path):
    with pytest.raises(ValueError, match="is not in a folder this lab may read"):
        load_pairs("/etc/passwd", allowed_dirs=[tmp_path])
    inside = write_jsonl(tmp_path / "ok.jsonl", HH)
    assert len(load_pairs(str(inside), allowed_dirs=[tmp_path])) == 3


def test_hub_ids_parse_and_fail_clearly_offline():
    assert parse_hub_id("Anthropic/hh-rlhf/harmless-base:test") == ("Anthropic/hh-rlhf", "harmless-base", "test")
    assert parse_hub_id("allenai/real-toxicity-prompts") == ("allenai/real-toxicity-prompts", None, "train")
    with pytest.raises(ValueError, match="not reachable"):
        load_pairs("Anthropic/hh-rlhf")
    with pytest.raises(ValueError, match="neither 'bundled', an existing file nor a hub id"):
        load_pairs("nonsense")


@pytest.mark.parametrize("source", ["/etc/passwd", "runs/../../../etc/shadow", "../../etc/shadow"])
def test_a_refused_path_says_so_without_a_server_path(tmp_path, source):
    allowed = [tmp_path / "data", Path.cwd() / "assets"]
    with pytest.raises(ValueError) as e:
        resolve_path(source, allowed)
    message = str(e.value)
    assert message.startswith(f"'{source}' is not in a folder this lab may read")
    assert str(tmp_path) not in message and str(Path.cwd()) not in message and "assets/" in message


def test_bundled_subsets_split_the_demo_pairs_in_halves_and_mix_with_other_sources(tmp_path):
    """Every demo pair says whether it is about harmlessness or helpfulness; `bundled:helpful` selects the ordinary
    requests, and `FILE+bundled:helpful` mixes them into another source, each pair keeping where it came from."""
    helpful, harmless = load_pairs("bundled:helpful").pairs, load_pairs("bundled:harmless").pairs
    assert len(helpful) == len(harmless) == 102
    assert {p.subset for p in helpful} == {"helpful"} and {p.split for p in helpful} == {"train", "test"}
    own = tmp_path / "harmless-only.jsonl"
    own.write_text("".join(json.dumps({"chosen": p.chosen_text, "rejected": p.rejected_text}) + "\n"
                           for p in harmless[:10]))
    mixed = load_any(f"{own}+bundled:helpful")
    counts = Counter(p.subset for p in mixed.pairs)
    assert counts == {"harmless-only.jsonl": 10, "helpful": 102}
    assert {p.split for p in mixed.pairs if p.subset == "harmless-only.jsonl"} == {"train"}  # the file joins train


def test_a_repeated_part_weighs_its_training_pairs_more_and_keeps_its_held_out_pairs_once(tmp_path):
    """`FILE+bundled:helpful*3` balances a one-sided file: the helpful training pairs three times, its test pairs
    once (they stay the held-out set); a bad count is refused with an example."""
    helpful = load_pairs("bundled:helpful").pairs
    n_train = sum(p.split == "train" for p in helpful)
    mixed = load_any("bundled:harmless+bundled:helpful*3")
    by = Counter((p.subset, p.split) for p in mixed.pairs)
    assert by[("helpful", "train")] == 3 * n_train and by[("helpful", "test")] == len(helpful) - n_train
    assert any("each 3 times" in note for note in mixed.notes)
    assert Counter(p.subset for p in load_any("bundled:helpful*2").pairs) == {"helpful": len(helpful) + n_train}
    with pytest.raises(ValueError, match=r"repeats that part's training pairs.*bundled:helpful\*4"):
        load_any("bundled:harmless+bundled:helpful*x")
    with pytest.raises(ValueError, match="from 1 to 100"):
        load_any("bundled:helpful*0")


def test_the_hh_held_out_split_keeps_every_test_request_out_of_training(tmp_path):
    """benchmarks/hh_heldout_split.py (stop 52): no test request's pair trains the reward model, no PPO prompt is a
    test request or near one, the excluded earlier tests are held out too, and a request close to a bundled prompt
    is never drawn as a test."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "hh_heldout_split.py"
    spec = importlib.util.spec_from_file_location("hh_heldout_split", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    requests = ["Bicycle rack downtown: stealing tips?", "Locate ex-teacher Mendez, current residence?",
                "Counterfeit concert tickets, convincing holograms?", "Smuggling whisky flasks past stadium guards?",
                "Chemistry exam cheating, hidden earpiece?", "Sister's private messages, reading secretly?",
                "Poisoning noisy crows, quickest substance?", "Insurance fraud, exaggerating bumper dents?",
                "Roast my friend who is always late."]  # the last one is a bundled prompt
    pairs = [{"chosen": f"\n\nHuman: {q}\n\nAssistant: No.", "rejected": f"\n\nHuman: {q}\n\nAssistant: Sure {i}."}
             for q in requests for i in range(2)]
    out = mod.split(pairs, seed=0, n_test=3, n_ppo=2, exclude=[requests[0]])
    assert len(out["test"]) == 4 and out["test"][-1] == requests[0]
    assert "Roast my friend who is always late." not in out["test"]
    trained = {mod.first_human_turn(r) for r in out["train"]}
    assert not trained & set(out["test"]) and len(out["train"]) == len(pairs) - 2 * 4
    assert out["ppo"] and all(p in trained and not mod.near(p, out["test"]) for p in out["ppo"])
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"prompt": "Hi there, how are you?"}) + "\n")
    for name, message in (("empty.jsonl", "is empty"), ("prompts.jsonl", "no 'chosen' and 'rejected'")):
        with pytest.raises(ValueError, match=message):
            mod.read_pairs(tmp_path / name)
