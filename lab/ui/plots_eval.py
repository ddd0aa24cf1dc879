"""Plotly figures of the evaluations PPO makes on fixed prompts (lab.evaluate), for one run or several overlaid."""

from __future__ import annotations

from typing import Any, Sequence

import plotly.graph_objects as go

from lab.ui.plots_common import placeholder

COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2")
DASHES = ("solid", "dash", "dot")
SCORES = {"reward": "proxy", "judge": "judge"}
RATES = {"refusal": "refusals", "degenerate": "degenerate", "relevance": "relevance"}
EVAL_NOTES = {
    "scores": "Proxy (solid: the reward model PPO optimises) and judge (dashed: a reward model PPO never saw) on the "
              "same fixed held-out prompts, answered with the same seed at every evaluation (bars: ± 1 standard "
              "error). Unlike the rollout reward above, which sees other prompts every step and is noisy, this curve "
              "moves only when the model does. Proxy up while the judge stays flat or falls = reward hacking.",
    "rates": "Share of the fixed prompts' answers that are refusals (solid: an apology, 'as an AI', 'I can't help') "
             "or degenerate (dashed: loops, word salad, '�'), and their mean relevance to the request (dotted: the "
             "cosine of sentence embeddings, ~0.2 off topic, ~0.8 on topic). The reward model sees none of them; a "
             "rise of the first two or a fall of relevance is a warning whatever the reward says.",
}


def _points(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float], list[float]]:
    pts = [(r["step"], r.get(f"eval/{key}"), r.get(f"eval/{key}_se")) for r in rows]
    pts = [(s, y, e if isinstance(e, (int, float)) else 0.0) for s, y, e in pts if isinstance(y, (int, float))]
    return [p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts]


def _layout(fig: go.Figure, title: str, y_title: str) -> go.Figure:
    fig.update_layout(title=title, xaxis_title="PPO step", yaxis_title=y_title, height=300,
                      margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=-0.3),
                      template="plotly_white")
    return fig


def eval_figure(series: Sequence[tuple[str, Sequence[dict[str, Any]]]], keys: dict[str, str], title: str,
                y_title: str, error_bars: bool = True) -> go.Figure:
    """One colour per run (its label), one dash per measure; `series` = [(run label, evaluation rows)]."""
    fig = go.Figure()
    for i, (label, rows) in enumerate(series):
        for (key, name), dash in zip(keys.items(), DASHES):
            x, y, err = _points(rows, key)
            if not x:
                continue
            trace_name = name if len(series) == 1 else f"{label} · {name}"
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers", name=trace_name,
                                     line=dict(color=COLOURS[i % len(COLOURS)], dash=dash), marker=dict(size=6),
                                     error_y=dict(array=err, visible=error_bars, thickness=1)))
    _layout(fig, title, y_title)
    if not fig.data:
        placeholder(fig, "Evaluations on fixed prompts appear here: at step 0, then every few steps")
    return fig


def scores_figure(series: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> go.Figure:
    return eval_figure(series, SCORES, "Reward on fixed held-out prompts", "mean reward")


def rates_figure(series: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> go.Figure:
    fig = eval_figure(series, RATES, "Refusals, degenerate answers, relevance", "share of answers; relevance",
                      error_bars=False)
    if fig.data:
        fig.update_yaxes(range=[-0.02, 1.02])
    return fig
