"""Plotly figures for the PPO tab, each from the run's metric rows (one dict per step)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from lab.stats import pearson
from lab.ui.plots_common import MIN_POINTS, placeholder

BLUE, RED, GREEN, GREY = "#4c78a8", "#e45756", "#54a24b", "#999999"
CRITIC_FREE = ("rloo", "grpo")  # advantage estimators without a value head: no value loss, no value clipping
LENGTH_STEPS = 10  # the reward-vs-length scatter shows the rollouts of the latest this many steps

# "What you are looking at" under each figure, with the healthy range where there is one (in display order).
NOTES = [
    "Mean reward of each batch of answers (band: ± 1 standard deviation). Noisy: every step answers other prompts "
    "with other samples; the evaluation curve below, on fixed prompts, is the steadier measure. Healthy: drifting "
    "up. Rewards depend on answer length, so compare them only between answers of similar length. With a relevance "
    "weight (the run's is in its summary line; the cpu preset's is 5), PPO maximises the reward model's score plus "
    "that weight times each answer's relevance to its request (dotted, 0–1: the cosine of sentence embeddings, ~0.2 "
    "off topic, ~0.8 on topic). Red dotted: the share of the batch's answers the lab's text rules call degenerate "
    "(loops, word salad); healthy: near 0 and not rising (a degenerate-answer penalty, where set, acts on these).",
    "How far the policy has moved from the original model: KL in nats per answer, the batch mean. Healthy: above 0 and "
    "below the dashed target (drawn when the adaptive controller is on) or the dotted cap (when one is set). One "
    "answer's KL can be negative; the mean should not be. A KL that "
    "keeps climbing often means the policy found a template the reward model overrates (every run read blind past 10 "
    "nats lost to its base): read the rollouts.",
    "The KL weight β: how much each nat of KL costs in the reward. A fixed β (the cpu preset's 0.3) is a flat line; "
    "the adaptive controller, when on, nudges it towards keeping KL near the target, slowly (over thousands of "
    "answers), so small moves are normal. With a KL cap, β doubles "
    "after every step whose KL passed the cap and halves back once KL is under half of it: a staircase here means the "
    "cap is holding the policy back.",
    "Policy loss (noisy; its sign means little) and value loss (how far the critic's predicted returns are off; "
    "healthy: falling). Critic-free estimators (RLOO, GRPO) have no value loss.",
    "Share of tokens whose probability ratio (new ÷ old policy) hit the clip range ε. Healthy: small, under ~0.2; "
    "large means each update moves the policy too far.",
    "How varied the answers are: the mean −log p of each sampled answer token (an estimate of the policy's entropy, "
    "in nats per token, so shorter answers do not lower it by themselves). Healthy: slowly falling; a sudden drop "
    "towards 0 means the policy is collapsing onto a few stock answers.",
    "Mean answer length in tokens. Reward models often favour longer answers: if length and reward rise together, "
    "see the length plot below.",
    "Seconds per step in each phase: generating answers, scoring them, forward passes, optimising.",
]


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def _layout(fig: go.Figure, title: str, y_title: str) -> go.Figure:
    fig.update_layout(
        title=title, xaxis_title="PPO step", yaxis_title=y_title, height=290, margin=dict(l=50, r=20, t=40, b=85),
        # the legend hangs below the axis title (anchored by its top), never over it
        legend=dict(orientation="h", y=-0.4, yanchor="top", x=0), template="plotly_white",
    )
    return fig


def _lines(rows: list[dict[str, Any]], keys: dict[str, str], title: str, y_title: str) -> go.Figure:
    """One line per metric key (key -> legend name)."""
    fig = go.Figure()
    for (key, name), colour in zip(keys.items(), (BLUE, RED, GREEN, GREY)):
        x, y = _series(rows, key)
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=name, line=dict(color=colour),
                                 marker=dict(size=4)))
    return _layout(fig, title, y_title)


def reward_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Mean reward of each batch of rollouts with a ±1 std band."""
    x, mean = _series(rows, "env/reward_mean")
    _, std = _series(rows, "env/reward_std")
    std = std if len(std) == len(mean) else [0.0] * len(mean)
    fig = go.Figure()
    upper, lower = [m + s for m, s in zip(mean, std)], [m - s for m, s in zip(mean, std)]
    fig.add_trace(go.Scatter(x=x + x[::-1], y=upper + lower[::-1],
                             fill="toself", fillcolor="rgba(76,120,168,0.2)", line=dict(width=0), name="± std",
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=x, y=mean, mode="lines+markers", name="mean reward", line=dict(color=BLUE),
                             marker=dict(size=4)))
    rx, relevance = _series(rows, "env/relevance")  # relevance_coef > 0: a part of the score PPO maximises
    if rx:
        fig.add_trace(go.Scatter(x=rx, y=relevance, mode="lines", name="mean relevance (0–1, part of the score)",
                                 line=dict(color=GREEN, dash="dot")))
    dx, degenerate = _series(rows, "env/degenerate")  # the text rules' share, what degenerate_penalty acts on
    if dx:
        fig.add_trace(go.Scatter(x=dx, y=degenerate, mode="lines", name="share of degenerate answers (0–1)",
                                 line=dict(color=RED, dash="dot")))
    return _layout(fig, "Reward of the rollouts (mean ± std)", "reward")


def kl_figure(rows: list[dict[str, Any]], target: float | None, cap: float = 0.0) -> go.Figure:
    """KL to the reference per response, with the adaptive controller's target and the KL cap, where set."""
    fig = _lines(rows, {"objective/kl": "KL(policy ‖ reference)"}, "KL to the reference (nats per response)", "KL")
    if target:
        fig.add_hline(y=target, line=dict(color=RED, dash="dash", width=1), annotation_text=f"target {target:g}")
    if cap:
        fig.add_hline(y=cap, line=dict(color=GREY, dash="dot", width=1),
                      annotation_text=f"cap {cap:g}: β doubles above it", annotation_position="bottom right")
    return fig


def kl_coef_figure(rows: list[dict[str, Any]], adaptive: bool = True, cap: float = 0.0) -> go.Figure:
    """β from 0 up, so the controller's slow drift (a fraction of a percent a step) does not look like a plunge; the
    title says whether β adapts at all (the cpu preset's is fixed, but doubles above its KL cap)."""
    title = "KL weight β (adapts slowly)" if adaptive else "KL weight β (fixed: the adaptive controller is off)"
    if cap:
        title = f"KL weight β ({'adapts slowly' if adaptive else 'fixed'}; doubles after a step above KL {cap:g})"
    fig = _lines(rows, {"objective/kl_coef": "β"}, title, "β")
    _, y = _series(rows, "objective/kl_coef")
    if y:
        fig.update_yaxes(range=[0, max(abs(v) for v in y) * 1.5 or 1])
    return fig


def _no_value_head(fig: go.Figure, rows: list[dict[str, Any]], key: str, estimator: str) -> go.Figure:
    """Say so on the value-loss plot when its curve is missing because the estimator has no critic."""
    if rows and estimator in CRITIC_FREE and not _series(rows, key)[0]:
        fig.add_annotation(text=f"no value head ({estimator.upper()}): no value-loss curve", xref="paper", yref="paper",
                           x=0.98, y=0.95, xanchor="right", showarrow=False, font=dict(size=11, color="#777"),
                           bgcolor="rgba(255,255,255,0.8)")
    return fig


def loss_figure(rows: list[dict[str, Any]], estimator: str = "gae") -> go.Figure:
    """Policy loss on the left axis, value loss on the right (their scales differ a lot)."""
    fig = go.Figure()
    x, y = _series(rows, "ppo/loss/policy")
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="policy loss", line=dict(color=BLUE),
                             marker=dict(size=4)))
    x, y = _series(rows, "ppo/loss/value")
    if x or estimator not in CRITIC_FREE:
        fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="value loss", line=dict(color=RED),
                                 marker=dict(size=4), yaxis="y2"))
        fig.update_layout(yaxis2=dict(title="value loss", overlaying="y", side="right", showgrid=False))
    return _no_value_head(_layout(fig, "Losses", "policy loss"), rows, "ppo/loss/value", estimator)


def clipfrac_figure(rows: list[dict[str, Any]], estimator: str = "gae") -> go.Figure:
    """Clip fractions; the value line only with a value head (the note that there is none sits on the loss plot)."""
    keys = {"ppo/policy/clipfrac": "policy"}
    if estimator not in CRITIC_FREE or _series(rows, "ppo/val/clipfrac")[0]:
        keys["ppo/val/clipfrac"] = "value"
    fig = _lines(rows, keys, "Clipped share of tokens (clip fraction)", "fraction")
    fig.update_yaxes(rangemode="tozero")
    return fig


def entropy_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Entropy per answer token; an older run logged only the per-answer sum, shown as such and labelled."""
    if _series(rows, "objective/entropy_per_token")[0] or not _series(rows, "objective/entropy")[0]:
        return _lines(rows, {"objective/entropy_per_token": "entropy per token"},
                      "How varied the answers are (entropy per token)", "nats per token")
    fig = _lines(rows, {"objective/entropy": "entropy summed per answer"},
                 "How varied the answers are (entropy per answer)", "nats per answer")
    fig.add_annotation(text="older run: summed per answer, so it also falls when answers get shorter", xref="paper",
                       yref="paper", x=0.98, y=0.95, xanchor="right", showarrow=False, font=dict(size=11, color="#555"),
                       bgcolor="rgba(255,255,255,0.8)")
    return fig


def length_figure(rows: list[dict[str, Any]]) -> go.Figure:
    fig = _lines(rows, {"tokens/response_len_mean": "tokens"}, "Mean answer length", "tokens")
    fig.update_yaxes(rangemode="tozero")
    return fig


def time_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Seconds per step spent in each phase, stacked."""
    fig = go.Figure()
    for key, colour in zip(("time/rollout", "time/score", "time/forward", "time/optimize"), (BLUE, GREEN, GREY, RED)):
        x, y = _series(rows, key)
        fig.add_trace(go.Bar(x=x, y=y, name=key.split("/")[1], marker_color=colour))
    fig.update_layout(barmode="stack")
    return _layout(fig, "Seconds per step", "seconds")


def all_figures(rows: list[dict[str, Any]], target: float | None, estimator: str = "gae",
                kl_cap: float = 0.0) -> list[go.Figure]:
    """The tab's figures, in display order; before the first step each says so instead of showing bare axes."""
    figures = [reward_figure(rows), kl_figure(rows, target, kl_cap),
               kl_coef_figure(rows, adaptive=target is not None, cap=kl_cap),
               loss_figure(rows, estimator),
               clipfrac_figure(rows, estimator), entropy_figure(rows), length_figure(rows), time_figure(rows)]
    if not any("step" in r for r in rows):
        figures = [placeholder(f, "The curves appear after the first PPO step.") for f in figures]
    return figures


# ---------------------------------------------------------------- reward against answer length


def length_points(samples: list[dict[str, Any]], last_steps: int = LENGTH_STEPS) -> list[tuple[int, float, float]]:
    """(step, length, reward) of the rollouts of the latest steps; length = response tokens (else words)."""
    steps = sorted({s["step"] for s in samples if isinstance(s.get("step"), int)})[-last_steps:]
    keep = set(steps)
    points = []
    for s in samples:
        if s.get("step") not in keep or not isinstance(s.get("reward"), (int, float)):
            continue
        length = s.get("length")
        if not isinstance(length, (int, float)):
            length = len(str(s.get("response", "")).split())
        points.append((s["step"], float(length), float(s["reward"])))
    return points


def length_reward_figure(samples: list[dict[str, Any]], last_steps: int = LENGTH_STEPS) -> go.Figure:
    """Each rollout of the latest steps as a point: answer length against reward, coloured by step; r in the title."""
    points = length_points(samples, last_steps)
    fig = go.Figure()
    if points:
        fig.add_trace(go.Scatter(
            x=[p[1] for p in points], y=[p[2] for p in points], mode="markers", name="rollouts",
            marker=dict(size=7, color=[p[0] for p in points], colorscale="Viridis", showscale=True,
                        colorbar=dict(title="step", thickness=12)),
            hovertemplate="step %{marker.color}<br>length %{x}<br>reward %{y:.3f}<extra></extra>",
        ))
    r = pearson([p[1] for p in points], [p[2] for p in points]) if len(points) >= MIN_POINTS else None
    corr = f" (r = {r:.2f})" if r is not None else ""
    unit = "tokens" if any(isinstance(s.get("length"), (int, float)) for s in samples) else "words"  # older runs: words
    fig.update_layout(
        title=f"Reward against answer length, last {last_steps} steps{corr}", xaxis_title=f"answer length ({unit})",
        yaxis_title="reward", height=300, margin=dict(l=50, r=20, t=40, b=40), template="plotly_white",
    )
    if not points:
        placeholder(fig, "Each answer appears here as a point after the first PPO step.")
    return fig
