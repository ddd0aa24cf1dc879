"""Paired statistics for comparing two models on the same prompts: bootstrap intervals, the length effect removed.

A comparison is a set of prompts, each answered by model A and model B. Per prompt we take the difference B − A
(of reward, of toxicity); the mean difference with a percentile-bootstrap 95% interval over prompts says whether
B is better on prompts like these, not just on these. Reward models often reward length, so the reward difference
is also given with the linear length effect removed: reward ≈ a + b × characters, fitted on all answers of both
models, and B − A of the residuals.
"""

from __future__ import annotations

from typing import Any, Sequence

import math

import numpy as np

N_BOOT = 2000
LEVEL = 0.95
# One rule for "better", everywhere (Reward tab's scoring box, Compare's badges, per-prompt marks and verdicts): the
# reward model's own reading of two scores, P(A better) = σ(r_A − r_B) (Bradley-Terry, how it was trained). Inside
# this band it cannot tell the answers apart: "about even".
EVEN_BAND = (0.4, 0.6)
EVEN_MARGIN = math.log(EVEN_BAND[1] / (1 - EVEN_BAND[1]))  # |r_A − r_B| below this (≈ 0.405) is "about even"
FEW_PROMPTS = 4  # "a few prompts carry the mean": at most this many
MAX_ANSWERS = 8  # the most answers to one prompt a comparison or an evaluation draws


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


def p_better(a: float, b: float) -> float:
    """P(A better than B) = σ(r_A − r_B), the reward model's Bradley-Terry reading of two scores."""
    return 1 / (1 + math.exp(-(a - b)))


def preferred(a: float | None, b: float | None) -> str | None:
    """'a' or 'b' when the reward model takes a side (P outside EVEN_BAND), else None (about even, or unscored)."""
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return None
    p = p_better(a, b)
    return "a" if p > EVEN_BAND[1] else "b" if p < EVEN_BAND[0] else None


def verdict(ci: dict[str, float], per_prompt: bool = False) -> str:
    """'B higher', 'B lower' or 'no clear difference': the 95% interval of B − A must exclude 0 and, for a reward
    (`per_prompt`), the mean difference must also be one the reward model would take a side on (outside EVEN_BAND):
    a difference it calls "about even" on one prompt is not "clearly higher" on average, however many prompts."""
    big = not per_prompt or abs(ci["mean"]) > EVEN_MARGIN
    if ci["lo"] > 0 and big:
        return "B higher"
    if ci["hi"] < 0 and big:
        return "B lower"
    return "no clear difference"


def carried_by_few(diffs: Sequence[float], k: int = FEW_PROMPTS) -> dict[str, Any] | None:
    """When a few prompts carry the mean: the k prompts pushing hardest in the mean's direction (k ≤ a quarter of
    the prompts) give more than half of the total, or leaving them out flips the mean's sign. None otherwise."""
    d = np.asarray(diffs, float)
    k = min(k, len(d) // 4)
    total = float(d.sum())
    if k < 1 or total == 0:
        return None
    top = np.sort(d)[::-1][:k] if total > 0 else np.sort(d)[:k]
    rest = (total - float(top.sum())) / (len(d) - k)
    share = float(top.sum()) / total
    if share <= 0.5 and np.sign(rest) == np.sign(total):
        return None
    return {"k": k, "share": share, "mean_without": rest}


def per_prompt(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per prompt: where a comparison drew several answers to a prompt (rows sharing an `index`, told apart
    by `draw`), their numbers averaged (a flag becomes the share of answers it marks), the first draw's text kept,
    and `answers` the count; rows of one answer a prompt come back as they are. The unit of every interval is the
    prompt: answers to one prompt are not independent of each other, and averaging them takes the sampling's noise
    out of each prompt's difference (README, *Stop 46*)."""
    if not any(r.get("draw") for r in rows):
        return rows
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in sorted(rows, key=lambda r: r.get("draw") or 0):
        groups.setdefault(r.get("index"), []).append(r)
    out = []
    for group in groups.values():
        row = dict(group[0])
        for key, value in group[0].items():
            if isinstance(value, (bool, int, float)) and key not in ("index", "draw"):
                values = [g[key] for g in group if isinstance(g.get(key), (bool, int, float))]
                row[key] = float(np.mean([float(v) for v in values]))
        row["answers"] = len(group)
        if any(isinstance(g.get("length_a"), (int, float)) for g in group):
            row["length_a"] = float(np.mean([answer_chars(g, "a") for g in group]))
            row["length_b"] = float(np.mean([answer_chars(g, "b") for g in group]))
        out.append(row)
    return out


def answer_chars(row: dict[str, Any], key: str) -> float:
    """Side `key`'s answer length in characters: the row's `length_key` (a mean where several answers were
    averaged), else the answer's own length."""
    value = row.get(f"length_{key}")
    return float(value) if isinstance(value, (int, float)) else float(len(str(row.get(f"answer_{key}") or "")))


def paired_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """For rows with answer/reward/toxicity of both sides: B − A of reward (raw and length-adjusted) and toxicity,
    each with a bootstrap 95% interval over prompts (several answers to a prompt averaged first: `per_prompt`), win
    counts, mean answer lengths and the reward-length correlation."""
    if not rows:
        return {}
    answers = len(rows)
    # the reward-length correlation over every answer, as the length warning's threshold was set: means of several
    # answers average the noise away and would read higher
    every = [(answer_chars(r, k), r[f"reward_{k}"]) for r in rows for k in ("a", "b")
             if isinstance(r.get(f"reward_{k}"), (int, float))]
    rows = per_prompt(rows)
    len_a = [answer_chars(r, "a") for r in rows]
    len_b = [answer_chars(r, "b") for r in rows]
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
        sides = [preferred(a, b) for a, b in zip(ra, rb)]
        out["reward"] = {**bootstrap_mean(diffs), "b_higher": sum(d > 0 for d in diffs),
                         "b_preferred": sides.count("b"), "a_preferred": sides.count("a"), "even": sides.count(None),
                         "few": carried_by_few(diffs)}
        out["reward_length_adjusted"] = length_adjusted(ra, rb, la, lb)
        out["length_reward_corr"] = pearson([x for x, _ in every], [y for _, y in every])
    if answers != len(rows):
        out["answers"] = answers
    return out
