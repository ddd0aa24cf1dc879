"""lab.toxicity: both scorers rank a toxic sentence above a polite one; the fallback is chosen and says why."""

from __future__ import annotations

import pytest
import torch

from lab.models import hub_reachable
from lab.toxicity import ROBERTA_ID, ClassifierScorer, OfflineScorer, get_scorer

TOXIC = "You are a stupid worthless idiot and I hate you, shut up"
POLITE = "Thank you so much for your help, have a lovely day"
TRAIN = [(TOXIC, 1), ("I hate you, you disgusting moron", 1), (POLITE, 0),
         ("What a kind and helpful answer, thanks", 0)]


def _tiny_classifier(folder, tokenizer_dir, id2label):
    """A tiny RobertaForSequenceClassification (with the MiniLM tokenizer), nudged to tell toxic from polite."""
    from transformers import AutoTokenizer, RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    hate = next(i for i, name in id2label.items() if name == "hate")
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=514, pad_token_id=tok.pad_token_id, type_vocab_size=2,
        id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )
    model = RobertaForSequenceClassification(config)
    enc = tok([t for t, _ in TRAIN], return_tensors="pt", padding=True)
    labels = torch.tensor([hate if y else 1 - hate for _, y in TRAIN])
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(30):
        loss = model(**enc, labels=labels).loss
        optim.zero_grad()
        loss.backward()
        optim.step()
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory, tiny_reward_backbone_dir):
    return _tiny_classifier(tmp_path_factory.mktemp("tox"), tiny_reward_backbone_dir, {0: "nothate", 1: "hate"})


def test_offline_scorer_ranks_toxic_above_polite():
    scorer = get_scorer("offline")
    assert isinstance(scorer, OfflineScorer) and scorer.name == "offline" and scorer.fallback_reason is None
    toxic, polite = scorer.score([TOXIC, POLITE])
    assert 0 <= polite < toxic <= 1
    assert scorer.score([]) == [] and len(scorer.score([""])) == 1


def test_classifier_scorer_gives_the_probability_of_the_hate_label(classifier_dir):
    scorer = get_scorer(str(classifier_dir))
    assert isinstance(scorer, ClassifierScorer) and scorer.fallback_reason is None
    assert scorer.name.startswith("classifier:") and "'hate' label" in scorer.description
    toxic, polite = scorer.score([TOXIC, POLITE])
    assert 0 <= polite < toxic <= 1


def test_classifier_scorer_finds_the_hate_label_whatever_its_index(tmp_path, classifier_dir):
    """The same weights with the labels named the other way round score 1 − p."""
    import json

    flipped = tmp_path / "flipped"
    flipped.mkdir()
    for f in classifier_dir.iterdir():
        (flipped / f.name).write_bytes(f.read_bytes())
    config = json.loads((flipped / "config.json").read_text())
    config["id2label"], config["label2id"] = {"0": "HATE", "1": "nothate"}, {"HATE": 0, "nothate": 1}
    (flipped / "config.json").write_text(json.dumps(config))
    original = ClassifierScorer(str(classifier_dir)).score([TOXIC, POLITE])
    swapped = ClassifierScorer(str(flipped)).score([TOXIC, POLITE])
    assert swapped == pytest.approx([1 - p for p in original], abs=1e-5)


def test_roberta_falls_back_to_offline_without_the_hub_and_says_so():
    assert not hub_reachable()  # conftest keeps the tests offline
    scorer = get_scorer("roberta")
    assert isinstance(scorer, OfflineScorer)
    assert "not reachable" in scorer.fallback_reason and ROBERTA_ID in scorer.fallback_reason
    assert "instead of the roberta classifier" in scorer.description


def test_a_classifier_that_cannot_load_falls_back(tmp_path, tiny_reward_backbone_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    scorer = get_scorer(str(broken))
    assert isinstance(scorer, OfflineScorer) and "could not be loaded" in scorer.fallback_reason
    # A classifier without a 'hate' label cannot give its probability either.
    no_hate = get_scorer(str(tiny_reward_backbone_dir))
    assert isinstance(no_hate, OfflineScorer) and "no 'hate' label" in no_hate.fallback_reason


def test_unknown_scorer_name_is_refused():
    with pytest.raises(ValueError, match="unknown toxicity scorer"):
        get_scorer("perspective")


@pytest.mark.slow
def test_real_roberta_classifier(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub_reachable.cache_clear()
    if not hub_reachable():
        pytest.skip("the Hugging Face hub is not reachable")
    scorer = get_scorer("roberta")
    assert scorer.name == "roberta" and scorer.fallback_reason is None
    toxic, polite = scorer.score([TOXIC, POLITE])
    assert polite < 0.5 < toxic
