"""Roofline: each op placed by arithmetic intensity and attained FLOP/s, under its accelerator's roofs.

Input: one row per op (a per-op cost table) with

- `latency_s`;
- `flops`, or `macs` (then FLOPs = 2 x MACs);
- `dram_bytes`, or `dram_read_bytes` (plus `dram_write_bytes` when
  present), or `hbm_read_bytes` (plus `hbm_write_bytes`) for accelerators
  whose off-chip DRAM is HBM. A table that mixes GPUs with other
  accelerators has both, and each row takes the first level it has a
  value for;
- the roofs: `peak_flops_per_s` and `dram_bandwidth_bytes_per_s` per row,
  or `roofs=` (a list of `Roof`).

Arithmetic intensity is FLOPs per byte moved to or from DRAM; attained
FLOP/s is FLOPs over latency. An op that moves no DRAM bytes has no finite
intensity and is left out, with a note on the figure. Roofs read from the
columns come from the placed ops only, so the peak of vector work, which
has no MACs, draws no roof.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hwsim.report.columns import (
    configuration_columns,
    configuration_labels,
    hover_lines,
    require_columns,
    varying_columns,
)
from hwsim.report.style import base_layout, color_for
from hwsim.report.units import format_value, si_scale

log = logging.getLogger(__name__)

REQUIREMENTS = (("latency_s",), ("flops", "macs"), ("dram_bytes", "dram_read_bytes", "hbm_read_bytes"))
# Off-chip memory levels whose traffic sets the arithmetic intensity, in order of preference.
OFF_CHIP_LEVELS = ("dram", "hbm")
ROOF_COLUMNS = ("peak_flops_per_s", "dram_bandwidth_bytes_per_s")
TITLE = "Roofline: attained FLOP/s against FLOP per DRAM byte (log-log)"


@dataclass(frozen=True)
class Roof:
    """The compute and bandwidth roofs of one accelerator at one pair of operand formats."""

    label: str
    peak_flops_per_s: float
    bandwidth_bytes_per_s: float

    def __post_init__(self) -> None:
        for name in ("peak_flops_per_s", "bandwidth_bytes_per_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value > 0):
                raise ValueError(f"roof {self.label!r}: invalid {name}={value!r}; give a positive finite number in SI units")

    @property
    def ridge_intensity(self) -> float:
        """FLOP per byte where the bandwidth roof meets the compute roof."""
        return self.peak_flops_per_s / self.bandwidth_bytes_per_s


def systolic_roof(spec, activation_format: str, weight_format: str, *, label: str | None = None) -> Roof:
    """Compute the roofs of a systolic-array accelerator spec for one operand-format pair.

    Peak FLOP/s is 2 x PEs x MACs per PE cycle x clock_hz, where the PE
    mapping gives the MACs per cycle for these formats. The bandwidth is the
    DRAM level's.
    """
    from hwsim.hardware.systolic import SystolicArray

    array = SystolicArray(spec)
    mapping = array.mapping(activation_format, weight_format)
    peak = 2.0 * array.array.num_pes * mapping.macs_per_pe_cycle * spec.clock_hz
    dram = spec.memory_level("dram")
    bandwidth = dram.bandwidth_bytes_per_array_cycle(spec.clock_hz) * spec.clock_hz
    return Roof(label or f"{spec.name} {activation_format} x {weight_format}", peak, bandwidth)


def op_intensity(ops: pd.DataFrame) -> pd.DataFrame:
    """Add `flops` (from `macs` if needed), `dram_bytes` (DRAM or HBM traffic), `arithmetic_intensity_flops_per_byte` and `attained_flops_per_s`."""
    require_columns(ops, REQUIREMENTS, "roofline")
    frame = ops.copy()
    if "flops" not in frame.columns:
        frame["flops"] = 2.0 * frame["macs"].astype(float)
    if "dram_bytes" not in frame.columns:
        frame["dram_bytes"] = np.nan
        for level in OFF_CHIP_LEVELS:
            if f"{level}_read_bytes" not in frame.columns:
                continue
            level_bytes = frame[f"{level}_read_bytes"].astype(float)
            if f"{level}_write_bytes" in frame.columns:
                level_bytes = level_bytes + frame[f"{level}_write_bytes"].astype(float)
            # Rows of another accelerator kind have no value at this level (NaN) and keep the level found before.
            frame["dram_bytes"] = frame["dram_bytes"].fillna(level_bytes)
    latency = frame["latency_s"].astype(float)
    if (latency <= 0).any() or not np.isfinite(latency).all():
        bad = frame.loc[(latency <= 0) | ~np.isfinite(latency)].index[0]
        raise ValueError(f"row {bad}: latency_s={float(frame.at[bad, 'latency_s'])!r} must be a positive number of seconds")
    with np.errstate(divide="ignore", invalid="ignore"):
        frame["arithmetic_intensity_flops_per_byte"] = frame["flops"].astype(float) / frame["dram_bytes"].astype(float)
    frame["attained_flops_per_s"] = frame["flops"].astype(float) / latency
    return frame


def roofs_from_columns(ops: pd.DataFrame) -> list[Roof]:
    """Build one Roof per distinct (peak_flops_per_s, dram_bandwidth_bytes_per_s) pair, labelled by the configurations that share it."""
    require_columns(ops, tuple((column,) for column in ROOF_COLUMNS), "roofline's roofs")
    config = varying_columns(ops, configuration_columns(ops))
    labels = configuration_labels(ops, config)
    roofs = []
    for (peak, bandwidth), rows in ops.groupby(list(ROOF_COLUMNS), sort=True):
        names = sorted(set(labels.loc[rows.index]))
        listed = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        roofs.append(Roof(listed, float(peak), float(bandwidth)))
    return roofs


def roofline_figure(ops: pd.DataFrame, roofs: list[Roof] | None = None, *, color: str | None = None, title: str = TITLE) -> go.Figure:
    """Plot each op at (arithmetic intensity, attained FLOP/s) with the roofs.

    `roofs` defaults to the roof columns of `ops`. `color` is the column
    whose values get one marker trace each; by default `accelerator` when it
    varies, else the configuration label. Marker traces come first, then one
    line trace per roof.
    """
    frame = op_intensity(ops)
    placed = frame[np.isfinite(frame["arithmetic_intensity_flops_per_byte"]) & (frame["dram_bytes"] > 0) & (frame["flops"] > 0)]
    dropped = len(frame) - len(placed)
    if dropped:
        log.info("roofline: %d of %d ops moved no DRAM bytes or did no FLOPs and are not placed", dropped, len(frame))
    if placed.empty:
        raise ValueError("no op of the table moves DRAM bytes and does FLOPs, so none has a place on a roofline")
    if roofs is None:
        roofs = roofs_from_columns(placed)
    if not roofs:
        raise ValueError("the roofline needs at least one roof: pass roofs=[Roof(...)] or the columns " + " and ".join(ROOF_COLUMNS))

    peak_max = max(roof.peak_flops_per_s for roof in roofs)
    divisor, unit = si_scale(np.append(placed["attained_flops_per_s"].to_numpy(), peak_max), "FLOP/s")
    config = varying_columns(placed, configuration_columns(placed))
    if color is None and "accelerator" in config:
        color = "accelerator"
    if color is not None and color not in placed.columns:
        raise ValueError(f"color={color!r} is not a column of the table; choose from {', '.join(map(str, placed.columns))}")
    if color is not None:
        labels = placed[color].astype(str)
    elif config:
        labels = configuration_labels(placed, config)
    else:
        labels = pd.Series("ops", index=placed.index)
    described = [
        column
        for column in ("op", "kind", "phase", "activation_format", "weight_format", "bound", "utilization")
        if column in placed.columns
    ]
    hover = hover_lines(placed, config + described)

    figure = go.Figure()
    for index, label in enumerate(dict.fromkeys(labels)):
        rows = placed[labels == label]
        text = hover.loc[rows.index] + [
            f"<br>intensity: {format_value(i)} FLOP/B<br>attained: {format_value(a / divisor)} {unit}"
            for i, a in zip(rows["arithmetic_intensity_flops_per_byte"], rows["attained_flops_per_s"])
        ]
        figure.add_trace(
            go.Scatter(
                x=rows["arithmetic_intensity_flops_per_byte"],
                y=rows["attained_flops_per_s"] / divisor,
                mode="markers",
                name=label,
                text=text,
                hovertemplate="%{text}<extra></extra>",
                marker={"size": 9, "color": color_for(index), "line": {"width": 0.5, "color": "white"}},
            )
        )

    # The x range covers every op and every ridge point, so each roof shows its slope and its flat part.
    ridges = [roof.ridge_intensity for roof in roofs]
    low = min(float(placed["arithmetic_intensity_flops_per_byte"].min()), *ridges) / 4
    high = max(float(placed["arithmetic_intensity_flops_per_byte"].max()), *ridges) * 4
    for roof in roofs:
        xs = np.array([low, roof.ridge_intensity, high])
        ys = np.minimum(roof.peak_flops_per_s, roof.bandwidth_bytes_per_s * xs) / divisor
        figure.add_trace(
            go.Scatter(
                x=xs,
                y=ys,
                mode="lines",
                name=f"roof: {format_value(roof.peak_flops_per_s / divisor)} {unit}, {format_value(roof.bandwidth_bytes_per_s / 1e9)} GB/s",
                line={"color": "rgba(60,60,60,0.75)", "dash": "dash", "width": 1.5},
                hovertemplate=(
                    f"{roof.label}<br>peak: {format_value(roof.peak_flops_per_s / divisor)} {unit}"
                    f"<br>DRAM bandwidth: {format_value(roof.bandwidth_bytes_per_s / 1e9)} GB/s"
                    f"<br>ridge: {format_value(roof.ridge_intensity)} FLOP/B<extra></extra>"
                ),
            )
        )

    layout = base_layout(title)
    layout["xaxis"] = {"type": "log", "title": "arithmetic intensity (FLOP/B, DRAM bytes)"}
    layout["yaxis"] = {"type": "log", "title": f"attained ({unit})"}
    layout["legend"] = {**layout["legend"], "orientation": "h", "y": -0.2, "yanchor": "top"}
    layout["margin"] = {**layout["margin"], "b": 120}
    if dropped:
        layout["annotations"] = [
            {
                "text": f"{dropped} op(s) without DRAM traffic or FLOPs not placed",
                "xref": "paper", "yref": "paper", "x": 1, "xanchor": "right", "y": 1.0, "yanchor": "bottom", "showarrow": False, "font": {"size": 11},
            }
        ]
    figure.update_layout(**layout)
    return figure
