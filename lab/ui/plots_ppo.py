"""Plotly figures for the PPO tab, each from the run's metric rows (one dict per step)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from lab.ui.plots_common import placeholder

BLUE, RED, GREEN, GREY = "#4c78a8", "#e45756", "#54a24b", "#999999"


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and "step" in r]
    return [p[0] for p in points], [p[1] for p in points]


def _layout(fig: go.Figure, title: str, y_title: str) -> go.Figure:
    fig.update_layout(
        title=title, xaxis_title="PPO step", yaxis_title=y_title, height=260, margin=dict(l=50, r=20, t=40, b=40),
        legend=dict(orientation="h", y=-0.3), template="plotly_white",
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
    return _layout(fig, "Reward of the rollouts (mean ± std)", "reward")


def kl_figure(rows: list[dict[str, Any]], target: float | None) -> go.Figure:
    """KL to the reference per response, with the adaptive controller's target."""
    fig = _lines(rows, {"objective/kl": "KL(policy ‖ reference)"}, "KL to the reference (nats per response)", "KL")
    if target:
        fig.add_hline(y=target, line=dict(color=RED, dash="dash", width=1), annotation_text=f"target {target:g}")
    return fig


def kl_coef_figure(rows: list[dict[str, Any]]) -> go.Figure:
    return _lines(rows, {"objective/kl_coef": "β"}, "KL coefficient β", "β")


def loss_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """Policy loss on the left axis, value loss on the right (their scales differ a lot)."""
    fig = go.Figure()
    x, y = _series(rows, "ppo/loss/policy")
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="policy loss", line=dict(color=BLUE),
                             marker=dict(size=4)))
    x, y = _series(rows, "ppo/loss/value")
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name="value loss", line=dict(color=RED),
                             marker=dict(size=4), yaxis="y2"))
    fig.update_layout(yaxis2=dict(title="value loss", overlaying="y", side="right", showgrid=False))
    return _layout(fig, "Losses", "policy loss")


def clipfrac_figure(rows: list[dict[str, Any]]) -> go.Figure:
    fig = _lines(rows, {"ppo/policy/clipfrac": "policy", "ppo/val/clipfrac": "value"},
                 "Clip fraction (share of tokens clipped)", "fraction")
    fig.update_yaxes(rangemode="tozero")
    return fig


def entropy_figure(rows: list[dict[str, Any]]) -> go.Figure:
    return _lines(rows, {"objective/entropy": "entropy"}, "Entropy (−log p summed over a response)", "nats")


def length_figure(rows: list[dict[str, Any]]) -> go.Figure:
    fig = _lines(rows, {"tokens/response_len_mean": "tokens"}, "Mean response length", "tokens")
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


def all_figures(rows: list[dict[str, Any]], target: float | None) -> list[go.Figure]:
    """The tab's figures, in display order; before the first step each says so instead of showing bare axes."""
    figures = [reward_figure(rows), kl_figure(rows, target), kl_coef_figure(rows), loss_figure(rows),
               clipfrac_figure(rows), entropy_figure(rows), length_figure(rows), time_figure(rows)]
    if not any("step" in r for r in rows):
        figures = [placeholder(f, "The curves appear after the first PPO step.") for f in figures]
    return figures
