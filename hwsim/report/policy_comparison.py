"""Bit policies side by side: stored bits per parameter, a per-token cost on each accelerator, and perplexity measured against quoted.

| figure | function | columns it needs |
| --- | --- | --- |
| bits per parameter | `bits_per_parameter_figure` | policy, bits_per_parameter; the *_bits_per_parameter parts stack the bar |
| per-token cost | `per_token_figure` | policy, accelerator, a per-token column such as energy_j_per_token; phase makes panels |
| perplexity table | `perplexity_table_figure` | policy, model, perplexity, source; fp16_perplexity, bits_per_parameter |

`POLICY_FIGURES` lists them as dashboard figures, for
`build_dashboard(..., figures=POLICY_FIGURES)`. Each table should hold one
model's rows where the figure compares policies on one model: the two bar
figures raise ValueError for a table with several models.
"""

from __future__ import annotations

import math
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwsim.report.columns import require_columns
from hwsim.report.dashboard import FigureSpec
from hwsim.report.energy import phase_panels
from hwsim.report.style import base_layout, color_for
from hwsim.report.units import axis_title, format_value, quantity_of, si_scale, unit_of

# Parts of the stored bits, as `hwsim.policy.BitsBreakdown` splits them, in stacking order.
BITS_PARTS = ("element", "scale", "zero_point", "outlier", "index")
BITS_PART_COLUMNS = tuple(f"{part}_bits_per_parameter" for part in BITS_PARTS)
BITS_PART_COLORS = {"element": "#0072B2", "scale": "#E69F00", "zero_point": "#009E73", "outlier": "#D55E00", "index": "#CC79A7"}

BITS_REQUIREMENTS = (("policy",), ("bits_per_parameter",))
PER_TOKEN_REQUIREMENTS = (("policy",), ("accelerator",), ("energy_j_per_token", "latency_s_per_token"))
TABLE_REQUIREMENTS = (("policy",), ("model",), ("perplexity",), ("source",))
# Text of a table cell with no value.
MISSING_TEXT = "not found here"


def _single_model(frame: pd.DataFrame, figure: str) -> str | None:
    """Return the table's one model, or None without a model column; raise for several."""
    if "model" not in frame.columns:
        return None
    models = list(dict.fromkeys(frame["model"].dropna()))
    if len(models) > 1:
        raise ValueError(f"the {figure} compares policies on one model, but the table has {len(models)} ({', '.join(map(str, models))}); pass one model's rows")
    return str(models[0]) if models else None


def bits_per_parameter_figure(frame: pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """Draw one bar per policy of its stored bits per parameter, stacked by part when the part columns are there.

    Parts are the columns `element_bits_per_parameter`, `scale_...`,
    `zero_point_...`, `outlier_...` and `index_...`. They must add up to
    `bits_per_parameter`, which labels the top of each bar. Policies keep
    the table's order.
    """
    require_columns(frame, BITS_REQUIREMENTS, "bits-per-parameter chart")
    model = _single_model(frame, "bits-per-parameter chart")
    if frame["policy"].duplicated().any():
        repeated = ", ".join(map(str, dict.fromkeys(frame.loc[frame["policy"].duplicated(), "policy"])))
        raise ValueError(f"the bits-per-parameter chart takes one row per policy; {repeated} appear more than once")
    totals = frame["bits_per_parameter"].astype(float)
    if not np.isfinite(totals).all() or (totals <= 0).any():
        raise ValueError("column bits_per_parameter contains a non-positive or non-finite value; bits per parameter are positive")
    parts = [(part, column) for part, column in zip(BITS_PARTS, BITS_PART_COLUMNS) if column in frame.columns]
    if parts:
        summed = frame[[column for _, column in parts]].astype(float).sum(axis=1)
        mismatch = ~np.isclose(summed, totals, rtol=1e-9, atol=1e-9)
        if mismatch.any():
            policy = frame.loc[mismatch, "policy"].iloc[0]
            raise ValueError(
                f"the bit parts of policy {policy!r} add up to {summed[mismatch].iloc[0]:.6g}, not its bits_per_parameter "
                f"{totals[mismatch].iloc[0]:.6g}; give parts that sum to the total, or leave them out"
            )

    policies = frame["policy"].astype(str).tolist()
    figure = go.Figure()
    if not parts:
        parts_to_draw = [("total", "bits_per_parameter")]
    else:
        parts_to_draw = [(part, column) for part, column in parts if (frame[column] != 0).any()]
    for part, column in parts_to_draw:
        values = frame[column].astype(float).to_numpy()
        figure.add_trace(
            go.Bar(
                x=policies,
                y=values,
                name=part.replace("_", " "),
                marker_color=BITS_PART_COLORS.get(part, color_for(0)),
                text=[f"{policy}<br>{part.replace('_', ' ')}: {value:.4g} bits" for policy, value in zip(policies, values)],
                textposition="none",
                hovertemplate="%{text}<extra></extra>",
            )
        )
    figure.add_trace(
        go.Scatter(
            x=policies,
            y=totals,
            mode="text",
            text=[f"{value:.3g}" for value in totals],
            textposition="top center",
            showlegend=False,
            hoverinfo="skip",
        )
    )
    on_model = f" on {model}" if model else ""
    layout = base_layout(title or f"Stored bits per parameter of each policy{on_model}")
    layout["barmode"] = "stack"
    layout["xaxis"] = {"title": "policy", "tickangle": -35, "automargin": True}
    layout["yaxis"] = {"title": "bits per parameter", "range": [0, float(totals.max()) * 1.12]}
    figure.update_layout(**layout)
    return figure


def per_token_figure(frame: pd.DataFrame, column: str = "energy_j_per_token", *, title: str | None = None) -> go.Figure:
    """Draw bars of a per-token cost: policies along x, one trace per accelerator, one panel per phase, on a log axis.

    A boolean column `emulated` hatches the bars of runs where the
    accelerator converts formats it lacks. A text column `emulation` and a
    boolean `fits` (False: the model does not fit in main memory) go into
    the hover text. Each panel's SI prefix is chosen from its largest value.
    """
    require_columns(frame, (("policy",), ("accelerator",), (column,)), f"{quantity_of(column)} chart")
    model = _single_model(frame, f"{quantity_of(column)} chart")
    values = frame[column].astype(float)
    if not np.isfinite(values).all() or (values <= 0).any():
        raise ValueError(f"column {column} contains a non-positive or non-finite value; a per-token cost on a log axis must be positive")
    panels = phase_panels(frame)
    accelerators = list(dict.fromkeys(frame["accelerator"].astype(str)))
    policies = list(dict.fromkeys(frame["policy"].astype(str)))
    unit = unit_of(column)

    figure = make_subplots(
        rows=len(panels), cols=1, subplot_titles=[f"phase: {name}" if name else "" for name, _ in panels], vertical_spacing=0.14
    )
    for row, (_, rows) in enumerate(panels, start=1):
        divisor, prefixed = si_scale(rows[column].to_numpy(), unit)
        for index, accelerator in enumerate(accelerators):
            subset = rows[rows["accelerator"].astype(str) == accelerator]
            if subset["policy"].duplicated().any():
                raise ValueError(f"the {quantity_of(column)} chart takes one row per policy, accelerator and phase; {accelerator} repeats a policy")
            selected = subset.set_index(subset["policy"].astype(str)).reindex(policies)
            emulated = selected["emulated"].fillna(False).astype(bool).to_numpy() if "emulated" in selected.columns else np.zeros(len(policies), dtype=bool)
            hover = []
            for policy, value, is_emulated, (_, record) in zip(policies, selected[column], emulated, selected.iterrows()):
                if isinstance(value, float) and math.isnan(value):
                    hover.append(f"{policy} on {accelerator}: no result")
                    continue
                lines = [f"<b>{policy}</b> on {accelerator}", f"{quantity_of(column)}: {format_value(value / divisor)} {prefixed}"]
                if is_emulated:
                    lines.append(f"emulated: {record.get('emulation', 'yes')}")
                if "fits" in selected.columns and record["fits"] is not None and not bool(record["fits"]):
                    lines.append("does not fit in main memory")
                hover.append("<br>".join(lines))
            figure.add_trace(
                go.Bar(
                    x=policies,
                    y=selected[column].astype(float) / divisor,
                    name=accelerator,
                    legendgroup=accelerator,
                    showlegend=row == 1,
                    marker={"color": color_for(index), "pattern": {"shape": ["/" if flag else "" for flag in emulated]}},
                    text=hover,
                    textposition="none",
                    hovertemplate="%{text}<extra></extra>",
                ),
                row=row,
                col=1,
            )
        # Bars on a log axis start at its lower end, so start it at the decade below the smallest bar, not where autorange would.
        scaled = rows[column].astype(float) / divisor
        low, high = math.floor(math.log10(scaled.min())), math.log10(scaled.max()) + 0.15
        figure.update_yaxes(type="log", range=[low, high], title_text=f"{quantity_of(column)} ({prefixed})", row=row, col=1)
        figure.update_xaxes(tickangle=-35, automargin=True, row=row, col=1)

    on_model = f" of {model}" if model else ""
    hatched = "; hatched bars are emulated" if "emulated" in frame.columns and frame["emulated"].fillna(False).astype(bool).any() else ""
    layout = base_layout(title or f"{axis_title(column, '').capitalize()}{on_model} per policy and accelerator (log scale{hatched})", height=360 * len(panels) + 120)
    layout["barmode"] = "group"
    figure.update_layout(**layout)
    return figure


def _cell(record: pd.Series, with_source: bool) -> str:
    value = record["perplexity"]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING_TEXT
    text = f"{value:.4g}"
    baseline = record.get("fp16_perplexity")
    if baseline is not None and not (isinstance(baseline, float) and math.isnan(baseline)):
        text += f" (fp16 {baseline:.4g})"
    if with_source:
        text += f"<br><i>{record['source']}</i>"
    return text


def _line_count(text: str, characters_per_line: int = 90) -> int:
    """Estimate the lines a table cell takes: its <br> breaks plus wrapping of long lines."""
    return sum(1 + len(line) // characters_per_line for line in text.split("<br>"))


def perplexity_table_figure(frame: pd.DataFrame, *, measured_prefix: str = "measured here", title: str | None = None) -> go.Figure:
    """Lay out perplexities as a table: one row per policy, one column per model, measured and quoted values apart.

    Input: one row per (policy, model, source), long form. A row whose
    `source` starts with `measured_prefix` is a measurement; its column
    title names it. Other rows are quoted values, and each cell lists every
    quote with its source; a NaN perplexity reads "not found here".
    `fp16_perplexity` adds the baseline of the same table or run, and
    `bits_per_parameter` adds a column.
    """
    require_columns(frame, TABLE_REQUIREMENTS, "perplexity table")
    measured = frame["source"].astype(str).str.startswith(measured_prefix)
    columns: dict[str, pd.DataFrame] = {}
    for model, rows in frame[measured].groupby("model", sort=False):
        columns[f"{model}<br>{measured_prefix}"] = rows
    for model, rows in frame[~measured].groupby("model", sort=False):
        columns[f"{model}<br>quoted"] = rows
    policies = list(dict.fromkeys(frame["policy"].astype(str)))

    header = ["policy"]
    cells: list[list[str]] = [policies]
    if "bits_per_parameter" in frame.columns:
        bits = frame.groupby("policy", sort=False)["bits_per_parameter"].first()
        header.append("bits per parameter")
        cells.append([format_value(float(bits.get(policy, math.nan))) for policy in policies])
    for label, rows in columns.items():
        is_measured = label.endswith(measured_prefix)
        texts = []
        for policy in policies:
            matches = rows[rows["policy"].astype(str) == policy]
            if matches.empty:
                texts.append(MISSING_TEXT)
                continue
            quoted = [_cell(record, with_source=not is_measured) for _, record in matches.iterrows()]
            found = [text for text in quoted if text != MISSING_TEXT]
            texts.append("<br>".join(found) if found else MISSING_TEXT)
        header.append(label)
        cells.append(texts)

    widths = [1.2]
    if "bits_per_parameter" in frame.columns:
        widths.append(0.8)
    for label in columns:
        widths.append(1.4 if label.endswith(measured_prefix) else 3.0)
    figure = go.Figure(
        go.Table(
            columnwidth=widths,
            header={"values": [f"<b>{text}</b>" for text in header], "align": "left", "fill_color": "#e8eef5", "font": {"size": 12}},
            cells={"values": cells, "align": "left", "font": {"size": 11}, "height": 26},
        )
    )
    # Plotly sizes table rows to their text but not the figure to its rows, so estimate the height from the tallest cell of each row.
    lines = [max(_line_count(text) for text in row_texts) for row_texts in zip(*cells)]
    layout = base_layout(title or "Perplexity measured here and quoted from the sources", height=int(120 + 17 * sum(lines) + 8 * len(policies)))
    layout["margin"] = {"l": 10, "r": 10, "t": 60, "b": 10}
    figure.update_layout(**layout)
    return figure


POLICY_FIGURES = (
    FigureSpec("bits per parameter", BITS_REQUIREMENTS, lambda frame, **_: bits_per_parameter_figure(frame), wide=True),
    FigureSpec(
        "per-token cost",
        PER_TOKEN_REQUIREMENTS,
        lambda frame, **_: per_token_figure(frame, "energy_j_per_token" if "energy_j_per_token" in frame.columns else "latency_s_per_token"),
        wide=True,
    ),
    FigureSpec("perplexity table", TABLE_REQUIREMENTS, lambda frame, **_: perplexity_table_figure(frame), wide=True),
)
