"""Toxicity scorers with one interface: `.name`, `.description`, `.score(texts) -> list[float]` in [0, 1].

`roberta` is the classifier behind `evaluate`'s toxicity measurement (probability of its "hate" label);
`offline` is alt-profanity-check, a linear model on word n-grams that needs no download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import torch

from lab.models import LOAD_LOCK, NO_HUB_KERNELS, cached_snapshot, has_cuda, hub_reachable, local_path

ROBERTA_ID = "facebook/roberta-hate-speech-dynabench-r4-target"
TOXIC_LABEL = "hate"  # evaluate's toxicity measurement: toxic_label="hate"
# What can go wrong loading a classifier: missing/corrupt files, bad config, missing optional packages.
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError)


class Scorer(Protocol):
    name: str
    description: str
    fallback_reason: str | None

    def score(self, texts: list[str]) -> list[float]: ...


class OfflineScorer:
    """alt-profanity-check: probability that a text is profane/offensive; runs anywhere in milliseconds."""

    name = "offline"

    def __init__(self, fallback_reason: str | None = None) -> None:
        from profanity_check import predict_prob  # imported here: loading its pickled model takes ~1 s

        self._predict = predict_prob
        self.fallback_reason = fallback_reason
        self.description = "alt-profanity-check (offline linear classifier): probability the text is offensive"
        if fallback_reason:
            self.description += f" — used instead of the roberta classifier because {fallback_reason}"

    def score(self, texts: list[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict([t or "" for t in texts])]


class ClassifierScorer:
    """A sequence classifier (hub id or local folder); the score is the softmax probability of its toxic label."""

    fallback_reason = None

    def __init__(
        self, model: str = ROBERTA_ID, label: str = TOXIC_LABEL, batch_size: int = 32, max_length: int = 512
    ) -> None:
        with LOAD_LOCK:  # one model load at a time (lab.models.LOAD_LOCK)
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            path = model if Path(model).expanduser().exists() else local_path(model)  # a hub id: cached or downloaded
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=False,
                                                                            **NO_HUB_KERNELS).eval()
        if has_cuda():
            self.model.to("cuda")
        self.label_index = _label_index(self.model.config.id2label, label, model)
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = "roberta" if model == ROBERTA_ID else f"classifier:{Path(model).name}"
        self.description = f"{model}: probability of the '{label}' label (as evaluate's toxicity measurement)"

    @torch.inference_mode()
    def score(self, texts: list[str]) -> list[float]:
        device = next(self.model.parameters()).device
        out: list[float] = []
        for i in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                [t or "" for t in texts[i : i + self.batch_size]],
                return_tensors="pt", padding=True, truncation=True, max_length=self.max_length,
            ).to(device)
            probs = self.model(**enc).logits.float().softmax(-1)  # (B, num_labels)
            out += probs[:, self.label_index].tolist()
        return out


def _label_index(id2label: dict[Any, str], label: str, model: str) -> int:
    """The index of `label` in the classifier's labels (case-insensitive)."""
    for index, name in id2label.items():
        if str(name).lower() == label.lower():
            return int(index)
    have = ", ".join(str(v) for v in id2label.values())
    raise ValueError(f"classifier '{model}' has no '{label}' label (labels: {have})")


def get_scorer(preferred: str = "roberta") -> Scorer:
    """'roberta', 'offline' or a local classifier folder; falls back to offline (saying why) when it can't load."""
    preferred = (preferred or "roberta").strip()
    if preferred == "offline":
        return OfflineScorer()
    model = ROBERTA_ID if preferred == "roberta" else preferred
    is_local = Path(model).expanduser().exists()
    if not is_local and preferred != "roberta" and model.count("/") != 1:
        raise ValueError(f"unknown toxicity scorer '{preferred}': use 'roberta', 'offline' or a classifier folder")
    if not is_local and not hub_reachable() and cached_snapshot(model) is None:
        return OfflineScorer(fallback_reason=f"the hub is not reachable to download {model}")
    try:
        return ClassifierScorer(str(Path(model).expanduser()) if is_local else model)
    except LOAD_ERRORS as e:
        return OfflineScorer(fallback_reason=f"{model} could not be loaded ({type(e).__name__}: {e})")
