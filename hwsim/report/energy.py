"""Energy breakdown: stacked bars of compute, SRAM, DRAM and static energy.

Input: a per-op or per-configuration table with one or more of the columns
`compute_energy_j`, `sram_energy_j`, `dram_energy_j` and `static_energy_j`.
Rows with the same bar label are summed. The bars are the configurations
when the configuration columns vary, else the ops (`op`). A `phase` column
with more than one value gives one panel per phase, each with its own y
axis and SI prefix, because a prefill and one decode step differ by orders
of magnitude.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwsim.report.columns import configuration_columns, configuration_labels, require_columns, varying_columns
from hwsim.report.style import COMPONENT_COLORS, base_layout
from hwsim.report.units import format_value, panel_units, si_scale

COMPONENTS = ("compute", "sram", "dram", "static")
COMPONENT_COLUMNS = tuple(f"{component}_energy_j" for component in COMPONENTS)
REQUIREMENTS = (COMPONENT_COLUMNS,)


def bar_columns(frame: pd.DataFrame, by: Sequence[str] | None = None) -> list[str]:
    """Return the columns that label the bars: `by`, else the varying configuration columns, else ["op"] when present."""
    if isinstance(by, str):
        by = [by]
    if by is not None:
        missing = [column for column in by if column not in frame.columns]
        if missing:
            raise ValueError(f"by={list(by)}: column(s) {', '.join(missing)} not in the table; choose from {', '.join(map(str, frame.columns))}")
        return list(by)
    config = varying_columns(frame, configuration_columns(frame))
    if config:
        return config
    return ["op"] if "op" in frame.columns else []


def phase_panels(frame: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Split by `phase` when it takes more than one value; otherwise one panel of all rows."""
    if "phase" in frame.columns and frame["phase"].nunique() > 1:
        return [(str(phase), rows) for phase, rows in frame.groupby("phase", sort=False)]
    label = str(frame["phase"].iloc[0]) if "phase" in frame.columns else ""
    return [(label, frame)]


def energy_breakdown_figure(frame: pd.DataFrame, *, by: Sequence[str] | None = None, title: str | None = None) -> go.Figure:
    """Stack the energy components per bar; one trace per component and phase panel.

    Components absent from the table are left out. Each panel's unit (J with
    an SI prefix chosen from its tallest bar) is in the title and on its y axis.
    """
    require_columns(frame, REQUIREMENTS, "energy breakdown")
    components = [(component, f"{component}_energy_j") for component in COMPONENTS if f"{component}_energy_j" in frame.columns]
    for _, column in components:
        values = frame[column].astype(float)
        if not np.isfinite(values).all() or (values < 0).any():
            raise ValueError(f"column {column} contains a negative or non-finite energy; energies are non-negative joules")
    labels_by = bar_columns(frame, by)
    frame = frame.assign(_bar=configuration_labels(frame, labels_by))
    panels = phase_panels(frame)
    units = []

    figure = make_subplots(rows=1, cols=len(panels), subplot_titles=[f"phase: {name}" if name else "" for name, _ in panels])
    for col, (_, rows) in enumerate(panels, start=1):
        sums = rows.groupby("_bar", sort=False)[[c for _, c in components]].sum()
        bar_total = sums.sum(axis=1)
        divisor, unit = si_scale(bar_total.to_numpy(), "J")
        units.append(unit)
        for component, column in components:
            share = np.where(bar_total > 0, sums[column] / bar_total.where(bar_total > 0, 1.0), 0.0)
            figure.add_trace(
                go.Bar(
                    x=list(sums.index),
                    y=sums[column] / divisor,
                    name=component,
                    legendgroup=component,
                    showlegend=col == 1,
                    marker_color=COMPONENT_COLORS[component],
                    text=[f"{bar}<br>{component}: {format_value(v / divisor)} {unit} ({s:.0%})" for bar, v, s in zip(sums.index, sums[column], share)],
                    textposition="none",
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=1,
                col=col,
            )
        figure.update_yaxes(title_text=f"energy ({unit})", row=1, col=col)
        figure.update_xaxes(title_text=" / ".join(labels_by) or "", tickangle=-35, automargin=True, row=1, col=col)

    bar_kind = " / ".join(labels_by) if labels_by else "all rows"
    layout = base_layout(title or f"Energy by component per {bar_kind} ({panel_units(panels, units)}, stacked)")
    layout["barmode"] = "stack"
    figure.update_layout(**layout)
    return figure
