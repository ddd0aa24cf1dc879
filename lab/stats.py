"""Paired statistics for comparing two models on the same prompts: bootstrap intervals, the length effect removed.

A comparison is a set of prompts, each answered by model A and model B. Per prompt we take the difference B − A
(of reward, of toxicity); the mean difference with a percentile-bootstrap 95% interval over prompts says whether
B is better on prompts like these, not just on these. Reward models often reward length, so the reward difference
is also given with the linear length effect removed: reward ≈ a + b × characters, fitted on all answers of both
models, and B − A of the residuals.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

N_BOOT = 2000
LEVEL = 0.95


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation; None with fewer than 3 points or a constant side."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def bootstrap_mean(diffs: Sequence[float], n_boot: int = N_BOOT, seed: int = 0) -> dict[str, float]:
    """Mean of paired differences with a percentile-bootstrap 95% interval (resampling prompts)."""
    d = np.asarray(diffs, float)
    if len(d) == 0:
        raise ValueError("no paired differences to summarise")
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return {"mean": float(d.mean()), "lo": float(lo), "hi": float(hi), "n": int(len(d))}


def _slope(lengths: np.ndarray, rewards: np.ndarray) -> float:
    """Least-squares slope of reward on length (0 when every length is the same)."""
    centred = lengths - lengths.mean()
    denom = float((centred**2).sum())
    return float((centred * (rewards - rewards.mean())).sum() / denom) if denom > 0 else 0.0


def length_adjusted(
    reward_a: Sequence[float], reward_b: Sequence[float], len_a: Sequence[float], len_b: Sequence[float],
    n_boot: int = N_BOOT, seed: int = 0,
) -> dict[str, float]:
    """B − A of reward minus what the length difference alone predicts; the slope is refitted in every resample."""
    ra, rb, la, lb = (np.asarray(v, float) for v in (reward_a, reward_b, len_a, len_b))
    n = len(ra)
    if n == 0:
        raise ValueError("no paired differences to summarise")

    def adjusted(idx: np.ndarray) -> float:
        slope = _slope(np.concatenate([la[idx], lb[idx]]), np.concatenate([ra[idx], rb[idx]]))
        return float(((rb[idx] - ra[idx]) - slope * (lb[idx] - la[idx])).mean())

    rng = np.random.default_rng(seed)
    means = np.array([adjusted(rng.integers(0, n, size=n)) for _ in range(n_boot)])
    lo, hi = np.quantile(means, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    slope = _slope(np.concatenate([la, lb]), np.concatenate([ra, rb]))
    return {"mean": adjusted(np.arange(n)), "lo": float(lo), "hi": float(hi), "n": n, "slope_per_char": slope}


def verdict(ci: dict[str, float]) -> str:
    """'B higher', 'B lower' or 'no clear difference': whether the 95% interval of B − A excludes 0."""
    if ci["lo"] > 0:
        return "B higher"
    if ci["hi"] < 0:
        return "B lower"
    return "no clear difference"


def paired_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For rows with answer/reward/toxicity of both sides: B − A of reward (raw and length-adjusted) and toxicity,
    each with a bootstrap 95% interval, win counts, mean answer lengths and the reward-length correlation."""
    if not rows:
        return {}
    len_a = [len(r.get("answer_a") or "") for r in rows]
    len_b = [len(r.get("answer_b") or "") for r in rows]
    tox = [r["toxicity_b"] - r["toxicity_a"] for r in rows]
    out: dict[str, Any] = {
        "n": len(rows), "length_a": float(np.mean(len_a)), "length_b": float(np.mean(len_b)),
        "toxicity": {**bootstrap_mean(tox), "b_lower": sum(d < 0 for d in tox)},
    }
    scored = [i for i, r in enumerate(rows) if isinstance(r.get("reward_a"), (int, float))
              and isinstance(r.get("reward_b"), (int, float))]
    if scored:
        ra, rb = [rows[i]["reward_a"] for i in scored], [rows[i]["reward_b"] for i in scored]
        la, lb = [len_a[i] for i in scored], [len_b[i] for i in scored]
        diffs = [b - a for a, b in zip(ra, rb)]
        out["reward"] = {**bootstrap_mean(diffs), "b_higher": sum(d > 0 for d in diffs)}
        out["reward_length_adjusted"] = length_adjusted(ra, rb, la, lb)
        out["length_reward_corr"] = pearson(la + lb, ra + rb)
    return out
