"""Batched generation (lab.generate) vs the seed's one-prompt-at-a-time pipeline loop, same model/prompts/lengths.

Both generate exactly `--tokens` new tokens per prompt (min_new_tokens = max_new_tokens) with the seed's sampling
settings, so they do the same work. Prints JSON lines: one per method, then the ratios.

    .venv/bin/python benchmarks/bench_generate.py [--n 32] [--tokens 32] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from lab.data import load_prompts
from lab.generate import GenerateConfig, generate_batch, load_dtype, plan_batches
from lab.models import chat_prompt, load_causal_lm, load_tokenizer

MODEL = "embedded:smollm2-135m-instruct"
SAMPLING = {"temperature": 0.7, "top_k": 50, "top_p": 0.95}  # the seed's


def per_prompt_pipeline(model, tokenizer, prompts: list[str], tokens: int) -> list[str]:
    """The seed's loop: a text-generation pipeline called once per prompt, fp32."""
    from transformers import pipeline

    pipe = pipeline("text-generation", model=model, tokenizer=tokenizer)
    out = []
    for i, prompt in enumerate(prompts):
        torch.manual_seed(i)
        result = pipe(chat_prompt(tokenizer, prompt), max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True,
                      return_full_text=False, pad_token_id=tokenizer.pad_token_id, **SAMPLING)
        out.append(result[0]["generated_text"])
    return out


def batched(model, tokenizer, prompts: list[str], tokens: int, batch_size: int, precision: str) -> list[str | None]:
    config = GenerateConfig(max_new_tokens=tokens, min_new_tokens=tokens, batch_size=batch_size, precision=precision,
                            **SAMPLING)
    out: list[str | None] = [None] * len(prompts)
    for b, idx in enumerate(plan_batches(tokenizer, prompts, batch_size)):
        for i, text in zip(idx, generate_batch(model, tokenizer, [prompts[i] for i in idx], config, config.seed + b)):
            out[i] = text
    return out


def timed(fn, *args) -> tuple[float, list]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="prompts (bundled set)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per prompt, exactly")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip-fp32-batched", action="store_true", help="skip the batched-fp32 row (saves time)")
    parser.add_argument("--threads", type=int, help="torch threads for every method (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = load_prompts("bundled", limit=args.n)
    model = load_causal_lm(MODEL).eval()  # fp32, as the seed's pipeline loads it
    # lab.compare loads the policy in bf16 where the hardware has it (lab.generate.load_dtype); fp32 elsewhere.
    lab_model = load_causal_lm(MODEL, dtype=load_dtype("auto")).eval()
    tokenizer = load_tokenizer(MODEL)
    for m in (model, lab_model):  # warm-up: first-call allocations and kernel selection
        batched(m, tokenizer, prompts[:2], 2, 2, "auto")
    common = {"model": MODEL, "prompts": len(prompts), "new_tokens": args.tokens, "threads": torch.get_num_threads()}

    rows = {}
    seconds, out = timed(per_prompt_pipeline, model, tokenizer, prompts, args.tokens)
    rows["per_prompt"] = seconds
    print(json.dumps({**common, "method": "per-prompt pipeline, fp32", "seconds": round(seconds, 2),
                      "sample": out[0][:120]}), flush=True)
    if not args.skip_fp32_batched:
        seconds, out = timed(batched, model, tokenizer, prompts, args.tokens, args.batch_size, "fp32")
        rows["batched_fp32"] = seconds
        print(json.dumps({**common, "method": f"batched {args.batch_size}, fp32", "seconds": round(seconds, 2),
                          "sample": (out[0] or "")[:120]}), flush=True)
    seconds, out = timed(batched, lab_model, tokenizer, prompts, args.tokens, args.batch_size, "auto")
    rows["batched"] = seconds
    print(json.dumps({**common, "method": f"batched {args.batch_size}, {str(lab_model.dtype)[6:]} (lab default)",
                      "seconds": round(seconds, 2), "sample": (out[0] or "")[:120]}), flush=True)
    ratios = {"ratio_batched_vs_per_prompt": round(rows["per_prompt"] / rows["batched"], 2)}
    if "batched_fp32" in rows:
        ratios["ratio_batched_fp32_vs_per_prompt"] = round(rows["per_prompt"] / rows["batched_fp32"], 2)
    print(json.dumps(ratios), flush=True)


if __name__ == "__main__":
    main()
