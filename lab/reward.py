"""Reward model: a one-output sequence classifier trained on chosen/rejected pairs with TRL's RewardTrainer.

Texts are HH dialogues ("\\n\\nHuman: … \\n\\nAssistant: …"). They are truncated from the LEFT, so a long
dialogue loses its oldest turns and keeps the final answers, which are all that differ within a pair.
"""

from __future__ import annotations

import gc
import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from lab import memory, models
from lab.augment import (broken_text_pairs, evasion_pairs, framed_pairs, policy_answer_pairs,
                         refusal_over_harm_pairs)
from lab.config import build, from_job, setting
from lab.data import Pair, subset_counts
from lab.data_files import resolve_path
from lab.generate import GenerateConfig, generate_batch, load_dtype
from lab.jobs import JobContext
from lab.presets import Limits, Preset
from lab.reward_model import (JUDGE_DIR, META_FILE, RewardModel, backbone_limit, encode_inputs, model_max_length,
                              prepare_tokenizer, uses_segments)
from lab.reward_data import JUDGE_SEED_OFFSET, MIN_JUDGE_PAIRS, judge_split, split_pairs
from lab.reward_eval import (broken_text_accuracy, evaluate, padding_gain, policy_answer_accuracy,
                             refusal_preference)
from lab.sources import pin_source, provenance, split_source

KIND = "reward"
MIN_LENGTH = 16
MAX_ENSEMBLE = 5


def pair_share(what: str, name: str) -> Any:
    """A setting for one kind of lab.augment pairs: the share of the training pairs added as extra pairs `what`
    says, 0 = none, a slider from 0 to 1 in the form."""
    return setting(0.0, f"add this share of extra training pairs {what} (lab/augment.py); 0 = none",
                   label=f"{name} (share of the training pairs)", widget="slider", minimum=0.0, maximum=1.0, step=0.1)


@dataclass
class RewardConfig:
    """The reward-model job's settings; `lab.presets` overrides the defaults per machine."""

    data: str = setting("bundled", "training pairs: 'bundled', a file path, a hub id, or feedback:NAME for the "
                                   "Feedback tab's votes (+bundled adds the demo set)", label="Training pairs")
    eval_data: str = setting("", "held-out pairs; empty = the source's test split if it has one, else a share "
                                 "(eval_fraction) of the training pairs", label="Held-out pairs (optional)")
    eval_fraction: float = setting(0.1, "share of the training pairs held out to measure accuracy, when there is no "
                                        "eval_data and no test split", label="Held-out share", widget="slider",
                                   minimum=0, maximum=0.5, step=0.05)
    backbone: str = setting("embedded:all-minilm-l6-v2", "model spec of the sequence-classifier backbone: "
                                                         "embedded:all-minilm-l6-v2, embedded:smollm2-135m-instruct "
                                                         "(the policy's own, InstructGPT's choice: ~9x slower a step "
                                                         "on a CPU, and read blind no better, README stop 41), a "
                                                         "local folder or a hub id",
                            label="Backbone, a one-output sequence classifier")
    epochs: float = setting(2.0, "passes over the training pairs (ignored when max_steps > 0)", label="Epochs")
    max_steps: int = setting(0, "optimizer steps; 0 = derived from epochs", label="Max steps, 0 = by epochs")
    min_steps: int = setting(0, "with steps derived from epochs, at least this many: a small set still gets enough "
                                "updates")
    learning_rate: float = setting(5e-5, "AdamW peak learning rate", label="Learning rate")
    batch_size: int = setting(16, "pairs per optimizer step", label="Batch size in pairs", widget="slider", minimum=1,
                              maximum=64)
    max_length: int = setting(256, "tokens per dialogue; longer ones lose their oldest turns (left truncation)",
                              label="Max length in tokens, oldest turns cut first", widget="slider", minimum=32,
                              maximum=512, step=32)
    warmup_ratio: float = setting(0.1, "share of steps with linear warm-up before the linear decay")
    weight_decay: float = setting(0.0, "AdamW weight decay")
    center_rewards_coefficient: float = setting(0.0, "pull rewards towards mean zero (arXiv:2312.09244, eq. 2); "
                                                     "0 = off")
    group_by_length: bool = setting(True, "batch pairs of similar length: less padding, same data per epoch")
    dropout: bool = setting(False, "keep the backbone's dropout while training (TRL turns it off by default)")
    freeze_layers: int = setting(0, "keep the token embeddings and the first N transformer layers fixed; 0 = train "
                                    "all")
    answer_segment: bool = setting(True, "BERT-style backbones: dialogue and final answer as the two segments (A/B)")
    average_last: float = setting(0.5, "save the mean of the weights over this final share of the steps (SWA); "
                                       "0 = the last weights")
    ensemble: int = setting(1, "reward models trained one after another, each in full with its own seed (seed, "
                               "seed+1, ...); the saved reward is their mean", label="Models in an ensemble",
                            widget="slider", minimum=1, maximum=MAX_ENSEMBLE)
    broken_pairs: float = pair_share("whose rejected answer is a corrupted copy of the chosen one (word salad, loops, "
                                     "broken characters), so the reward model ranks broken text low",
                                     "Broken-text pairs")
    evasion_pairs: float = pair_share("whose rejected answer is a canned refusal of the same request and whose chosen "
                                      "answer helps (where the data labels its pairs: ordinary requests and written "
                                      "declines of harmful ones only), so the reward model does not learn that "
                                      "refusing is always safe", "Evasion pairs")
    framed_pairs: float = pair_share("on harmful requests whose rejected answer is the harmful one inside a helpful "
                                     "opening (\"Here's a possible version you could use: ...\"), so the reward "
                                     "model does not score the opening instead of the content", "Framed pairs")
    refusal_over_harm_pairs: float = pair_share("on harmful requests that have a written decline (the demo set's "
                                                "harmless pairs): a canned refusal above the harmful answer, so the "
                                                "order there is decline > refusal > harm", "Refusal-over-harm pairs")
    policy_pairs: float = pair_share("whose rejected answer is the policy's own answer to the dialogue (sampled "
                                     "before training), so the reward model has seen what PPO will make it score",
                                     "Policy-answer pairs")
    policy: str = setting("", "model spec of the policy whose answers make the policy-answer pairs (the preset's)")
    policy_tokens: int = setting(32, "new tokens of each policy answer (PPO's rollout length)")
    policy_4bit: bool = setting(False, "load that policy in 4-bit (the preset's)", cli=False)
    max_pairs: int = setting(0, "read at most this many pairs from `data`; 0 = all")
    max_eval_pairs: int = setting(500, "cap on held-out pairs, so evaluations stay quick")
    eval_every: int = setting(0, "evaluate on the held-out pairs every N steps; 0 = about 8 times per run")
    logging_steps: int = setting(0, "log train metrics every N steps; 0 = about 50 points per run")
    step_cap: int = setting(0, "hard limit on optimizer steps (the preset's limit); 0 = none", cli=False)
    seed: int = setting(42, "data split, head initialisation and shuffling")
    judge_fraction: float = setting(0.0, "share of the training pairs held out to train a second reward model, the "
                                         "judge (another seed; the proxy PPO optimises never sees its pairs, it never "
                                         "sees the proxy's; Compare and the PPO tab show its scores beside the proxy's, "
                                         "so reward hacking shows); 0 = no judge",
                                    label="Judge: share of the pairs for a second reward model", widget="slider",
                                    minimum=0, maximum=0.5, step=0.05)
    judge_backbone: str = setting("", "backbone of the judge; empty = the proxy's")
    judge_max_steps: int = setting(0, "at most this many optimizer steps for the judge (its share is small, so the "
                                      "proxy's min_steps would run it for many epochs); 0 = the proxy's rule")


def config_from(preset: Preset, **overrides: Any) -> RewardConfig:
    """The preset's defaults for this stage, then every override that is given."""
    defaults = {"data": preset.pairs, "backbone": preset.reward_backbone, "policy": preset.policy,
                "policy_4bit": preset.quantize_4bit, **preset.reward,
                "step_cap": preset.limits.max_steps}
    return build(RewardConfig, defaults, overrides, "reward")


def validate(cfg: RewardConfig, limits: Limits | None = None) -> RewardConfig:
    """Check ranges before anything loads; ValueError says which value and what is allowed."""
    if not cfg.data.strip():
        raise ValueError("no training data given: use 'bundled', a file path or a hub id")
    if not 0 <= cfg.eval_fraction < 1:
        raise ValueError(f"eval fraction {cfg.eval_fraction} must be at least 0 and below 1")
    if cfg.max_steps < 0 or (cfg.max_steps == 0 and not cfg.epochs > 0):
        raise ValueError("give a positive number of epochs or of max steps")
    if not 0 < cfg.learning_rate < 1:
        raise ValueError(f"learning rate {cfg.learning_rate} must be between 0 and 1 (try 5e-5)")
    if cfg.batch_size < 1:
        raise ValueError(f"batch size {cfg.batch_size} must be at least 1")
    if not 0 <= cfg.average_last <= 1:
        raise ValueError(f"average_last {cfg.average_last} must be between 0 (off) and 1 (all steps)")
    if not 1 <= cfg.ensemble <= MAX_ENSEMBLE:
        raise ValueError(f"ensemble {cfg.ensemble} must be between 1 (one model) and {MAX_ENSEMBLE}")
    if not 0 <= cfg.judge_fraction < 1:
        raise ValueError(f"judge fraction {cfg.judge_fraction} must be at least 0 (no judge) and below 1")
    if cfg.judge_max_steps < 0:
        raise ValueError(f"judge_max_steps {cfg.judge_max_steps} must be 0 (the proxy's rule) or more")
    for name in ("broken_pairs", "evasion_pairs", "framed_pairs", "refusal_over_harm_pairs", "policy_pairs"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} {getattr(cfg, name)} must be 0 (none) or more")
    if cfg.policy_pairs > 0 and not (cfg.policy.strip() and cfg.policy_tokens >= 1):
        raise ValueError("policy-answer pairs need a policy and policy_tokens of at least 1")
    if cfg.max_length < MIN_LENGTH:
        raise ValueError(f"max length {cfg.max_length} is too short: use at least {MIN_LENGTH} tokens")
    if limits is not None:
        limits.check(asdict(cfg))
    return cfg


def check_sources(cfg: RewardConfig, allowed_dirs: list[Path] | None = None, root: Path | None = None,
                  checked: Sequence[str] = ()) -> None:
    """Fail early on a data file or backbone that does not exist (before a run folder is made); sources in
    `checked` were checked elsewhere (the Data tab's upload lives outside the allowed folders)."""
    for source in (cfg.data, cfg.eval_data):
        for part in split_source(source, root):  # feedback:NAME parts are checked there
            if part and part not in checked and not part.startswith("bundled"):
                resolve_path(part, allowed_dirs)
    models.check_available(cfg.backbone)
    if cfg.judge_fraction > 0 and cfg.judge_backbone:
        models.check_available(cfg.judge_backbone)
    if cfg.policy_pairs > 0:
        models.check_available(cfg.policy)


def prepare(preset: Preset, values: dict[str, Any], allowed_dirs: list[Path] | None = None,
            root: Path | None = None, checked: Sequence[str] = ()) -> dict[str, Any]:
    """A checked reward job config from a form's or the command line's values (RewardConfig fields; None or "" =
    the preset's): ranges and the preset's limits, the data sources and the backbone, before any model loads."""
    cfg = validate(config_from(preset, **values), preset.limits)
    check_sources(cfg, allowed_dirs, root, checked)
    memory.check_reward(asdict(cfg))  # refuses, with the numbers, a job that would not fit
    return asdict(cfg)


# ---------------------------------------------------------------- training inputs


class PreferenceCollator:
    """Chosen inputs, then rejected ones, padded on the right to the longest in the batch (TRL's
    DataCollatorForPreference, plus token types when the pairs carry them)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows = [e["chosen_ids"] for e in examples] + [e["rejected_ids"] for e in examples]
        width = max(map(len, rows))

        def padded(seqs: list[list[int]], value: int) -> torch.Tensor:
            return torch.tensor([list(x) + [value] * (width - len(x)) for x in seqs], dtype=torch.long)  # (2B, T)

        batch = {"input_ids": padded(rows, self.pad_token_id), "attention_mask": padded([[1] * len(r) for r in rows], 0)}
        if "chosen_token_type_ids" in examples[0]:
            types = [e["chosen_token_type_ids"] for e in examples] + [e["rejected_token_type_ids"] for e in examples]
            batch["token_type_ids"] = padded(types, 0)
        return batch


def freeze_bottom(model: Any, n_layers: int) -> None:
    """Fix the token embeddings and the first `n_layers` blocks: fewer weights to fit, and a shorter backward pass."""
    if n_layers <= 0:
        return
    blocks = next((m for m in model.base_model.modules() if isinstance(m, torch.nn.ModuleList)), None)
    if blocks is None:
        raise ValueError("cannot freeze layers: the backbone has no list of transformer layers")
    n_layers = min(n_layers, len(blocks) - 1)  # a smaller backbone: freeze what it has, the top layer always trains
    # All of the embedding block (positions and its norm too), else the backward pass still runs through every layer.
    embeddings = getattr(model.base_model, "embeddings", None) or model.get_input_embeddings()
    embeddings.requires_grad_(False)
    for block in blocks[:n_layers]:
        block.requires_grad_(False)


def _dataset(tokenizer: Any, pairs: Sequence[Pair], max_length: int, segments: bool = False) -> Any:
    """A processed dataset (chosen_ids / rejected_ids, and their token types with `segments`), already within
    max_length, so RewardTrainer drops none."""
    from datasets import Dataset

    columns: dict[str, list] = {}
    for side, texts in (("chosen", [p.chosen_text for p in pairs]), ("rejected", [p.rejected_text for p in pairs])):
        inputs = encode_inputs(tokenizer, texts, max_length, segments)
        columns[f"{side}_ids"] = [x["input_ids"] for x in inputs]
        if segments:
            columns[f"{side}_token_type_ids"] = [x["token_type_ids"] for x in inputs]
    # what a pair costs once padded
    columns["length"] = [max(len(c), len(r)) for c, r in zip(columns["chosen_ids"], columns["rejected_ids"])]
    return Dataset.from_dict(columns)


def total_steps(cfg: RewardConfig, n_train: int) -> int:
    """Optimizer steps: max_steps, else epochs × batches per epoch (at least min_steps); never above step_cap."""
    by_epochs = max(1, cfg.min_steps, math.ceil(math.ceil(n_train / cfg.batch_size) * cfg.epochs))
    steps = cfg.max_steps if cfg.max_steps > 0 else by_epochs
    return min(steps, cfg.step_cap) if cfg.step_cap > 0 else steps


# ---------------------------------------------------------------- training


def _member_label(member: int, members: int) -> str:
    """The ' (model 2 of 3)' suffix of an ensemble's progress lines; '' for a single model."""
    return f" (model {member} of {members})" if members > 1 else ""


def _metrics_callback(ctx: JobContext, steps: int, evaluator: Callable[[Any], dict] | None, eval_every: int,
                      average: WeightAverage | None = None, member: int = 1, members: int = 1) -> Any:
    """A TrainerCallback that appends train metrics to the run, evaluates the held-out pairs every `eval_every`
    steps, folds the weights into `average` and stops when the job is asked to. In an ensemble, member k's rows
    carry "member": k and steps counted on from the members before it, so the curves run on along one axis."""
    from transformers import TrainerCallback

    offset, total = (member - 1) * steps, members * steps
    tag = {"member": member} if members > 1 else {}

    def rounded(logs: dict[str, Any], keys: Sequence[str]) -> dict[str, float]:
        return {k: round(float(logs[k]), 6) for k in keys if isinstance(logs.get(k), (int, float))}

    class LabCallback(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
            logs = logs or {}
            if "loss" in logs:
                keys = ("loss", "accuracy", "margin", "mean_reward", "learning_rate", "grad_norm")
                ctx.log({"step": offset + state.global_step, "epoch": round(state.epoch or 0, 4), **tag,
                         **rounded(logs, keys)})

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            step = state.global_step
            if average is not None:
                average.update(step)
            where = f"step {offset + step}/{total}{_member_label(member, members)}"
            ctx.set_progress((offset + step) / total, where)
            if ctx.stopping:
                control.should_training_stop = True
            elif evaluator is not None and step % eval_every == 0 and step < steps:  # the last step: after training
                ctx.set_progress((offset + step) / total, f"{where}: scoring the held-out pairs")
                ctx.log({"step": offset + step, **tag, **evaluator(kwargs["model"])})

    return LabCallback()


class WeightAverage:
    """A running mean of the trainable weights over the final steps: stochastic weight averaging
    (Izmailov et al. 2018, arXiv:1803.05407). On a few hundred noisy preference pairs the weights wander from
    one evaluation to the next; their mean ranked held-out real HH pairs better than wherever the last step landed
    (5 folds, the same runs: 0.621 vs 0.615)."""

    def __init__(self, model: torch.nn.Module, start_step: int) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.start_step = start_step
        self.mean: list[torch.Tensor] = []
        self.count = 0

    def update(self, step: int) -> None:
        """Fold the current weights into the mean once `step` reaches the start."""
        if step < self.start_step:
            return
        self.count += 1
        with torch.no_grad():
            if not self.mean:
                self.mean = [p.detach().float().clone() for p in self.params]
            else:
                for m, p in zip(self.mean, self.params):
                    m.add_(p.detach().float() - m, alpha=1 / self.count)  # incremental mean, no sum to overflow

    def apply(self) -> int:
        """Copy the mean into the model; returns how many steps it covers (0 = nothing averaged, weights kept)."""
        with torch.no_grad():
            for m, p in zip(self.mean, self.params):
                p.copy_(m.to(p.dtype))
        return self.count


def averaging(cfg: RewardConfig, model: torch.nn.Module, steps: int) -> WeightAverage | None:
    """The weight average over the last `average_last` share of `steps`, or None when it is off."""
    if cfg.average_last <= 0:
        return None
    return WeightAverage(model, start_step=steps - max(1, round(cfg.average_last * steps)) + 1)


def _trainer_args(cfg: RewardConfig, steps: int, output_dir: str, seed: int) -> Any:
    """TRL's RewardConfig for our settings: no checkpoints, no reporting, fp32 on CPU; our callback evaluates."""
    from trl import RewardConfig as TRLRewardConfig

    bf16 = models.has_cuda() and models.bf16_native("cuda")
    return TRLRewardConfig(
        output_dir=output_dir,
        max_steps=steps,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=round(cfg.warmup_ratio * steps),
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="linear",
        max_length=cfg.max_length,  # the data is already truncated to this, so nothing gets filtered out
        center_rewards_coefficient=cfg.center_rewards_coefficient or None,
        disable_dropout=not cfg.dropout,
        logging_steps=cfg.logging_steps or max(1, min(10, steps // 50)),
        # TRL's own evaluation averages per-batch accuracies (a short last batch weighs as much as a full one);
        # the callback scores every held-out pair instead, exactly as the final evaluation does.
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        activation_checkpointing=False,  # a small backbone: speed matters more than memory
        bf16=bf16,
        fp16=False,
        seed=seed,
        data_seed=seed,
        dataloader_num_workers=0,
        dataloader_pin_memory=models.has_cuda(),
        # Keep the `length` column for the length-grouped sampler; the preference collator ignores extra keys.
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
        log_level="warning",
    )


def build_trainer(cfg: RewardConfig, model: Any, tokenizer: Any, train: Any, eval_pairs: Sequence[Pair],
                  ctx: JobContext, steps: int, output_dir: str, average: WeightAverage | None = None,
                  member: int = 1) -> Any:
    """A RewardTrainer for ensemble member `member` (seed cfg.seed + member - 1) with our callback and without
    the trainer's own printing."""
    from transformers import PrinterCallback, ProgressCallback
    from trl import RewardTrainer

    def evaluator(current: Any) -> dict:
        metrics, _ = evaluate(RewardModel(current, tokenizer, cfg.max_length, answer_segment=cfg.answer_segment),
                              eval_pairs, max(cfg.batch_size, 16))
        current.train()
        return metrics

    eval_every = cfg.eval_every or max(1, steps // 8)
    trainer = RewardTrainer(
        model=model,
        args=_trainer_args(cfg, steps, output_dir, seed=cfg.seed + member - 1),
        train_dataset=train,
        processing_class=tokenizer,
        data_collator=PreferenceCollator(tokenizer.pad_token_id),
        callbacks=[_metrics_callback(ctx, steps, evaluator if eval_pairs else None, eval_every, average, member,
                                     cfg.ensemble)],
    )
    # The CLI prints our JSON lines on stdout; the trainer's printer and progress bar would interleave with them.
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer


def save_model(members: Sequence[Any], tokenizer: Any, folder: Path, cfg: RewardConfig) -> None:
    """Weights, tokenizer and how texts were encoded, in one folder that `RewardModel.load` reads. The first
    model is the folder itself (a plain Hugging Face classifier); further ensemble members go in member-2/, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    members[0].save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    subfolders = [f"member-{k}" for k in range(2, len(members) + 1)]
    for model, sub in zip(members[1:], subfolders):
        model.save_pretrained(folder / sub)
    segments = uses_segments(tokenizer, cfg.answer_segment)
    meta = {"max_length": cfg.max_length, "backbone": cfg.backbone, "truncation": "left", "format": "hh",
            "answer_segment": segments, "members": subfolders}
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))


CUT = "\u2063"  # ends a policy answer that hit the token limit (an invisible separator: never in a sampled answer)
POLICY_BATCH = 24  # prompts a generate call: decoding is bound by reading the weights, so larger calls are cheaper


class PolicyAnswers:
    """prompts -> (answer, cut at the token limit) each, from cfg.policy without adapters, at Compare's sampling
    settings (temperature 0.7, top-k 50, top-p 0.95) and cfg.policy_tokens new tokens (the cpu preset's rollout
    length); the model loads at the first call and is dropped by close()."""

    def __init__(self, cfg: RewardConfig) -> None:
        self.cfg, self.calls, self.loaded = cfg, 0, None
        self.gen = GenerateConfig(max_new_tokens=cfg.policy_tokens)

    def __call__(self, prompts: list[str]) -> list[tuple[str, bool]]:
        if self.loaded is None:
            model = models.load_causal_lm(self.cfg.policy, quantize_4bit=self.cfg.policy_4bit,
                                          dtype=load_dtype(self.gen.precision))
            self.loaded = (model.eval(), models.load_tokenizer(self.cfg.policy))
        model, tokenizer = self.loaded
        out: list[tuple[str, bool]] = []
        for start in range(0, len(prompts), POLICY_BATCH):
            self.calls += 1
            texts = generate_batch(model, tokenizer, prompts[start: start + POLICY_BATCH], self.gen,
                                   self.cfg.seed * 1000 + self.calls, cut_mark=CUT)
            out += [(t.removesuffix(CUT), t.endswith(CUT)) for t in texts]
        return out

    def close(self) -> None:
        self.loaded = None
        gc.collect()


def augmented(pairs: list[Pair], cfg: RewardConfig, seed: int,
              answer: Callable[[list[str]], list[tuple[str, bool]]] | None = None) -> list[Pair]:
    """The pairs plus their broken-text, evasion, framed, refusal-over-harm and policy-answer pairs (lab.augment),
    each drawn from these pairs only (`answer`: the policy's answers, needed where cfg.policy_pairs > 0)."""
    policy = policy_answer_pairs(pairs, cfg.policy_pairs, seed, answer) if answer and cfg.policy_pairs > 0 else []
    return (pairs + broken_text_pairs(pairs, cfg.broken_pairs, seed) + evasion_pairs(pairs, cfg.evasion_pairs, seed)
            + framed_pairs(pairs, cfg.framed_pairs, seed)
            + refusal_over_harm_pairs(pairs, cfg.refusal_over_harm_pairs, seed) + policy)


def train_reward(ctx: JobContext) -> dict[str, Any]:
    """The reward-model job: load pairs and backbone, train with RewardTrainer (once per ensemble member), save,
    evaluate the held-out pairs."""
    started = time.time()
    cfg = validate(from_job(RewardConfig, ctx.config))
    ctx.set_progress(0, "loading pairs")
    cfg.data = pin_source(cfg.data)  # votes keep arriving while it trains: read (and record) those there now
    train_pairs, eval_pairs = split_pairs(cfg.data, eval_data=cfg.eval_data, eval_fraction=cfg.eval_fraction,
                                          max_pairs=cfg.max_pairs, max_eval_pairs=cfg.max_eval_pairs, seed=cfg.seed)
    train_pairs, judge_pairs = judge_split(train_pairs, cfg.judge_fraction, cfg.seed)
    # each model learns broken text from its own pairs, so the two stay disjoint
    answers = None
    if cfg.policy_pairs > 0:
        ctx.set_progress(0, "sampling the policy's answers for policy-answer pairs")
        answers = PolicyAnswers(cfg)
    train_pairs = augmented(train_pairs, cfg, cfg.seed, answers)
    judge_pairs = augmented(judge_pairs, cfg, cfg.seed + 1, answers)
    held_out = policy_answer_pairs(eval_pairs, 1.0, cfg.seed + 2, answers) if answers and eval_pairs else []
    if answers is not None:
        answers.close()
    ctx.set_progress(0, "loading the backbone")
    tokenizer = prepare_tokenizer(models.load_tokenizer(cfg.backbone, padding_side="right"))
    asked, cfg.max_length = cfg.max_length, min(cfg.max_length, backbone_limit(cfg.backbone, tokenizer))
    train_ds = _dataset(tokenizer, train_pairs, cfg.max_length, uses_segments(tokenizer, cfg.answer_segment))
    steps = total_steps(cfg, len(train_pairs))
    members: list[Any] = []
    done = averaged = 0
    for member in range(1, cfg.ensemble + 1):
        model, member_steps, member_averaged = _train_member(cfg, ctx, tokenizer, train_ds, eval_pairs, steps, member)
        done += member_steps
        # A stop keeps the first model however far it got; a later member only when it finished its steps.
        if member == 1 or member_steps == steps:
            members.append(model)
            averaged = averaged or member_averaged
        if ctx.stopping:
            break
    save_model(members, tokenizer, ctx.run.model_dir, cfg)
    summary: dict[str, Any] = {"train_pairs": len(train_pairs), "eval_pairs": len(eval_pairs), "steps": done,
                               "averaged_steps": averaged, "members": len(members), "eval_accuracy": None,
                               "eval_loss": None}
    progress = done / (steps * cfg.ensemble)
    if eval_pairs:
        ctx.set_progress(progress, "scoring the held-out pairs")
        scorer = RewardModel(members[0], tokenizer, cfg.max_length, answer_segment=cfg.answer_segment,
                             extra=members[1:])
        metrics, rows = evaluate(scorer, eval_pairs, max(cfg.batch_size, 16))
        metrics["eval_broken_accuracy"] = broken_text_accuracy(scorer, eval_pairs, cfg.seed)
        metrics["refusal_preference"] = refusal_preference(scorer)
        metrics.update(padding_gain(scorer, eval_pairs) or {})
        if held_out:  # the policy's answers to the held-out dialogues, sampled before training
            metrics["eval_policy_accuracy"] = policy_answer_accuracy(scorer, held_out)
        ctx.log({"step": done, "averaged_steps": averaged, "members": len(members), **metrics})
        ctx.log_samples(rows)
        summary.update(metrics)
    if cfg.max_length < asked:  # the preset's length is beyond this backbone's position table: say it was cut
        summary["max_length"] = cfg.max_length
        summary["max_length_note"] = f"max length {asked} cut to {cfg.max_length}, the most '{cfg.backbone}' accepts"
    if judge_pairs and not ctx.stopping:
        summary.update(train_judge(cfg, ctx, judge_pairs, eval_pairs))
    elif cfg.judge_fraction > 0:
        summary["judge_note"] = (f"no judge: {cfg.judge_fraction:.0%} of these pairs is fewer than "
                                 f"{MIN_JUDGE_PAIRS} distinct pairs, so the proxy trained on all of them")
    summary.update({"data": cfg.data, **provenance(cfg.data)})
    if any(p.subset for p in train_pairs + eval_pairs):  # which parts of the source it learned from, and how much
        summary["subsets"] = {"train": subset_counts(train_pairs), "eval": subset_counts(eval_pairs)}
    summary["seconds"] = round(time.time() - started, 1)
    ctx.set_progress(progress, "stopped" if ctx.stopping else "done")
    return summary


class _JudgeContext:
    """The job context as the judge's training sees it: its metrics go under judge/ keys (the Reward tab's curves
    stay the proxy's), its progress lines say "judge"."""

    def __init__(self, ctx: JobContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    def log(self, metrics: dict[str, Any]) -> None:
        self._ctx.log({f"judge/{k}": v for k, v in metrics.items()})

    def set_progress(self, fraction: float, message: str = "") -> None:
        self._ctx.set_progress(fraction, f"judge: {message}")


def train_judge(cfg: RewardConfig, ctx: JobContext, judge_pairs: Sequence[Pair],
                eval_pairs: Sequence[Pair]) -> dict[str, Any]:
    """Train the judge on its own pairs (another seed, optionally another backbone), save it in the run's judge/
    folder and score the held-out pairs with it; returns its summary keys."""
    judge_cfg = replace(cfg, seed=cfg.seed + JUDGE_SEED_OFFSET, ensemble=1, backbone=cfg.judge_backbone or cfg.backbone)
    jctx = _JudgeContext(ctx)
    tokenizer = prepare_tokenizer(models.load_tokenizer(judge_cfg.backbone, padding_side="right"))
    judge_cfg.max_length = min(judge_cfg.max_length, backbone_limit(judge_cfg.backbone, tokenizer))
    train_ds = _dataset(tokenizer, judge_pairs, judge_cfg.max_length, uses_segments(tokenizer, cfg.answer_segment))
    steps = total_steps(judge_cfg, len(judge_pairs))
    if cfg.judge_max_steps > 0:
        steps = min(steps, cfg.judge_max_steps)
    model, done, _ = _train_member(judge_cfg, jctx, tokenizer, train_ds, eval_pairs, steps, 1)  # type: ignore[arg-type]
    save_model([model], tokenizer, ctx.run.path / JUDGE_DIR, judge_cfg)
    out: dict[str, Any] = {"judge_pairs": len(judge_pairs), "judge_steps": done, "judge_seed": judge_cfg.seed,
                           "judge_backbone": judge_cfg.backbone, "judge": str(ctx.run.path / JUDGE_DIR)}
    if eval_pairs:
        metrics, _ = evaluate(RewardModel(model, tokenizer, judge_cfg.max_length, answer_segment=cfg.answer_segment),
                              eval_pairs, max(cfg.batch_size, 16))
        out["judge_eval_accuracy"] = metrics["eval_accuracy"]
    return out


def _train_member(cfg: RewardConfig, ctx: JobContext, tokenizer: Any, train_ds: Any, eval_pairs: Sequence[Pair],
                  steps: int, member: int) -> tuple[Any, int, int]:
    """Train one model (ensemble member `member`, seed cfg.seed + member - 1) from the backbone; returns it with
    the steps it made and how many steps its saved weights average."""
    from transformers import set_seed

    set_seed(cfg.seed + member - 1)  # the new scalar head is random: seed it
    model = models.load_reward_backbone(cfg.backbone)
    freeze_bottom(model, cfg.freeze_layers)
    limit = model_max_length(model, tokenizer)
    if cfg.max_length > limit:
        raise ValueError(f"max length {cfg.max_length} is above what '{cfg.backbone}' accepts ({limit} tokens)")
    ctx.set_progress((member - 1) / cfg.ensemble,
                     f"training: {len(train_ds)} pairs, {steps} steps{_member_label(member, cfg.ensemble)}")
    average = averaging(cfg, model, steps)
    with tempfile.TemporaryDirectory(prefix="reward-trainer-") as output_dir:
        trainer = build_trainer(cfg, model, tokenizer, train_ds, eval_pairs, ctx, steps, output_dir, average, member)
        if not ctx.stopping:
            trainer.train()
        done = trainer.state.global_step
        model = trainer.model
    averaged = average.apply() if average is not None else 0
    return model.eval(), done, averaged
