"""What the tabs' Plotly figures share."""

from __future__ import annotations

from typing import Any

import math

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


def shared_bins(*series: list[float], n: int = 30) -> dict[str, float]:
    """One set of bin edges (plotly `xbins`) for every trace of an overlaid histogram: left to itself, plotly bins
    each trace on its own, so one side's bars come out twice as wide as the other's and look twice as common.
    Edges fall on a round width covering all the values."""
    values = [float(v) for s in series for v in s]
    if not values:
        return {"start": 0.0, "end": 1.0, "size": 0.1}
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        return {"start": lo - 0.5, "end": hi + 0.5, "size": 0.1}
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    size = next(m * step for m in (1, 2, 2.5, 5, 10) if m * step >= raw)
    start = math.floor(lo / size) * size
    end = math.ceil(hi / size) * size
    end = end + size if end <= hi else end  # the top value inside the last bin
    return {"start": round(start, 9), "end": round(end, 9), "size": size}
