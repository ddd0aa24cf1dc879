"""Plotly figures for the Compare tab: toxicity and reward distributions of Model A and Model B."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lab.stats import per_prompt
from lab.ui.plots_common import placeholder, shared_bins

COLOURS = {"a": "#4c78a8", "b": "#f58518"}


def _values(rows: list[dict[str, Any]], key: str) -> list[float]:
    return [float(r[key]) for r in rows if isinstance(r.get(key), (int, float))]


def distribution_figure(rows: list[dict[str, Any]], label_a: str = "A", label_b: str = "B") -> go.Figure:
    """Per-answer toxicity (left) and reward (right) of both models, as overlaid histograms."""
    titles = ("Toxicity (0 = clean, 1 = toxic)", "Reward (higher = preferred)")
    fig = make_subplots(rows=1, cols=2, subplot_titles=titles)
    edges = {"toxicity": {"start": 0, "end": 1.0001, "size": 0.05},  # the top bin holds a score of exactly 1
             "reward": shared_bins(_values(rows, "reward_a"), _values(rows, "reward_b"), n=20)}
    for key, label in (("a", label_a), ("b", label_b)):
        for col, metric in ((1, "toxicity"), (2, "reward")):
            values = _values(rows, f"{metric}_{key}")
            bins = {"xbins": edges[metric]}
            fig.add_trace(
                go.Histogram(x=values, name=f"{key.upper()}: {label}", legendgroup=key, showlegend=col == 1,
                             marker_color=COLOURS[key], opacity=0.65, **bins),
                row=1, col=col,
            )
    fig.update_xaxes(range=[0, 1], row=1, col=1)
    fig.update_yaxes(title_text="answers", row=1, col=1)
    fig.update_layout(
        barmode="overlay", height=350, margin=dict(l=50, r=20, t=40, b=85), template="plotly_white",
        legend=dict(orientation="h", y=-0.3, yanchor="top"),
    )
    fig.update_xaxes(title_text="toxicity of one answer", title_standoff=4, row=1, col=1)
    fig.update_xaxes(title_text="reward of one answer", title_standoff=4, row=1, col=2)
    if not rows:  # keep the two panels' titles: they say what will be shown
        placeholder(fig, "The distributions appear when a comparison has scored its answers.", clear=False)
    return fig


def paired_figure(rows: list[dict[str, Any]]) -> go.Figure:
    """B − A reward on each prompt (its answers' mean where it had several), sorted, with a zero line: bars above it
    are prompts where B scored higher."""
    diffs = sorted(float(r["reward_b"]) - float(r["reward_a"]) for r in per_prompt(rows)
                   if isinstance(r.get("reward_a"), (int, float)) and isinstance(r.get("reward_b"), (int, float)))
    fig = go.Figure()
    if diffs:
        fig.add_trace(go.Bar(x=list(range(1, len(diffs) + 1)), y=diffs, name="B − A",
                             marker_color=[COLOURS["b"] if d > 0 else COLOURS["a"] for d in diffs],
                             hovertemplate="%{y:+.3f}<extra></extra>"))
    fig.add_hline(y=0, line=dict(color="#333", width=1))
    fig.update_layout(
        title="Reward of B − reward of A, per prompt (sorted)", xaxis_title="prompts, from B's worst to B's best",
        yaxis_title="B − A", height=280, margin=dict(l=50, r=20, t=40, b=40), template="plotly_white",
        showlegend=False,
    )
    if not diffs:
        placeholder(fig, "Per-prompt differences appear when a comparison has rewards for both answers.")
    return fig
