"""Accumulation error against K: how an accumulator's precision and order of additions let error grow with the reduction length.

Input: one row per datapath and K with `k`, `accumulator`, `median_rel_error`
and `p99_rel_error` (the median and 99th percentile over output elements of
|emulated - exact| / |exact|). Optional columns:
- `operand_format`: one column of panels per operand format;
- `order`: the order of additions ("sequential", "pairwise", "tree32", ...),
  which sets the line style;
- `max_normalized_error` with `bound_normalized_error`: the largest
  |emulated - exact| / sum(|a_k * b_k|) over the outputs, and a worst-case
  bound on it, drawn as a third row with the bound dashed. An infinite
  bound, where the theory gives none, is not drawn.

`hwsim.arith.matmul` against a float64 or integer reference of the same
quantized operands produces such a table; studies/accumulation.py is one
producer.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwsim.report.columns import require_columns
from hwsim.report.style import base_layout, color_for

REQUIREMENTS = (("k",), ("accumulator",), ("median_rel_error",), ("p99_rel_error",))
TITLE = "Accumulation error against K, relative to the exact product of the quantized operands"
_DASHES = ("solid", "dot", "dash", "longdash", "dashdot", "longdashdot")
_SYMBOLS = ("circle", "square", "diamond", "x", "triangle-up", "cross")
_ROWS = (
    ("median_rel_error", "median |error| / |exact|"),
    ("p99_rel_error", "99th percentile |error| / |exact|"),
    ("max_normalized_error", "max |error| / Σ|a·b|; dashed: bound"),
)


def growth_exponent(k, error) -> float | None:
    """Fit error ≈ c * K**g by least squares in log-log space and return g, over the points with error > 0.

    Returns None with fewer than two such points at distinct K, where no
    growth can be fitted (an exact datapath has error 0 at every K).
    """
    k = np.asarray(k, dtype=np.float64)
    error = np.asarray(error, dtype=np.float64)
    positive = (error > 0) & np.isfinite(error)
    if len(np.unique(k[positive])) < 2:
        return None
    slope, _ = np.polyfit(np.log2(k[positive]), np.log2(error[positive]), 1)
    return float(slope)


def accumulation_figure(frame: pd.DataFrame, *, title: str = TITLE) -> go.Figure:
    """Draw error against K on log-log axes: one line per datapath, in one panel per operand format and error statistic.

    Lines are colored by accumulator and styled by order. A datapath keeps
    one legend entry across panels, so clicking it hides it everywhere.
    Points with zero error cannot sit on a log axis, so they are left out.
    Datapaths whose error is zero at every K are named in a note under the title.
    Each row of panels shares its y axis.
    """
    require_columns(frame, REQUIREMENTS, "accumulation figure")
    k = frame["k"].to_numpy()
    if not np.issubdtype(k.dtype, np.number) or (k <= 0).any():
        raise ValueError("column k must contain positive reduction lengths (products per output); found a non-positive or non-numeric value")
    for column in ("median_rel_error", "p99_rel_error"):
        values = frame[column].astype(float)
        if (values < 0).any() or not np.isfinite(values).all():
            raise ValueError(f"column {column} contains a negative or non-finite value; relative errors are finite and non-negative")

    frame = frame.assign(
        _panel=frame["operand_format"].astype(str) if "operand_format" in frame.columns else "",
        _order=frame["order"].astype(str) if "order" in frame.columns else "",
        _accumulator=frame["accumulator"].astype(str),
    )
    rows = [(column, label) for column, label in _ROWS if column in frame.columns]
    with_bound = "bound_normalized_error" in frame.columns
    panels = list(dict.fromkeys(frame["_panel"]))
    accumulators = list(dict.fromkeys(frame["_accumulator"]))
    orders = list(dict.fromkeys(frame["_order"]))

    exact = []
    drawn_panels = []
    for panel in panels:
        rows_of_panel = frame[frame["_panel"] == panel]
        if (rows_of_panel[[column for column, _ in rows]].astype(float) > 0).to_numpy().any():
            drawn_panels.append(panel)
    for (panel, accumulator, order), group in frame.groupby(["_panel", "_accumulator", "_order"], sort=False):
        if not (group[[column for column, _ in rows]].astype(float) > 0).to_numpy().any():
            exact.append(_datapath_name(panel, accumulator, order))
    if not drawn_panels:
        raise ValueError("every error in the table is zero, so there is nothing to draw on log axes; the datapaths are exact at every K")

    subplot_titles = [f"{panel}: {label}" if panel else label for _, label in rows for panel in drawn_panels]
    figure = make_subplots(
        rows=len(rows), cols=len(drawn_panels), subplot_titles=subplot_titles, shared_xaxes=True, shared_yaxes=True,
        vertical_spacing=0.08, horizontal_spacing=0.06,
    )
    in_legend = set()
    for col, panel in enumerate(drawn_panels, start=1):
        in_panel = frame[frame["_panel"] == panel]
        for (accumulator, order), group in in_panel.groupby(["_accumulator", "_order"], sort=False):
            group = group.sort_values("k")
            name = f"{accumulator}, {order}" if order else accumulator
            color = color_for(accumulators.index(accumulator))
            style = orders.index(order)
            for row, (column, label) in enumerate(rows, start=1):
                values = group[column].astype(float).to_numpy()
                positive = values > 0
                if not positive.any():
                    continue
                exponent = growth_exponent(group["k"], values)
                growth = f"<br>fitted growth: K^{exponent:.2f}" if exponent is not None else ""
                ks = group["k"].to_numpy()[positive]
                figure.add_trace(
                    go.Scatter(
                        x=ks,
                        y=values[positive],
                        mode="lines+markers",
                        name=name,
                        legendgroup=name,
                        showlegend=name not in in_legend,
                        line={"color": color, "dash": _DASHES[style % len(_DASHES)], "width": 1.6},
                        marker={"symbol": _SYMBOLS[style % len(_SYMBOLS)], "size": 6},
                        text=[f"{panel + ' -> ' if panel else ''}{name}<br>K = {kk}<br>{label}: {v:.3g}{growth}" for kk, v in zip(ks, values[positive])],
                        hovertemplate="%{text}<extra></extra>",
                    ),
                    row=row,
                    col=col,
                )
                in_legend.add(name)
                if column == "max_normalized_error" and with_bound:
                    _add_bound(figure, group, name, color, row, col)
    tick_values = sorted(int(value) for value in frame["k"].unique())
    figure.update_xaxes(type="log", tickvals=tick_values, ticktext=[str(value) for value in tick_values], tickangle=-45)
    figure.update_xaxes(title_text="K (products per output)", row=len(rows))
    figure.update_yaxes(type="log", exponentformat="power")
    for row, (_, label) in enumerate(rows, start=1):
        figure.update_yaxes(title_text=label, title_font_size=11, row=row, col=1)
    figure.update_annotations(font_size=11)
    if exact:
        figure.add_annotation(
            text="exact (error 0) at every K: " + "; ".join(exact), xref="paper", yref="paper", x=0, y=1.0,
            yshift=38, showarrow=False, xanchor="left", font={"size": 11},
        )
    layout = base_layout(title, height=max(420, 90 + 300 * len(rows)))
    layout["margin"] = {"l": 80, "r": 20, "t": 100, "b": 70}
    figure.update_layout(**layout)
    return figure


def _add_bound(figure: go.Figure, group: pd.DataFrame, name: str, color: str, row: int, col: int) -> None:
    bound = group["bound_normalized_error"].astype(float).to_numpy()
    finite = np.isfinite(bound) & (bound > 0)
    if not finite.any():
        return
    ks = group["k"].to_numpy()[finite]
    figure.add_trace(
        go.Scatter(
            x=ks,
            y=bound[finite],
            mode="lines",
            name=f"{name}: bound",
            legendgroup=name,
            showlegend=False,
            line={"color": color, "dash": "dash", "width": 1},
            opacity=0.6,
            text=[f"{name}<br>K = {kk}<br>worst-case bound: {b:.3g}" for kk, b in zip(ks, bound[finite])],
            hovertemplate="%{text}<extra></extra>",
        ),
        row=row,
        col=col,
    )


def _datapath_name(panel: str, accumulator: str, order: str) -> str:
    parts = [part for part in (panel, accumulator) if part]
    name = " -> ".join(parts)
    return f"{name}, {order}" if order else name

