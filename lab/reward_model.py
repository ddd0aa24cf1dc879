"""A trained reward model: load it from a run, score texts, and the score function PPO optimises against.

Texts are HH dialogues ("\\n\\nHuman: … \\n\\nAssistant: …"), truncated from the LEFT, so a long dialogue loses its
oldest turns and keeps the final answers, which are all that differ within a pair. `lab.reward` trains these.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import torch

from lab import models
from lab.data import Pair, is_helpful_subset, load_pairs, to_hh
from lab.runs import runs_root

META_FILE = "lab_reward.json"  # next to the weights: how texts were encoded, so a model folder reloads alone
ANSWER_MARK = "\n\nAssistant:"
JUDGE_DIR = "judge"  # in a reward run folder: the second reward model, trained on pairs the proxy never saw

ScoreFn = Callable[[list[str], list[str]], list[float]]

logger = logging.getLogger(__name__)



def format_for_reward(prompt: str, response: str) -> str:
    """A plain user prompt and a model response as the HH dialogue the reward model was trained on."""
    hh_prompt, answer = to_hh(prompt, response.strip())
    return hh_prompt + answer


def pair_texts(pair: Pair | Sequence[str]) -> tuple[str, str]:
    """(chosen text, rejected text) of a Pair or a (chosen, rejected) tuple."""
    if isinstance(pair, Pair):
        return pair.chosen_text, pair.rejected_text
    chosen, rejected = pair
    return chosen, rejected


def prepare_tokenizer(tokenizer: Any) -> Any:
    """Right padding (the collator's side) and LEFT truncation, so the final answers survive."""
    tokenizer.padding_side = "right"
    tokenizer.truncation_side = "left"
    return tokenizer


def encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    """Token ids with the tokenizer's special tokens kept ([CLS]/BOS first); the oldest content dropped first."""
    # Special tokens are added after truncation, so [CLS] ... [SEP] stay and only dialogue text is cut.
    return tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]


def split_final_answer(text: str) -> tuple[str, str]:
    """(dialogue up to and including the last "Assistant:", the final answer); ("", text) if there is none."""
    cut = text.rfind(ANSWER_MARK)
    return (text[: cut + len(ANSWER_MARK)], text[cut + len(ANSWER_MARK) :]) if cut >= 0 else ("", text)


def uses_segments(tokenizer: Any, answer_segment: bool) -> bool:
    """Whether texts go in as two segments: asked for, and the backbone has segment (token type) embeddings."""
    return answer_segment and "token_type_ids" in tokenizer.model_input_names


def encode_inputs(tokenizer: Any, texts: Sequence[str], max_length: int, segments: bool) -> list[dict[str, list[int]]]:
    """Model inputs per text. With `segments`, "[CLS] dialogue [SEP] final answer [SEP]" and token types 0/1:
    both texts of a pair share the dialogue, and the segment embedding marks the answer, the only part that
    differs (held-out accuracy on real HH pairs, 5 folds, same seed, last weights: 0.621 vs 0.615 as one text;
    0.625 vs 0.621 with the weights averaged). Too long: the longer
    segment is cut first, the dialogue from its oldest turns."""
    if not texts:
        return []
    if not segments:
        return [{"input_ids": ids} for ids in encode(tokenizer, texts, max_length)]
    dialogues, answers = zip(*map(split_final_answer, texts))
    out = tokenizer(list(dialogues), list(answers), truncation="longest_first", max_length=max_length,
                    padding=False, return_token_type_ids=True)
    return [{"input_ids": ids, "token_type_ids": types} for ids, types in zip(out["input_ids"], out["token_type_ids"])]



def model_max_length(model: Any, tokenizer: Any) -> int:
    """The longest input the backbone takes (its position table, else the tokenizer's limit)."""
    positions = getattr(model.config, "max_position_embeddings", None)
    roberta = getattr(model.config, "model_type", "") in ("roberta", "xlm-roberta", "camembert")
    if isinstance(positions, int) and roberta:
        positions -= 2  # roberta's positions start after its padding index: 514 in the table, 512 usable
    limits = [positions, getattr(tokenizer, "model_max_length", None)]
    usable = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]
    return min(usable) if usable else 512


def backbone_limit(spec: str, tokenizer: Any) -> int:
    """`model_max_length` of a backbone from its config alone (before its weights load)."""
    with models.LOAD_LOCK:  # a first lazy import of transformers races other loads
        from transformers import AutoConfig  # heavy: only a reward job reads a backbone's config

        config = AutoConfig.from_pretrained(models.local_path(spec), trust_remote_code=False)
    return model_max_length(SimpleNamespace(config=config), tokenizer)


# ---------------------------------------------------------------- the trained model


class RewardModel:
    """A trained reward model: texts in, one float each; higher means preferred. With `extra` models (an
    ensemble trained on the same pairs with other seeds) a text's reward is the mean of the members' rewards."""

    def __init__(self, model: Any, tokenizer: Any, max_length: int = 512, path: Path | None = None,
                 answer_segment: bool = False, extra: Sequence[Any] = ()) -> None:
        self.model = model.eval()
        self.members = [self.model, *(m.eval() for m in extra)]
        self.tokenizer = prepare_tokenizer(tokenizer)
        self.max_length = min(max_length, model_max_length(model, tokenizer))
        self.path = path
        self.segments = uses_segments(self.tokenizer, answer_segment)  # must match how it was trained

    @classmethod
    def load(cls, path: str | Path) -> RewardModel:
        """Load from a run folder or its model/ folder; ValueError if there is no saved model."""
        folder = model_folder(path)
        meta_path = folder / META_FILE
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        tokenizer = models.load_tokenizer(str(folder), padding_side="right")
        loaded = []
        for sub in [".", *meta.get("members", [])]:  # the first model in the folder itself, other members below it
            model = models.load_reward_backbone(str(folder / sub))
            if model.config.num_labels != 1:
                raise ValueError(f"'{path}' is a classifier with {model.config.num_labels} outputs, not a reward model")
            if model.config.pad_token_id is None:
                model.config.pad_token_id = tokenizer.pad_token_id
            loaded.append(model.to("cuda") if models.has_cuda() else model)
        # Models saved before the two-segment input had no "answer_segment" key: they read one text.
        return cls(loaded[0], tokenizer, int(meta.get("max_length", 512)), folder, bool(meta.get("answer_segment")),
                   extra=loaded[1:])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def score(self, texts: Sequence[str], batch_size: int = 32) -> list[float]:
        """One reward per text, in order; batches are formed by length so little padding is computed."""
        inputs = encode_inputs(self.tokenizer, texts, self.max_length, self.segments)
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]["input_ids"]), reverse=True)
        scores = [0.0] * len(inputs)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self.tokenizer.pad([inputs[i] for i in chunk], return_tensors="pt")
            batch = {k: v.to(self.device) for k, v in batch.items()}
            logits = (sum(m(**batch).logits[:, 0].float() for m in self.members) / len(self.members)).cpu().tolist()
            for i, value in zip(chunk, logits):
                scores[i] = value
        return scores

    def pair_scores(self, pairs: Sequence[Pair | Sequence[str]], batch_size: int = 32) -> list[tuple[float, float]]:
        """(reward of chosen, reward of rejected) per pair."""
        texts = [t for p in pairs for t in pair_texts(p)]
        scores = self.score(texts, batch_size)
        return list(zip(scores[0::2], scores[1::2]))

    def margins(self, pairs: Sequence[Pair | Sequence[str]], batch_size: int = 32) -> list[float]:
        """Reward of chosen minus reward of rejected, per pair."""
        return [c - r for c, r in self.pair_scores(pairs, batch_size)]


def model_folder(path: str | Path) -> Path:
    """The model/ folder of a run folder, or the folder itself if it holds a model."""
    path = Path(path).expanduser()
    if (path / "model" / "config.json").exists():
        return path / "model"
    if (path / "config.json").exists() and ((path / META_FILE).exists() or not (path / "status.json").exists()):
        return path
    if (path / "status.json").exists():
        raise ValueError(f"run '{path.name}' has no saved reward model yet (still training, or it failed)")
    raise ValueError(f"'{path}' is neither a reward run folder nor a model folder")


def load_reward_model(path: str | Path) -> RewardModel:
    """`RewardModel.load`, for stages that only need scores."""
    return RewardModel.load(path)


def judge_path(reward_run: str | Path | None, preset_judge: str = "") -> str:
    """The judge for a proxy: the judge/ folder its reward run trained, else the preset's (a hub id on the Space),
    else "" (none)."""
    if reward_run:
        folder = Path(reward_run).expanduser()
        folder = folder.parent if folder.name == "model" else folder
        if (folder / JUDGE_DIR / "config.json").exists():
            return str(folder / JUDGE_DIR)
    return preset_judge or ""


def judge_or_none(spec: str, progress: Callable[[float, str], None]) -> RewardModel | None:
    """The judge named by `spec`, or None when there is none or it cannot be loaded now (a public judge while the
    hub is unreachable): Compare and PPO's evaluations go on without it and say so through `progress`."""
    if not spec:
        return None
    try:
        return load_judge(spec)
    except (ValueError, OSError) as e:
        logger.warning("going on without the judge: %s", e)
        progress(0, f"going on without the judge: '{spec}' could not be loaded")
        return None


def load_judge(spec: str) -> RewardModel:
    """A judge by folder (a reward run, a judge/ folder) or by hub id: a public reward model is a sequence
    classifier with one output, read as (dialogue, answer) segments like OpenAssistant's deberta reward models."""
    path = Path(spec).expanduser()
    if path.exists():
        return RewardModel.load(path)
    model = models.load_reward_backbone(spec)
    if model.config.num_labels != 1:
        raise ValueError(f"'{spec}' is a classifier with {model.config.num_labels} outputs, not a reward model")
    tokenizer = models.load_tokenizer(spec, padding_side="right")
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return RewardModel(model.to("cuda") if models.has_cuda() else model, tokenizer, 512, None, answer_segment=True)


def find_reward_model(path: str, root: Path | None = None) -> str:
    """A reward model's folder, given as a path or as a run id under root (default: the runs folder), as an absolute
    path; ValueError when there is no such folder (`model_folder` checks that it holds a saved model)."""
    candidate = Path(path).expanduser()
    by_id = (Path(root) if root else runs_root()) / path
    if not candidate.exists() and not candidate.is_absolute() and by_id.exists():
        candidate = by_id  # a run id from the runs folder
    if not candidate.exists():
        raise ValueError(f"reward model '{path}' does not exist (moved or deleted?): choose another reward run")
    return str(candidate.resolve())


def reward_run_config(path: str | Path | None, root: Path | None = None) -> dict:
    """A reward run's config.json, given as in `find_reward_model`; {} when there is none to read (no such folder, a
    bare model folder, a hub id, a file cut off mid-write)."""
    if not path:
        return {}
    try:
        folder = Path(find_reward_model(str(path), root))
    except ValueError:
        return {}
    folder = folder.parent if folder.name == "model" else folder
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def reward_backbone(path: str | Path | None, root: Path | None = None) -> str | None:
    """The backbone a reward run trained (its config's `backbone`); None when it cannot be told."""
    backbone = reward_run_config(path, root).get("backbone")
    return backbone if isinstance(backbone, str) else None


REFUSAL_PREFERENCE_OK = 0.3  # above this, the model rewards refusing ordinary requests (measured: 1.0 on hh harmless)


# lab.augment's subsets (its SUBSET, EVASION_SUBSET, FRAMED_SUBSET, POLICY_SUBSET, REFUSAL_OVER_HARM_SUBSET; a
# later layer): pairs made from the others, not a kind of request
AUGMENTED_SUBSETS = ("broken-text", "evasion", "framed", "policy-answer", "refusal-over-harm")


@functools.cache
def _bundled_train_pairs(part: str) -> int:
    """The training pairs of a bundled part (83 helpful, 83 harmless), read once, and only when a warning is shown."""
    return sum(p.split == "train" for p in load_pairs(part).pairs)


# Written declines beside the others: a third as many. Read blind on the shared hh pairs (GRPO, seeds 4-6, two
# samplings, stop 45) the harmful requests went to RLHF 68-47 with `+bundled:harmless*4` (260 written declines beside
# 744 hh harmless-base pairs), 56-53 without; RLOO on the same mix at stop 39: 37-27 (README).
DECLINES_SHARE = 1 / 3


def balanced_mix(data: str, subsets: dict[str, int] | None = None) -> str:
    """The data source that fixes one-sided preferences: `data` with the bundled helpful pairs mixed in, repeated
    until they are about as many as the training pairs of other kinds (`subsets`: a run's train counts), and the demo
    set's written declines (`bundled:harmless`: a harmful request declined kindly, with something better offered)
    about a third as many as those, so the reward model also sees what a good answer to a harmful request is."""
    others = (request_balance(subsets) or (0, 0))[1]
    helpful, declines = _bundled_train_pairs("bundled:helpful"), _bundled_train_pairs("bundled:harmless")
    times = max(1, min(100, round(others / helpful))) if helpful else 1
    written = max(1, min(100, round(others * DECLINES_SHARE / declines))) if declines else 1
    base = (data or "DATA").split("+")[0]
    return (f"{base}+bundled:helpful" + (f"*{times}" if times > 1 else "") + "+bundled:harmless"
            + (f"*{written}" if written > 1 else ""))


def request_balance(subsets: dict[str, int] | None) -> tuple[int, int] | None:
    """(ordinary-request pairs, other written pairs) among a run's training pairs (`subsets`: its train counts),
    augmented pairs not counted; None where the run did not count them."""
    if not subsets:
        return None
    helpful = sum(n for name, n in subsets.items() if is_helpful_subset(name))
    others = sum(n for name, n in subsets.items() if not is_helpful_subset(name) and name not in AUGMENTED_SUBSETS)
    return helpful, others


def refusal_advice(data: str, subsets: dict[str, int] | None = None, quote: str = "'") -> str:
    """Why a reward model that rewards refusing does, and the fix. One-sided data (ordinary requests fewer than half
    the others, e.g. hh-rlhf's harmless-base alone): mix helpful pairs in. Balanced data (the bundled pairs: 83 and
    83) is not the cause: at stop 40 one default reward model of five (seed 17) preferred a canned refusal on 42% of
    the ordinary probes, from the refusal-over-harm pairs' canned refusals on the chosen side; another seed, or
    evasion pairs 0.5, gave 0% (its PPO run did not refuse more than base: 1 of 48 against 3, with the relevance term;
    README, stop 40). `quote` marks the data source and setting (a backtick where Markdown shows it)."""
    balance = request_balance(subsets)
    if balance and balance[0] >= balance[1] / 2:
        helpful, others = balance
        cause = (", likely from the refusal-over-harm pairs, which rank a canned refusal above a harmful answer"
                 if (subsets or {}).get("refusal-over-harm") else "")
        return (f"PPO against it may learn to refuse. Its data is not one-sided ({helpful} ordinary-request pairs "
                f"beside {others} others): this seed's model learned it{cause}. Train it again with another seed, or "
                f"with more evasion pairs ({quote}evasion_pairs 0.5{quote}).")
    return (f"PPO against it will learn to refuse: its preference data was one-sided, like hh-rlhf's harmless-base. "
            f"Mix helpful pairs in, as many as the others, and written declines, a third as many (data source "
            f"{quote}{balanced_mix(data, subsets)}{quote}).")


def refusal_warning(path: str | Path) -> str:
    """'' or a warning, when the reward run at `path` (its folder or its model/) scored canned refusals above good
    answers on the ordinary probe requests: PPO against it learns to refuse."""
    folder = Path(path)
    for status_file in (folder / "status.json", folder.parent / "status.json"):
        if status_file.exists():
            try:
                status = json.loads(status_file.read_text())
            except (json.JSONDecodeError, OSError):  # a status cut off mid-write: no check to report, PPO may go on
                return ""
            summary = status.get("summary") or {}
            share = summary.get("refusal_preference")
            if isinstance(share, (int, float)) and share > REFUSAL_PREFERENCE_OK:
                data = str(summary.get("data") or (status.get("config") or {}).get("data") or "")
                advice = refusal_advice(data, (summary.get("subsets") or {}).get("train"))
                return (f"this reward model prefers a canned refusal to a good answer in {share:.0%} of its "
                        f"comparisons on ordinary requests. {advice}")
            return ""
    return ""


def reward_texts(prompts: Sequence[str], answers: Sequence[str]) -> list[str]:
    """Each prompt with its answer as the HH dialogue a reward model reads."""
    return [format_for_reward(p, a) for p, a in zip(prompts, answers)]


def reward_score_fn(reward_model_path: str | Path) -> ScoreFn:
    """score_fn from a reward run: the prompt and response as HH text, scored with the reward model's tokenizer."""
    reward_model = load_reward_model(reward_model_path)

    def score(prompts: list[str], responses: list[str]) -> list[float]:
        return reward_model.score(reward_texts(prompts, responses))

    return score
