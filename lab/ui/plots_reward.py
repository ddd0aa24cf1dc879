"""Plotly figures for the Reward tab: train curves with eval points, and the held-out margin histogram."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from lab.ui.plots_common import placeholder, shared_bins

TRAIN_COLOUR = "#4c78a8"
EVAL_COLOUR = "#e45756"


def _layout(fig: go.Figure, title: str, y_title: str) -> go.Figure:
    fig.update_layout(
        title=title, xaxis_title="step", yaxis_title=y_title, height=320, margin=dict(l=50, r=20, t=40, b=85),
        # the legend hangs below the axis title (anchored by its top), never over it
        legend=dict(orientation="h", y=-0.32, yanchor="top", x=0), template="plotly_white",
    )
    return fig


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[float | None], list[float | None]]:
    """(steps, values) of one metric; a gap (None) where an ensemble's next model starts, so no line joins them."""
    x: list[float | None] = []
    y: list[float | None] = []
    member = 1
    for r in rows:
        if isinstance(r.get(key), (int, float)) and "step" in r:
            if r.get("member", member) != member and x:
                x.append(None)
                y.append(None)
            member = r.get("member", member)
            x.append(r["step"])
            y.append(r[key])
    return x, y


def curve_figure(rows: list[dict[str, Any]], train_key: str, eval_key: str, title: str) -> go.Figure:
    """One metric over steps: the train line and the held-out points on the same axes."""
    fig = go.Figure()
    x, y = _series(rows, train_key)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=f"train {train_key}", line=dict(color=TRAIN_COLOUR)))
    x, y = _series(rows, eval_key)
    fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=f"held-out {train_key}",
                             line=dict(color=EVAL_COLOUR, dash="dot"), marker=dict(size=8)))
    newest = 1
    for row in rows:  # an ensemble trains its models one after another: mark where each new one starts
        if row.get("member", 1) > newest and "step" in row:
            newest = row["member"]
            fig.add_vline(x=row["step"] - 0.5, line=dict(color="#999", width=1),
                          annotation_text=f"model {row['member']}", annotation_position="top left",
                          annotation_bgcolor="rgba(255,255,255,0.85)")
    if train_key == "accuracy":
        fig.add_hline(y=0.5, line=dict(color="#999", dash="dash", width=1), annotation_text="chance")
        fig.update_yaxes(range=[0, 1.02])
    _layout(fig, title, train_key)
    if not any(trace.y for trace in fig.data):  # no point logged yet
        placeholder(fig, "The curve appears at the first logged step of a run.")
    return fig


def loss_figure(rows: list[dict[str, Any]]) -> go.Figure:
    return curve_figure(rows, "loss", "eval_loss", "Loss (lower = ranks the pairs better)")


def accuracy_figure(rows: list[dict[str, Any]]) -> go.Figure:
    return curve_figure(rows, "accuracy", "eval_accuracy", "Accuracy (chosen scored higher)")


def margin_histogram(margins: list[float]) -> go.Figure:
    """Held-out chosen − rejected margins; right of zero = ranked correctly."""
    right = [m for m in margins if m > 0]
    wrong = [m for m in margins if m <= 0]
    fig = go.Figure()
    bins = shared_bins(margins, n=30)  # one set of edges for both colours (multiples of the width: 0 is an edge)
    fig.add_trace(go.Histogram(x=right, name=f"correct ({len(right)})", marker_color=TRAIN_COLOUR, xbins=bins))
    fig.add_trace(go.Histogram(x=wrong, name=f"wrong ({len(wrong)})", marker_color=EVAL_COLOUR, xbins=bins))
    fig.add_vline(x=0, line=dict(color="#333", width=1))
    fig.update_layout(barmode="overlay")
    fig.update_traces(opacity=0.8)
    _layout(fig, "Held-out margins: reward(chosen) − reward(rejected)", "pairs")
    fig.update_xaxes(title="margin")
    if not margins:
        placeholder(fig, "The held-out margins appear when a run has scored its held-out pairs.")
    return fig
