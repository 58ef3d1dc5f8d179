"""Format value grids and qdq error histograms.

Value grid input: one row per code with `format`, `code` and `value` (the
element value before any scale). `format_values_frame` builds it from the
format registry.

Error histogram input: one row per tensor element and format with
`format` and `error` (qdq(x) - x). An optional `value` column (x) adds the
SQNR to each panel title, and `tensor` names the tensor in the title.
`qdq_error_frame` builds this table with `hwsim.qdq` on a real tensor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwsim.report.columns import require_columns
from hwsim.report.style import base_layout, color_for
from hwsim.report.units import format_value

VALUE_REQUIREMENTS = (("format",), ("code",), ("value",))
ERROR_REQUIREMENTS = (("format",), ("error",))
VALUES_TITLE = "Representable values of each element format (value / largest finite value, dimensionless; hover for the value)"
# Element formats wider than this have too many codes to draw one marker each.
MAX_GRID_BITS = 8


def format_values_frame(names: Sequence[str], *, max_bits: int = MAX_GRID_BITS) -> pd.DataFrame:
    """Tabulate every code of each format's element format: format, element, bits, code, value.

    A scaled format (mxfp4, nvfp4, int4_g128) contributes the codes of its
    element format, before the scale; a dialect format its first dialect.
    NaN and Inf codes are kept, with their value. Raises ValueError for an
    element wider than `max_bits`, whose grid would hide each value.
    """
    from hwsim import formats

    frames = []
    for name in names:
        fmt = formats.get(name)
        element = getattr(fmt, "element", fmt)
        if element.width > max_bits:
            raise ValueError(
                f"format {name!r} has {element.width}-bit elements, 2**{element.width} codes; a value grid draws formats of "
                f"up to {max_bits} bits: leave it out or pass max_bits={element.width}"
            )
        values = np.asarray(element.values, dtype=np.float64)
        frames.append(
            pd.DataFrame(
                {
                    "format": fmt.name or name,
                    "element": element.name,
                    "bits": element.width,
                    "code": np.arange(len(values)),
                    "value": values,
                }
            )
        )
    if not frames:
        raise ValueError("no format names given: pass names such as ['fp8_e4m3', 'mxfp4']")
    return pd.concat(frames, ignore_index=True)


def format_values_figure(frame: pd.DataFrame, *, title: str = VALUES_TITLE) -> go.Figure:
    """Draw each format's finite values on a number line scaled to its largest magnitude; one trace per format.

    Formats go bottom to top in table order. A trace's name counts its
    finite values and its NaN or Inf codes.
    """
    require_columns(frame, VALUE_REQUIREMENTS, "format value grid")
    names = list(dict.fromkeys(frame["format"]))
    figure = go.Figure()
    for index, name in enumerate(names):
        rows = frame[frame["format"] == name]
        values = rows["value"].astype(float).to_numpy()
        finite = np.isfinite(values)
        special = int((~finite).sum())
        largest = float(np.abs(values[finite]).max()) if finite.any() else 0.0
        if largest == 0.0:
            raise ValueError(f"format {name!r} has no non-zero finite value to scale its grid by")
        finite_rows = rows[finite]
        bits = int(rows["bits"].iloc[0]) if "bits" in rows.columns else None
        digits = max(1, -(-bits // 4)) if bits else 1
        codes = [f"0x{int(c):0{digits}X}" for c in finite_rows["code"]]
        distinct = len(np.unique(values[finite]))
        label = f"{name}: {distinct} values" + (f", {special} NaN/Inf codes" if special else "")
        figure.add_trace(
            go.Scatter(
                x=values[finite] / largest,
                y=[name] * int(finite.sum()),
                mode="markers",
                name=label,
                marker={"symbol": "line-ns-open", "size": 16, "line": {"width": 1.5}, "color": color_for(index)},
                text=[f"{name}<br>code {code}<br>value {format_value(v)}<br>value / max {v / largest:.4g}" for code, v in zip(codes, values[finite])],
                hovertemplate="%{text}<extra></extra>",
            )
        )
    layout = base_layout(title, height=max(260, 110 + 34 * len(names)))
    layout["xaxis"] = {"title": "value / largest finite value", "range": [-1.05, 1.05], "zeroline": True}
    layout["yaxis"] = {"title": "", "categoryorder": "array", "categoryarray": names}
    layout["showlegend"] = False
    figure.update_layout(**layout)
    return figure


def qdq_error_frame(x, names: Sequence[str], *, axis: int = -1, tensor: str = "") -> pd.DataFrame:
    """Quantize then dequantize `x` in each format and tabulate every element: format, tensor, value, error.

    `error` is qdq(x) - x in float64. Raises ValueError for an empty
    tensor or one with NaN or Inf.
    """
    from hwsim.formats import get, qdq

    values = np.asarray(x, dtype=np.float32)
    if values.size == 0:
        raise ValueError("the tensor is empty: pass a tensor with at least one element")
    if not np.isfinite(values).all():
        raise ValueError("the tensor contains NaN or Inf: qdq error histograms need finite values; remove them first")
    flat = values.reshape(-1).astype(np.float64)
    frames = []
    for name in names:
        fmt = get(name)
        error = qdq(values, fmt, axis=axis).astype(np.float64).reshape(-1) - flat
        frames.append(pd.DataFrame({"format": fmt.name or name, "tensor": tensor, "value": flat, "error": error}))
    if not frames:
        raise ValueError("no format names given: pass names such as ['int8_channel', 'mxfp4']")
    frame = pd.concat(frames, ignore_index=True)
    frame["format"] = frame["format"].astype("category")
    return frame


def qdq_error_figure(frame: pd.DataFrame, *, bins: int = 81, columns: int = 4, title: str | None = None) -> go.Figure:
    """Histogram qdq(x) - x per format, one panel each with its own x range; one bar trace per format.

    Bins are computed here with numpy, so the page carries `bins` counts per
    format, not every element. Bars show the share of elements in each bin.
    With a `value` column each panel title gives the SQNR in dB.
    """
    require_columns(frame, ERROR_REQUIREMENTS, "qdq error histogram")
    if isinstance(bins, bool) or not isinstance(bins, int) or bins < 3:
        raise ValueError(f"invalid bins={bins!r}: pass an integer of at least 3")
    names = list(dict.fromkeys(frame["format"].astype(str)))
    panel_titles = []
    histograms = []
    for name in names:
        rows = frame[frame["format"].astype(str) == name]
        error = rows["error"].astype(float).to_numpy()
        if not np.isfinite(error).all():
            raise ValueError(f"format {name!r}: the error column contains NaN or Inf; qdq of finite values must give finite errors")
        reach = float(np.abs(error).max())
        edges = np.linspace(-reach, reach, bins + 1) if reach > 0 else np.array([-0.5, 0.5])
        counts, edges = np.histogram(error, bins=edges)
        histograms.append((name, counts / len(error), edges))
        panel_titles.append(f"{name}: SQNR {_sqnr_text(rows)}" if "value" in rows.columns else name)

    rows_needed = math.ceil(len(names) / columns)
    figure = make_subplots(rows=rows_needed, cols=min(columns, len(names)), subplot_titles=panel_titles, vertical_spacing=0.12 if rows_needed > 1 else 0.0, horizontal_spacing=0.05)
    for index, (name, share, edges) in enumerate(histograms):
        centers = (edges[:-1] + edges[1:]) / 2
        row, col = divmod(index, columns)
        figure.add_trace(
            go.Bar(
                x=centers,
                y=share,
                width=np.diff(edges),
                name=name,
                marker={"color": color_for(index), "line": {"width": 0}},
                text=[f"{name}<br>error {format_value(lo)} to {format_value(hi)}<br>{s:.2%} of elements" for lo, hi, s in zip(edges[:-1], edges[1:], share)],
                textposition="none",
                hovertemplate="%{text}<extra></extra>",
            ),
            row=row + 1,
            col=col + 1,
        )
        figure.update_xaxes(tickformat=".1e", nticks=4, row=row + 1, col=col + 1)
    figure.update_annotations(font_size=11)
    tensor = _tensor_name(frame)
    default_title = f"qdq error per format{' on ' + tensor if tensor else ''} (x: qdq(x) - x in the tensor's units; y: share of elements)"
    layout = base_layout(title or default_title, height=max(300, 80 + 190 * rows_needed))
    layout["showlegend"] = False
    layout["bargap"] = 0
    figure.update_layout(**layout)
    return figure


def _sqnr_text(rows: pd.DataFrame) -> str:
    signal = float(np.sum(rows["value"].astype(float).to_numpy() ** 2))
    noise = float(np.sum(rows["error"].astype(float).to_numpy() ** 2))
    if noise == 0:
        return "inf dB (lossless)"
    if signal == 0:
        return "undefined (all-zero tensor)"
    return f"{10 * math.log10(signal / noise):.1f} dB"


def _tensor_name(frame: pd.DataFrame) -> str:
    if "tensor" not in frame.columns:
        return ""
    names = [str(name) for name in dict.fromkeys(frame["tensor"]) if str(name)]
    return ", ".join(names)
