"""What the tabs' Plotly figures share."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go

from lab.stats import pearson

MIN_POINTS = 8  # fewer answers than this: no correlation is claimed
STRONG_R = 0.5  # r above this: reward follows answer length strongly


def placeholder(fig: go.Figure, message: str, clear: bool = True) -> go.Figure:
    """An empty figure that says what will be drawn here and when, instead of bare axes; `clear` also drops the
    guide lines and their labels (a target, "chance"), which mean nothing without data."""
    if clear:
        fig.layout.shapes = ()
        fig.layout.annotations = ()
    fig.add_annotation(text=message, xref="paper", yref="paper", x=0.5, y=0.5, showarrow=False,
                       font=dict(size=13, color="#777"))
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, title_text="")
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, title_text="")
    return fig


def length_warning(points: list[tuple[Any, float, float]], what: str = "the policy") -> str:
    """A warning when reward rises with length strongly (r > 0.5 over enough points), else ''."""
    r = pearson([p[1] for p in points], [p[2] for p in points]) if len(points) >= MIN_POINTS else None
    return length_warning_for(r, what)


def length_warning_for(r: float | None, what: str) -> str:
    """The length-bias warning for a measured correlation r, '' when it is weak or unknown."""
    if r is None or r <= STRONG_R:
        return ""
    return (f"⚠ Reward rises with length (r = {r:.2f}): {what} may be learning to ramble rather than to answer "
            "better. The reward model pays for length; judge the answers themselves, not only the reward.")
