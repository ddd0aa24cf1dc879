"""What the tabs' Plotly figures share."""

from __future__ import annotations

import plotly.graph_objects as go


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
