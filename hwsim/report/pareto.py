"""Pareto scatter: one point per configuration on two objectives, the front drawn through the non-dominated points.

Input: one row per configuration (a sweep's results table) with the two
objective columns. Every other column whose value names a configuration
(accelerator, policy, formats, scenario, text columns) goes into the hover
text, so a point on the chart can be traced back to its full configuration.
A boolean column `pareto` marks the front when the producer computed it;
otherwise the front is computed here for the two plotted objectives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hwsim.report.columns import configuration_columns, configuration_labels, hover_lines, require_columns, varying_columns
from hwsim.report.style import base_layout, color_for
from hwsim.report.units import axis_title, si_scale, unit_of

# Objectives that build_dashboard looks for, in order of preference.
COST_OBJECTIVES = (
    "energy_j_per_token", "latency_s_per_token", "energy_j", "latency_s", "area_mm2",
    "bits_per_parameter", "bits_per_element", "weight_bytes", "storage_bytes",
)
QUALITY_OBJECTIVES = (
    "perplexity", "perplexity_increase", "weight_sqnr_db", "sqnr_db", "relative_rms_error", "mse", "cosine_similarity", "accuracy",
)
# Objectives where larger is better; every other objective is minimized.
MAXIMIZED = ("sqnr_db", "weight_sqnr_db", "cosine_similarity", "accuracy", "tokens_per_s", "throughput_tokens_per_s")


def is_maximized(column: str) -> bool:
    """Return whether larger values of an objective are better: true for the names in MAXIMIZED and any column in dB."""
    return column in MAXIMIZED or column.endswith("_db")


def pareto_mask(x, y, *, maximize_x: bool = False, maximize_y: bool = False) -> np.ndarray:
    """Mark the points no other point dominates (at least as good on both objectives, better on one).

    NaN points are never on the front. Exact duplicates of a front point are all on the front.
    """
    xs = np.asarray(x, dtype=np.float64) * (-1.0 if maximize_x else 1.0)
    ys = np.asarray(y, dtype=np.float64) * (-1.0 if maximize_y else 1.0)
    valid = np.isfinite(xs) & np.isfinite(ys)
    mask = np.zeros(len(xs), dtype=bool)
    for i in np.flatnonzero(valid):
        no_worse = valid & (xs <= xs[i]) & (ys <= ys[i])
        better = (xs < xs[i]) | (ys < ys[i])
        mask[i] = not np.any(no_worse & better)
    return mask


def pareto_figure(
    points: pd.DataFrame,
    x: str,
    y: str,
    *,
    color: str | None = None,
    configuration: Sequence[str] | None = None,
    maximize_x: bool | None = None,
    maximize_y: bool | None = None,
    title: str | None = None,
) -> go.Figure:
    """Scatter `points` on `x` and `y` with the Pareto front; hover shows every configuration column.

    color: column that colors the points (one trace per value); defaults to
        `accelerator` when present and varying.
    configuration: columns that label a point, listed first in the hover
        text; defaults to every configuration column of the table. The
        hover text then lists the objectives and every other column.
    maximize_x, maximize_y: direction of each objective; by default dB
        columns, accuracy and cosine similarity are maximized and every
        other objective minimized.
    Traces: one marker trace per color value, then the front as a line.
    """
    require_columns(points, ((x,), (y,)), "Pareto scatter")
    for column in (x, y):
        if not pd.api.types.is_numeric_dtype(points[column]):
            raise ValueError(f"objective column {column!r} has dtype {points[column].dtype}; a Pareto axis needs numbers")
    maximize_x = is_maximized(x) if maximize_x is None else maximize_x
    maximize_y = is_maximized(y) if maximize_y is None else maximize_y
    if configuration is None:
        configuration = configuration_columns(points, exclude=(x, y))
    if color is None and "accelerator" in points.columns and points["accelerator"].nunique() > 1:
        color = "accelerator"
    if color is not None and color not in points.columns:
        raise ValueError(f"color={color!r} is not a column of the table; choose from {', '.join(map(str, points.columns))}")

    if "pareto" in points.columns and points["pareto"].dtype == bool:
        front = points["pareto"].to_numpy()
    else:
        front = pareto_mask(points[x], points[y], maximize_x=maximize_x, maximize_y=maximize_y)
    x_div, x_unit = si_scale(points[x], unit_of(x))
    y_div, y_unit = si_scale(points[y], unit_of(y))
    objectives = [column for column in (x, y) if column not in configuration]
    extra = [column for column in points.columns if column not in configuration and column not in objectives and column != "pareto"]
    hover = hover_lines(points, list(configuration))
    measured = hover_lines(points, objectives + extra)
    text = (
        "<b>" + configuration_labels(points, varying_columns(points, list(configuration)) or list(configuration)) + "</b><br>"
        + hover + "<br>—<br>" + measured
        + np.where(front, "<br><b>on the Pareto front</b>", "")
    )

    figure = go.Figure()
    groups = [(str(value), points[color] == value) for value in dict.fromkeys(points[color])] if color else [("configurations", pd.Series(True, index=points.index))]
    for index, (name, selected) in enumerate(groups):
        rows = points[selected]
        figure.add_trace(
            go.Scatter(
                x=rows[x] / x_div,
                y=rows[y] / y_div,
                mode="markers",
                name=name,
                text=text[selected.to_numpy()],
                hovertemplate="%{text}<extra></extra>",
                marker={
                    "size": np.where(front[selected.to_numpy()], 13, 9),
                    "color": color_for(index),
                    "symbol": np.where(front[selected.to_numpy()], "diamond", "circle"),
                    "line": {"width": 0.5, "color": "white"},
                },
            )
        )
    front_points = points[front].sort_values(x)
    figure.add_trace(
        go.Scatter(
            x=front_points[x] / x_div,
            y=front_points[y] / y_div,
            mode="lines",
            name="Pareto front",
            line={"color": "rgba(0,0,0,0.6)", "width": 1.5, "shape": "hv" if not maximize_x else "vh"},
            hoverinfo="skip",
        )
    )

    better = (
        f"{'higher' if maximize_x else 'lower'} {axis_title(x, '')} and {'higher' if maximize_y else 'lower'} {axis_title(y, '')} "
        "are better; diamonds mark the front"
    )
    layout = base_layout(title or f"Pareto front: {axis_title(y, y_unit)} against {axis_title(x, x_unit)}")
    layout["title"]["subtitle"] = {"text": better, "font": {"size": 11}}
    layout["margin"] = {**layout["margin"], "t": 75}
    layout["xaxis"] = {"title": axis_title(x, x_unit)}
    layout["yaxis"] = {"title": axis_title(y, y_unit)}
    figure.update_layout(**layout)
    figure.update_layout(meta={"pareto_points": int(front.sum()), "x": x, "y": y})
    return figure
