"""The models a stage samples from: the base policy (LoRA adapters off) or a PPO run's adapters on it, loaded once per
policy, and the one sampling loop Compare, Feedback and PPO's evaluation share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from safetensors.torch import save_file
import torch
from torch import nn

from lab import models
from lab.generate import GenerateConfig, adapter_mode, encode_chat, generate_batch, load_dtype, model_device
from lab.rl import ValueHead, logprobs_from_logits
from lab.runs import ACTIVE, Run, list_runs, open_run

PPO_KIND = "ppo"
BASE = "base"
VALUE_HEAD_FILE = "value_head.safetensors"  # next to a PPO run's adapters
STEP_MARK = "@"  # "ppo-3@32": run ppo-3's adapters as saved at its evaluation of step 32
STEP_DIR = "step-{}"  # under a PPO run's model/ folder: the adapters kept at each evaluation
BEST_OF = "best-of-"  # "base best-of-4": the base model's best of 4 answers by the comparison's reward model
MAX_BEST_OF = 8


@dataclass(frozen=True)
class Side:
    """One model of the comparison: a policy, with one PPO run's adapters or with none (the base)."""

    key: str  # "a" or "b": the adapter name too
    label: str  # "base" or the run id
    policy: str  # model spec
    adapter_dir: Path | None
    reward_model: str  # the reward model its run trained against ("" for the base)
    best_of: int = 1  # > 1: each answer is the reward model's pick of this many (the base only; `base best-of-N`)


def ppo_runs(root: Path | None = None) -> list[Run]:
    """Finished PPO runs that saved adapters, newest first."""
    runs = list_runs(kind=PPO_KIND, root=root)
    return [r for r in runs if _adapter_ready(r) and r.status().get("status") not in ACTIVE]


def _adapter_ready(run: Run) -> bool:
    return (run.model_dir / "adapter_config.json").exists()


def open_ppo_run(choice: str, root: Path | None = None) -> Run:
    """A PPO run by id or folder; ValueError says what is missing."""
    run = open_run(choice.strip(), root)
    config = run.config
    if not config.get("policy"):
        raise ValueError(f"run '{run.id}' has no 'policy' in its config.json: is it a PPO run?")
    if not _adapter_ready(run):
        raise ValueError(
            f"run '{run.id}' has no saved adapters (model/adapter_config.json): is the PPO run finished?"
        )
    return run



def split_step(choice: str) -> tuple[str, int | None]:
    """'ppo-3@32' or 'ppo-3 @ step 32' -> ('ppo-3', 32); a plain run -> (run, None)."""
    run, mark, step = choice.rpartition(STEP_MARK)
    if not mark:
        return choice.strip(), None
    step = step.strip().removeprefix("step").strip()
    if not step.isdigit():
        raise ValueError(f"'{choice}': after '{STEP_MARK}' give the step of one of the run's evaluations, e.g. ppo-3@32")
    return run.strip(), int(step)


def step_of(adapter_dir: Path) -> int | None:
    """The evaluation step an adapter folder was kept at (model/step-N/ -> N); None for any other folder."""
    prefix = STEP_DIR.format("")
    name = Path(adapter_dir).name
    return int(name[len(prefix):]) if name.startswith(prefix) and name[len(prefix):].isdigit() else None


def kept_steps(run_dir: Path) -> list[int]:
    """The steps whose adapters a PPO run kept at its evaluations (model/step-N/ with an adapter_config.json)."""
    model = Path(run_dir) / "model"
    return sorted(step for p in model.glob(STEP_DIR.format("*"))
                  if (step := step_of(p)) is not None and (p / "adapter_config.json").exists())


def step_adapter_dir(run: Run, step: int) -> Path:
    """The adapters a PPO run saved at its evaluation of `step` (model/step-N/); ValueError names the steps kept."""
    folder = run.model_dir / STEP_DIR.format(step)
    if not (folder / "adapter_config.json").exists():
        kept = kept_steps(run.path)
        raise ValueError(f"run '{run.id}' kept no adapters at step {step}"
                         + (f" (it kept steps {', '.join(map(str, kept))})" if kept else " (it kept none)"))
    return folder


def best_of(choice: str) -> int | None:
    """'base best-of-4' -> 4; any other choice -> None. ValueError outside 2..MAX_BEST_OF."""
    head, mark, n = choice.strip().partition(BEST_OF)
    if not mark or head.strip() != BASE:
        return None
    if not n.strip().isdigit() or not 2 <= int(n) <= MAX_BEST_OF:
        raise ValueError(f"'{choice}': best-of-N takes N from 2 to {MAX_BEST_OF}, e.g. {BASE} {BEST_OF}4")
    return int(n)


def best_of_label(n: int) -> str:
    return f"{BASE} {BEST_OF}{n}"


def best_of_kl(n: int) -> float:
    """The KL from the base of picking the best of n samples: log n - (n - 1) / n nats (Stiennon et al. 2020, an
    upper bound that is exact for distinct samples)."""
    return math.log(n) - (n - 1) / n


def side_choice(side: Side) -> str:
    """How a prepared config names a side: 'base' (or 'base best-of-N'), or the run folder (with @STEP for an
    evaluation's adapters)."""
    if side.best_of > 1:
        return best_of_label(side.best_of)
    if side.adapter_dir is None:
        return BASE
    if side.adapter_dir.name.startswith("step-"):
        return f"{side.adapter_dir.parent.parent}{STEP_MARK}{side.adapter_dir.name.removeprefix('step-')}"
    return str(side.adapter_dir.parent)


def resolve_sides(model_a: str, model_b: str, root: Path | None = None) -> tuple[Side, Side]:
    """Model A and Model B, each 'base' or a PPO run (id or folder); 'base' means the policy of the other side's run
    with its adapters disabled; 'base best-of-N' the base's best of N answers by the comparison's reward model; 'run@N'
    the run's adapters as saved at its evaluation of step N."""
    choices = {"a": model_a.strip(), "b": model_b.strip()}
    picks = {k: best_of(c) for k, c in choices.items()}
    steps = {k: split_step(c) for k, c in choices.items()}
    runs = {k: None if c == BASE or picks[k] else open_ppo_run(steps[k][0], root) for k, c in choices.items()}
    policy_of = {k: r.config["policy"] for k, r in runs.items() if r is not None}
    sides = []
    for key, run in runs.items():
        if run is None:
            other = policy_of["b" if key == "a" else "a"]
            n = picks[key] or 1
            sides.append(Side(key, best_of_label(n) if n > 1 else BASE, other, None, "", n))
            continue
        reward = str(run.config.get("reward_model") or "")
        step = steps[key][1]
        if step is None:
            sides.append(Side(key, run.id, run.config["policy"], run.model_dir, reward))
        else:
            sides.append(Side(key, f"{run.id} @ step {step}", run.config["policy"], step_adapter_dir(run, step),
                              reward))
    return sides[0], sides[1]


def load_policies(sides: tuple[Side, Side], quantize_4bit: bool, precision: str = "auto") -> dict[str, tuple[Any, Any]]:
    """One model per distinct policy, carrying the adapters of every run that uses it (named by side key)."""
    with models.LOAD_LOCK:  # one model load at a time in the process (transformers' loads share globals)
        from peft import PeftModel  # heavy: imported when models load, not when the app starts

        loaded: dict[str, tuple[Any, Any]] = {}
        for policy in dict.fromkeys(s.policy for s in sides):
            model = models.load_causal_lm(policy, quantize_4bit=quantize_4bit, dtype=load_dtype(precision))
            for side in (s for s in sides if s.policy == policy and s.adapter_dir is not None):
                if isinstance(model, PeftModel):
                    model.load_adapter(str(side.adapter_dir), adapter_name=side.key, is_trainable=False)
                else:
                    model = PeftModel.from_pretrained(model, str(side.adapter_dir), adapter_name=side.key)
            loaded[policy] = (model.eval(), models.load_tokenizer(policy))
        return loaded



def sample(side: Side, policies: dict[str, tuple[Any, Any]], prompts: list[str], gen: GenerateConfig,
           seed: int, cut_mark: str = "", should_stop: Callable[[], bool] | None = None) -> list[str]:
    """One answer per prompt from `side`: its policy with its adapters on (the base: all adapters off); `cut_mark`
    ends an answer cut at the token limit; `should_stop` ends generation early (a job's Stop)."""
    model, tokenizer = policies[side.policy]
    with adapter_mode(model, side.key if side.adapter_dir else None):
        return generate_batch(model, tokenizer, prompts, gen, seed, cut_mark, should_stop)


def answer_nll(model: Any, tokenizer: Any, prompts: Sequence[str], answers: Sequence[str],
               batch_size: int = 8) -> list[float | None]:
    """Each answer's mean negative log-likelihood in nats a token, after its prompt encoded as generation encodes
    it (`encode_chat`), under `model` as it is (choose the weights with adapter_mode: the base for "how plausible
    the reference finds it"). None for an empty answer. Left-padded, with generate's positions."""
    device = model_device(model)
    replies = [tokenizer(a, add_special_tokens=False).input_ids for a in answers]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float | None] = []
    was_training = model.training
    model.eval()
    # PPO's rule: where the hardware has bf16 it stores the frozen matmul weights in bf16 (models.cast_frozen_weights)
    # and runs every pass under bf16 autocast; so must this one, or an fp32 residual stream meets a bf16 weight (the
    # cpu preset on AVX512-BF16). Elsewhere, and for a model kept in fp32, no autocast, as before.
    bf16 = models.bf16_native(device) and any(p.dtype == torch.bfloat16 for p in model.parameters())
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, len(replies), batch_size):
                enc = encode_chat(tokenizer, prompts[i:i + batch_size], "cpu")
                queries = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
                rows = [q + r for q, r in zip(queries, replies[i:i + batch_size])]
                width = max(len(r) for r in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for j, row in enumerate(rows):
                    ids[j, width - len(row):], mask[j, width - len(row):] = torch.tensor(row, dtype=torch.long), 1
                ids, mask = ids.to(device), mask.to(device)
                # only the positions that predict an answer token need the vocabulary head (a fifth of the
                # 135M model's work a token): the answers end every row, so the last `keep` positions hold them
                keep = max(len(r) for r in replies[i:i + batch_size]) + 1
                logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               use_cache=False, logits_to_keep=keep).logits  # (B, keep, V): positions width-keep..
                logp = logprobs_from_logits(logits[:, :-1], ids[:, width - keep + 1:])  # scores tokens width-keep+1..
                for j, reply in enumerate(replies[i:i + batch_size]):  # the answer: the last len(reply) columns
                    out.append(round(float(-logp[j, keep - 1 - len(reply):].mean()), 4) if reply else None)
    finally:
        model.train(was_training)
    return out


def reference_nll(side: Side, policies: dict[str, tuple[Any, Any]], prompts: list[str],
                  answers: list[str]) -> list[float | None]:
    """How implausible `side`'s policy with every adapter off (the reference PPO was held to) finds each answer:
    mean negative log-likelihood, nats a token."""
    model, tokenizer = policies[side.policy]
    with adapter_mode(model, None):
        return answer_nll(model, tokenizer, prompts, answers)


# ---------------------------------------------------------------- the policy PPO trains


def load_trainable_policy(spec: str, quantize_4bit: bool, lora: dict[str, Any]) -> tuple[nn.Module, Any]:
    """The policy to train: 4-bit base + LoRA on CUDA, full precision + LoRA on CPU; and its tokenizer."""
    tokenizer = models.load_tokenizer(spec, padding_side="left")
    base = models.load_causal_lm(spec, quantize_4bit=quantize_4bit)
    lora = dict(lora)
    model = models.add_lora(base, r=lora.pop("r", 16), alpha=lora.pop("alpha", 32), dropout=lora.pop("dropout", 0.05),
                            **lora)
    return model.eval(), tokenizer


def new_value_head(model: nn.Module) -> ValueHead:
    """A value head for the policy's hidden size, on the policy's device, its output zero at first."""
    device = next(p for p in model.parameters()).device
    return ValueHead(model.config.hidden_size).to(device)


def save_policy(model: nn.Module, value_head: ValueHead, tokenizer: Any, folder: Path) -> None:
    """LoRA adapters (peft save_pretrained), the value head and the tokenizer in folder."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    save_file({k: v.detach().cpu().contiguous() for k, v in value_head.state_dict().items()}, folder / VALUE_HEAD_FILE)
