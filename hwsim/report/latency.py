"""Latency per phase: bars of summed op latency, one panel per phase, stacked by op kind.

Input: a per-op table (or per-phase totals) with `phase` and `latency_s`.
The ops of a phase run one after another, so a bar is the sum of its rows'
latencies. Bars are the configurations when the configuration columns
vary; with one configuration there is one bar per panel, labelled by it.
A `kind` column (GEMM, GEMV, attention, ...) stacks each bar by op kind.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwsim.report.columns import configuration_columns, configuration_labels, require_columns, varying_columns
from hwsim.report.energy import bar_columns, phase_panels
from hwsim.report.style import base_layout, color_for
from hwsim.report.units import format_value, panel_units, si_scale

REQUIREMENTS = (("phase",), ("latency_s",))


def phase_latency_figure(frame: pd.DataFrame, *, by: Sequence[str] | None = None, title: str | None = None) -> go.Figure:
    """Sum `latency_s` per bar and phase; one trace per op kind (or one trace) per phase panel.

    Each panel's unit (s with an SI prefix) is in the title and on its y axis.
    """
    require_columns(frame, REQUIREMENTS, "latency-per-phase chart")
    latency = frame["latency_s"].astype(float)
    if not np.isfinite(latency).all() or (latency < 0).any():
        raise ValueError("column latency_s contains a negative or non-finite value; latencies are non-negative seconds")
    if by is None:
        configs = configuration_columns(frame)
        by = varying_columns(frame, configs) or configs
    else:
        by = bar_columns(frame, by)
    labels = configuration_labels(frame, list(by))
    stack = "kind" if "kind" in frame.columns else None
    frame = frame.assign(_bar=labels, _stack=frame[stack].astype(str) if stack else "all ops")
    kinds = list(dict.fromkeys(frame["_stack"]))
    panels = phase_panels(frame)
    units = []

    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"phase: {name}" for name, _ in panels])
    for col, (_, rows) in enumerate(panels, start=1):
        sums = rows.pivot_table(index="_bar", columns="_stack", values="latency_s", aggfunc="sum", sort=False).fillna(0.0)
        sums = sums.reindex(list(dict.fromkeys(rows["_bar"])))
        divisor, unit = si_scale(sums.sum(axis=1).to_numpy(), "s")
        units.append(unit)
        bar_total = sums.sum(axis=1)
        for index, kind in enumerate(kinds):
            if kind not in sums.columns:
                continue
            values = sums[kind]
            figure.add_trace(
                go.Bar(
                    x=list(sums.index),
                    y=values / divisor,
                    name=kind,
                    legendgroup=kind,
                    showlegend=col == 1,
                    marker_color=color_for(index),
                    text=[
                        f"{bar}<br>{kind}: {format_value(v / divisor)} {unit} of {format_value(t / divisor)} {unit}"
                        for bar, v, t in zip(sums.index, values, bar_total)
                    ],
                    textposition="none",
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        figure.update_yaxes(title_text=f"latency ({unit})", row=1, col=col)
        figure.update_xaxes(tickangle=-35, automargin=True, row=1, col=col)

    stacked = ", stacked by op kind" if stack else ""
    layout = base_layout(title or f"Latency per phase ({panel_units(panels, units)}{stacked})")
    layout["barmode"] = "stack"
    figure.update_layout(**layout)
    return figure
