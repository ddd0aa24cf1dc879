"""lab.feedback: concurrent votes all kept, refusals change nothing, tallies, export, `feedback:NAME` as data, CLI."""

from __future__ import annotations

import json
import random
import threading

import pytest

from lab import feedback, sources
from lab import votes as store
from lab.cli import main
from lab.sources import load_pairs


def seed_pairs(fs, n: int, prefix: str = "Question") -> list[dict]:
    rows = [{"prompt": f"{prefix} {i}?", "answer_a": f"left answer {i}", "answer_b": f"right answer {i}",
             "model_a": "base", "model_b": "ppo-run"} for i in range(n)]
    return store.add_pairs(fs, rows)


@pytest.fixture
def fs(runs_root):
    return store.create_set("class-1", runs_root, min_seconds=0)


def snapshot(fs) -> bytes:
    return fs.votes_file.read_bytes() if fs.votes_file.exists() else b""


# ---------------------------------------------------------------- storage


def test_set_names_are_checked_and_sets_listed(runs_root):
    for bad in ("", "../etc", "a/b", "x" * 49, ".hidden", "sp ace"):
        with pytest.raises(ValueError, match="not allowed"):
            store.create_set(bad, runs_root)
    store.create_set("b-set", runs_root)
    store.create_set("a_set", runs_root)
    assert store.list_sets(runs_root) == ["a_set", "b-set"]
    with pytest.raises(ValueError, match="no feedback set 'zzz' \\(sets: a_set, b-set\\)"):
        store.open_set("zzz", runs_root)


def test_twenty_threads_fifty_votes_each_all_kept(fs):
    pairs = seed_pairs(fs, 50)
    errors: list[Exception] = []

    def visitor(k: int) -> None:
        order = list(pairs)
        random.Random(k).shuffle(order)
        for j, pair in enumerate(order):
            try:
                store.vote(fs, pair["id"], ("a", "b", "tie", "both_bad")[j % 4], f"visitor{k}", reason=f"r{k}-{j}")
            except Exception as e:  # noqa: BLE001 - collected and asserted below
                errors.append(e)

    threads = [threading.Thread(target=visitor, args=(k,)) for k in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    lines = fs.votes_file.read_text().splitlines()
    assert len(lines) == 1000
    rows = [json.loads(line) for line in lines]  # every line is whole, valid JSON
    assert len({(r["visitor"], r["pair_id"]) for r in rows}) == 1000
    assert {r["reason"] for r in rows} == {f"r{k}-{j}" for k in range(20) for j in range(50)}
    assert store.tally(rows)["per_visitor"] == {f"visitor{k}": 50 for k in range(20)}


def test_refused_votes_say_why_and_change_nothing(runs_root):
    fs = store.create_set("strict", runs_root)  # the default rate limit of one vote a second
    pair = seed_pairs(fs, 2)
    store.vote(fs, pair[0]["id"], "a", "alice", now=1000.0)
    before = snapshot(fs)
    cases = [
        (dict(pair_id="p-gone", choice="a", visitor="bob"), "is not in feedback set 'strict'"),
        (dict(pair_id=pair[0]["id"], choice="b", visitor="alice", now=1005.0), "already voted on this pair"),
        (dict(pair_id=pair[1]["id"], choice="b", visitor="alice", now=1000.4), "faster than a person can read"),
        (dict(pair_id=pair[1]["id"], choice="maybe", visitor="alice"), "not one of a, b, tie, both_bad"),
        (dict(pair_id=pair[1]["id"], choice="a", visitor="bob", reason="x" * 400), "keep it under 280"),
        (dict(pair_id=pair[1]["id"], choice="a", visitor=None), "no visitor id"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match=message):
            store.vote(fs, **kwargs)
        assert snapshot(fs) == before
    # after the wait the same visitor may vote on the other pair
    store.vote(fs, pair[1]["id"], "b", "alice", now=1001.5)
    assert len(fs.votes()) == 2


def test_empty_answers_are_refused(fs):
    with pytest.raises(ValueError, match="answer B of pair 1 is empty"):
        store.add_pairs(fs, [{"prompt": "Hi", "answer_a": "Hello", "answer_b": "  "}])
    with pytest.raises(ValueError, match="answers A and B of pair 1 are the same text"):
        store.add_pairs(fs, [{"prompt": "Hi", "answer_a": "Hello", "answer_b": "Hello "}])
    assert fs.pairs() == []
    # a pair written by hand (or an older version) with an empty answer cannot be voted on
    fs.pairs_file.write_text(json.dumps({"id": "p-empty", "prompt": "Hi", "answer_a": "Hello", "answer_b": "",
                                         "model_a": "x", "model_b": "y"}) + "\n")
    with pytest.raises(ValueError, match="answer B of pair 'p-empty' is empty"):
        store.vote(fs, "p-empty", "a", "alice")
    assert not fs.votes_file.exists()


def test_a_line_cut_by_a_crash_does_not_swallow_the_next_vote(fs):
    pairs = seed_pairs(fs, 2)
    store.vote(fs, pairs[0]["id"], "a", "alice")
    with open(fs.votes_file, "a") as fh:
        fh.write('{"id": "v-half", "pair_')  # the process died mid-write
    store.vote(fs, pairs[1]["id"], "b", "alice")
    assert [v["pair_id"] for v in fs.votes()] == [pairs[0]["id"], pairs[1]["id"]]


def test_next_pair_skips_own_votes_and_prefers_unvoted(fs):
    pairs = seed_pairs(fs, 3)
    assert store.next_pair(fs, "alice")["id"] == pairs[0]["id"]
    store.vote(fs, pairs[0]["id"], "a", "alice")
    assert store.next_pair(fs, "alice")["id"] == pairs[1]["id"]
    assert store.next_pair(fs, "bob")["id"] == pairs[1]["id"]  # fewest votes first: pair 0 has one already
    for p in pairs[1:]:
        store.vote(fs, p["id"], "tie", "alice")
    assert store.next_pair(fs, "alice") is None


def test_shuffle_sides_keeps_answer_with_its_model():
    rows = [{"prompt": f"q{i}", "answer_a": f"from X {i}", "answer_b": f"from Y {i}", "model_a": "X", "model_b": "Y"}
            for i in range(200)]
    shuffled = store.shuffle_sides(rows, random.Random(0))
    assert 70 < sum(r["model_a"] == "Y" for r in shuffled) < 130
    for r in shuffled:
        assert r["answer_a"].startswith(f"from {r['model_a']}") and r["answer_b"].startswith(f"from {r['model_b']}")


# ---------------------------------------------------------------- tallies


def test_wilson_interval_hand_computed():
    # 8 of 10: p = 0.8, z = 1.96 -> centre (0.8 + 0.19208) / 1.38416 = 0.71676, half 0.22426
    lo, hi = store.wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert store.wilson(0, 0) == (0.0, 1.0)
    lo, hi = store.wilson(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4345, abs=1e-4)


def _v(pair: str, visitor: str, choice: str, a: str = "base", b: str = "ppo") -> dict:
    return {"pair_id": pair, "visitor": visitor, "choice": choice, "model_a": a, "model_b": b,
            "prompt": "q", "answer_a": f"ans-{a}", "answer_b": f"ans-{b}", "id": f"v-{pair}-{visitor}"}


def test_tally_counts_rates_and_agreement():
    votes = [_v("p1", "u1", "b"), _v("p1", "u2", "b"),  # agree
             _v("p2", "u1", "a", "ppo", "base"), _v("p2", "u2", "b", "ppo", "base"),  # disagree
             _v("p3", "u1", "tie"), _v("p4", "u3", "both_bad"), _v("p5", "u3", "b")]
    t = store.tally(votes)
    assert (t["votes"], t["visitors"], t["a"], t["b"], t["tie"], t["both_bad"]) == (7, 3, 1, 4, 1, 1)
    assert t["per_visitor"] == {"u1": 3, "u2": 2, "u3": 2}
    assert t["b_over_a"]["n"] == 5 and t["b_over_a"]["wins"] == 4 and t["b_over_a"]["rate"] == 0.8
    assert t["b_over_a"]["ci95"] == [round(x, 4) for x in store.wilson(4, 5)]
    # by model: ppo won p1 (twice), p2 via choice a (ppo on the left), p5; base won p2 once
    (m,) = t["models"]
    assert (m["x"], m["y"], m["n"], m["wins"], m["rate"]) == ("base", "ppo", 5, 4, 0.8)
    assert (t["shared_pairs"], t["agreed_pairs"], t["agreement"]) == (2, 1, 0.5)
    assert store.tally([])["agreement"] is None and store.tally([])["b_over_a"]["rate"] is None


def test_votes_keep_the_kind_of_request_and_the_tally_splits_by_it(fs):
    rows = [{"prompt": f"q{i}", "answer_a": f"base answer {i}", "answer_b": f"ppo answer {i}", "model_a": "base",
             "model_b": "ppo", "kind": "harmful or edgy" if i < 4 else "ordinary"} for i in range(8)]
    rows.append({**rows[0], "prompt": "unlabelled", "kind": None})
    pairs = store.add_pairs(fs, rows)
    assert [p.get("kind") for p in pairs] == [r["kind"] for r in rows]
    # ppo wins the 4 harmful requests, base 3 of the 4 ordinary ones
    for i, p in enumerate(pairs[:8]):
        store.vote(fs, p["id"], "b" if i < 4 or i == 7 else "a", f"v{i}")
    votes = fs.votes()
    assert [v.get("kind") for v in votes] == [r["kind"] for r in rows[:8]]
    by_kind = store.tally(votes)["by_kind"]
    assert [(k["kind"], k["models"][0]["wins"], k["models"][0]["n"]) for k in by_kind] == \
        [("harmful or edgy", 4, 4), ("ordinary", 1, 4)]  # ppo's wins over base per kind
    assert store.tally(votes[4:])["by_kind"] == []  # one kind: nothing to split
    from lab.ui.feedback import tally_markdown

    text = tally_markdown(fs, "v0")
    assert "On **harmful or edgy** requests: **ppo** over **base** 4 of 4" in text
    assert "On **ordinary** requests: **ppo** over **base** 1 of 4" in text


def test_the_tally_counts_each_prompt_once_where_it_has_several_votes(fs):
    """Stop 49: a comparison drawing four answers a prompt queues four pairs a prompt; the tally then also counts
    each prompt once, for the model that won more of its votes (one reading of 48 answers is mostly noise)."""
    def votes_on(prompt: str, choices: str, flipped: bool = False) -> list[dict]:  # "b" = ppo wins when not flipped
        return [{**_v(f"{prompt}-{i}", f"u{i}", c, *(("ppo", "base") if flipped else ("base", "ppo"))),
                 "prompt": prompt} for i, c in enumerate(choices)]
    votes = (votes_on("q1", "bba") + votes_on("q2", "aa", flipped=True) + votes_on("q3", "aa")  # ppo, ppo, base
             + votes_on("q4", "ab") + votes_on("q5", "t") + votes_on("q6", "b", flipped=True))  # even, none, base
    votes = [{**v, "choice": "tie" if v["choice"] == "t" else v["choice"]} for v in votes]
    (m,) = store.tally(votes)["per_prompt"]
    assert (m["x"], m["y"], m["prompts"], m["y_ahead"], m["x_ahead"], m["even"]) == ("base", "ppo", 5, 2, 2, 1)
    assert m["rate"] == 0.5 and m["ci95"] == [round(x, 4) for x in store.wilson(2, 4)]
    # one vote a prompt: nothing to add to the per-vote rate
    assert store.tally([_v(f"p{i}", "u1", "b") | {"prompt": f"q{i}"} for i in range(3)])["per_prompt"] == []
    rows = [{"prompt": f"q{i // 2}", "answer_a": f"base {i}", "answer_b": f"ppo {i}", "model_a": "base",
             "model_b": "ppo<b>"} for i in range(4)]
    for i, pair in enumerate(store.add_pairs(fs, rows)):
        store.vote(fs, pair["id"], "b" if i != 3 else "a", f"v{i}")
    from lab.ui.feedback import tally_markdown

    text = tally_markdown(fs, "v0")  # q0: b, b -> ppo; q1: b, a -> even
    assert "**Per prompt** (each of 2 prompts once" in text and "**ppo&lt;b&gt;** ahead on 1" in text
    assert "**base** on 0, even on 1" in text


# ---------------------------------------------------------------- export and data source


def cast(fs, choices: list[str]) -> list[dict]:
    pairs = seed_pairs(fs, len(choices))
    return [store.vote(fs, p["id"], c, f"v{i}") for i, (p, c) in enumerate(zip(pairs, choices))]


def test_export_matches_votes(fs, tmp_path):
    votes = cast(fs, ["a", "b", "tie", "both_bad", "b"])
    pcr = store.export_rows(fs.votes(), "pcr")
    assert pcr == [{"prompt": "Question 0?", "chosen": "left answer 0", "rejected": "right answer 0"},
                   {"prompt": "Question 1?", "chosen": "right answer 1", "rejected": "left answer 1"},
                   {"prompt": "Question 4?", "chosen": "right answer 4", "rejected": "left answer 4"}]
    hh = store.export_rows(fs.votes(), "hh")
    assert hh[0] == {"chosen": "\n\nHuman: Question 0?\n\nAssistant: left answer 0",
                     "rejected": "\n\nHuman: Question 0?\n\nAssistant: right answer 0"}
    out = tmp_path / "out" / "votes.jsonl"
    assert store.write_export(fs, out, "hh") == 3
    assert [json.loads(x) for x in out.read_text().splitlines()] == hh
    assert len(votes) == 5 and len(fs.votes()) == 5  # ties and both-bad stay in the log
    with pytest.raises(ValueError, match="not one of hh, pcr"):
        store.export_rows(votes, "csv")


def test_feedback_source_loads_alone_pinned_and_mixed(fs):
    cast(fs, ["a", "b", "tie", "b"])
    pairs = load_pairs("feedback:class-1")
    assert len(pairs) == 3 and pairs.source == "feedback:class-1"
    assert pairs.pairs[0].prompt == "\n\nHuman: Question 0?\n\nAssistant:" and pairs.pairs[0].chosen == " left answer 0"
    assert pairs.pairs[1].chosen == " right answer 1" and pairs.pairs[1].rejected == " left answer 1"
    assert len(load_pairs("feedback:class-1@2")) == 2  # the first two votes only
    bundled = load_pairs("bundled")
    mixed = load_pairs("feedback:class-1+bundled")
    assert len(mixed) == 3 + len(bundled)
    # the votes join the bundled train split; its test split stays the held-out set
    assert len(mixed.split("train")) == 3 + len(bundled.split("train"))
    assert len(mixed.split("test")) == len(bundled.split("test"))
    with pytest.raises(ValueError, match="no feedback set 'nope'"):
        load_pairs("feedback:nope")


def test_a_set_without_decisive_votes_is_not_a_data_source(fs):
    cast(fs, ["tie", "both_bad"])
    with pytest.raises(ValueError, match="no 'A is better' or 'B is better' vote yet \\(2 votes"):
        load_pairs("feedback:class-1")


def test_pinning_and_provenance_name_the_votes_used(fs):
    votes = cast(fs, ["a", "b"])
    pinned = sources.pin_source("feedback:class-1+bundled")
    assert pinned == "feedback:class-1@2+bundled"
    cast(store.create_set("class-1", fs.path.parent.parent, min_seconds=0), ["a"])  # a later vote
    info = sources.provenance(pinned)["feedback_votes"]["class-1"]
    assert info["votes"] == 2 and len(info["votes_sha256"]) == 64
    assert sources.provenance("feedback:class-1")["feedback_votes"]["class-1"]["votes"] == 3
    assert sources.provenance("bundled") == {}
    assert votes[0]["id"] != votes[1]["id"]
    assert sources.split_source("feedback:class-1+data/x.jsonl") == ["data/x.jsonl"]
    with pytest.raises(ValueError, match="no feedback set"):
        sources.split_source("feedback:other+bundled")


# ---------------------------------------------------------------- CLI


def test_cli_list_export_stats(fs, tmp_path, capsys):
    cast(fs, ["a", "b", "tie"])
    assert main(["feedback", "list"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert row == {"name": "class-1", "pairs": 3, "votes": 3, "source": "feedback:class-1"}
    out = tmp_path / "pcr.jsonl"
    assert main(["feedback", "export", "class-1", "--out", str(out), "--format", "pcr"]) == 0
    assert json.loads(capsys.readouterr().out)["pairs"] == 2
    assert [json.loads(x)["chosen"] for x in out.read_text().splitlines()] == ["left answer 0", "right answer 1"]
    assert main(["feedback", "stats", "class-1"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["votes"] == 3 and stats["tie"] == 1 and stats["b_over_a"]["n"] == 2


@pytest.mark.parametrize("argv", [["feedback", "stats", "nope"], ["feedback", "export", "../x", "--out", "f.jsonl"]])
def test_cli_bad_set_exits_2_with_one_line(runs_root, capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
