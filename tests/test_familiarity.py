"""lab.familiarity: which prompts are unlike every request a reward model learned from, against the run's own floor."""

from __future__ import annotations

import json

import pytest
import torch

from lab import familiarity, relevance
from lab.imitation import proxy_pairs
from lab.runs import new_run

FAR = ["What is the derivative of x cubed?", "Who won the 1954 football world cup?"]  # nothing like the demo pairs
NEAR = ["Write a haiku about autumn leaves.", "Roast my friend who is always late."]


def reward_run(root, **config):
    run = new_run("reward", {"data": "bundled", "eval_fraction": 0.1, "seed": 0, **config}, root)
    run.set_status("done", summary={})
    return run


def test_far_prompts_are_less_alike_than_nine_in_ten_of_the_runs_held_out_requests(runs_root):
    """The demo set's 166 training requests against its 38 held-out ones set the floor (their 10th percentile of
    nearest-request cosines); a maths question and a sports one fall below it, a poem and a roast do not."""
    run = reward_run(runs_root)
    encoder = relevance.encoder()
    found = familiarity.measure(FAR + NEAR, run.path, encoder)
    assert found["far"] == [0, 1] and found["n"] == 4
    assert (found["trained"], found["held_out"]) == (166, 38)
    train, held_out = familiarity.reward_requests(run.path)
    floor = familiarity.quantile(familiarity.nearest(encoder, held_out, encoder.embed(train)),
                                  familiarity.FAR_QUANTILE)
    assert found["floor"] == floor and all(x < floor for x in found["nearest"][:2])
    assert all(x > floor for x in found["nearest"][2:])
    kept = familiarity.summary(found)
    assert kept == {"far": 2, "n": 4, "floor": floor, "trained": 166, "held_out": 38, "far_prompts": [0, 1]}
    judged = reward_run(runs_root, judge_fraction=0.25)  # the judge's quarter is not what the proxy learned from
    proxy_requests = {relevance.request_of(p.prompt) for p in proxy_pairs(judged.path)}
    assert set(familiarity.reward_requests(judged.path)[0]) == proxy_requests and len(proxy_requests) < 166
    (run.path / "model").mkdir()
    assert familiarity.measure(FAR + NEAR, run.path / "model", encoder)["far"] == [0, 1]  # its model folder too


class BagOfWords:
    """Stands in for the sentence encoder: a unit vector of word counts over a fixed vocabulary."""

    def __init__(self, vocabulary):
        self.vocabulary = vocabulary

    def embed(self, texts):
        rows = [[t.lower().count(w) for w in self.vocabulary] for t in texts]
        return torch.nn.functional.normalize(torch.tensor(rows, dtype=torch.float) + 1e-6, dim=-1)


def test_no_claim_where_the_reward_models_data_cannot_be_told(runs_root, tmp_path):
    """No run (None, a hub id, a bare folder), no encoder, a source that is gone, or no held-out requests to set a
    floor with: no measurement, so Compare says nothing rather than guess."""
    encoder = BagOfWords(["cat", "dog"])
    assert familiarity.measure(FAR, None, encoder) is None
    assert familiarity.measure(FAR, "distilroberta-base", encoder) is None
    (tmp_path / "bare").mkdir()
    assert familiarity.measure(FAR, tmp_path / "bare", encoder) is None
    assert familiarity.measure(FAR, reward_run(runs_root).path, None) is None
    rows = [{"chosen": f"\n\nHuman: tell me about cat {i}\n\nAssistant: a cat", "rejected":
             f"\n\nHuman: tell me about cat {i}\n\nAssistant: no"} for i in range(60)]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    gone = reward_run(runs_root, data=str(data))
    assert familiarity.measure(["a dog"], gone.path, encoder)["far"] == [0]  # 6 held-out cat requests: a floor
    data.write_text("".join(json.dumps({"chosen": r["chosen"]}) + "\n" for r in rows))  # 'rejected' gone since
    assert familiarity.measure(["a dog"], gone.path, encoder) is None
    data.write_text("")  # emptied since
    assert familiarity.measure(["a dog"], gone.path, encoder) is None
    data.unlink()
    assert familiarity.measure(["a dog"], gone.path, encoder) is None
    assert familiarity.measure([], reward_run(runs_root).path, encoder) is None  # nothing compared
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert familiarity.measure(["a dog"], reward_run(runs_root, data=str(data), eval_fraction=0.0).path,
                               encoder) is None


@pytest.mark.parametrize("far, n, said", [(0, 48, False), (11, 48, False), (12, 48, True), (26, 48, True)])
def test_the_verdicts_watch_from_a_quarter_of_the_prompts_up(far, n, said):
    words = familiarity.watch({"far": far, "n": n})
    assert bool(words) is said
    if said:
        assert words[0].startswith(f"{far} of {n} prompts are unlike any request the reward model learned from")
    assert familiarity.watch(None) == [] and familiarity.watch({"n": 0, "far": 0}) == []
