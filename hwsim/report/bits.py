"""Per-layer bit heat map: layer x tensor -> stored bits per element under a bit policy.

Input: one row per (layer, tensor) with `layer` (int), `tensor` (or
`role`) and `bits_per_element`; `format` and `policy` are optional. Several
policies give one heat map row each, sharing the colour scale.
`layer_bits_frame` builds this table from a `Policy` and a `ModelSpec`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from hwsim.report.columns import first_present, require_columns
from hwsim.report.style import base_layout
from hwsim.report.units import format_value

REQUIREMENTS = (("layer",), ("tensor", "role"), ("bits_per_element",))
TITLE = "Bits per element by layer and tensor (bits, scales and zero points included)"
_MATMUL_KINDS = ("GEMM", "GEMV")


def layer_bits_frame(policy, spec, scenario=None) -> pd.DataFrame:
    """Tabulate the stored bits per element of each block tensor in each layer of `spec` under `policy`.

    Tensors: the weight and the input of every GEMM or GEMV in a block, and
    the key and value cache that attention reads. `scenario` sets the KV
    shape, which matters to policies that group along tokens or keep a
    full-precision window. The default is a decode at 1024 cached tokens.
    Columns: policy, layer, tensor, role, format, bits_per_element.
    """
    from hwsim.policy import Policy
    from hwsim.workload import Scenario, build_workload

    if not hasattr(policy, "storage_bits"):
        policy = Policy.from_uniform(policy)
    if scenario is None:
        scenario = Scenario.decode(batch_size=1, context_tokens=1024)
    workload = build_workload(spec, scenario)
    rows = []
    seen = set()
    for op in workload.ops:
        if not op.name.startswith("layers.*"):
            continue
        short = op.name.rsplit(".", 1)[-1]
        for tensor in op.tensors:
            label = _tensor_label(op, short, tensor)
            if label is None or label in seen:
                continue
            seen.add(label)
            for layer in range(spec.num_layers):
                bits = policy.storage_bits(tensor, layer_index=layer, op=op)
                rows.append(
                    {
                        "policy": policy.name,
                        "layer": layer,
                        "tensor": label,
                        "role": tensor.role,
                        "format": policy.format_for(tensor, layer_index=layer, op=op),
                        "bits_per_element": bits.bits_per_element,
                    }
                )
    if not rows:
        raise ValueError(f"model {spec.name!r} has no block ops named 'layers.*' with weights or a KV cache to show")
    return pd.DataFrame(rows)


def _tensor_label(op, short: str, tensor) -> str | None:
    if op.kind in _MATMUL_KINDS and tensor.role == "weight" and tensor.parameter_kind == "linear":
        return f"{short} weight"
    if op.kind in _MATMUL_KINDS and tensor.role == "activation":
        return f"{short} input"
    if tensor.role == "kv_cache" and tensor.access == "read":
        return tensor.name.replace("_", " ")
    return None


def bit_heatmap_figure(frame: pd.DataFrame, *, title: str = TITLE) -> go.Figure:
    """Draw one heat map per policy (x: layer, y: tensor, colour: bits per element), with one shared colour bar."""
    require_columns(frame, REQUIREMENTS, "bit heat map")
    tensor_column = first_present(frame, ("tensor", "role"))
    bits = frame["bits_per_element"].astype(float)
    if not np.isfinite(bits).all() or (bits <= 0).any():
        raise ValueError("column bits_per_element contains a value that is not a positive finite number of bits")
    duplicated = frame.duplicated([*(["policy"] if "policy" in frame.columns else []), "layer", tensor_column])
    if duplicated.any():
        row = frame[duplicated].iloc[0]
        raise ValueError(f"two rows for layer {row['layer']} and {tensor_column} {row[tensor_column]!r}: give one row per layer and tensor (and policy)")

    policies = list(dict.fromkeys(frame["policy"])) if "policy" in frame.columns else [""]
    low, high = float(bits.min()), float(bits.max())
    if low == high:
        low, high = low - 1.0, high + 1.0
    figure = make_subplots(
        rows=len(policies), cols=1, shared_xaxes=True, vertical_spacing=0.08 if len(policies) > 1 else 0.0,
        subplot_titles=[f"policy: {name}" if name else "" for name in policies],
    )
    max_tensors = 0
    for row, name in enumerate(policies, start=1):
        rows = frame[frame["policy"] == name] if name else frame
        tensors = list(dict.fromkeys(rows[tensor_column]))
        layers = sorted(rows["layer"].unique())
        z = rows.pivot(index=tensor_column, columns="layer", values="bits_per_element").reindex(index=tensors, columns=layers)
        formats = (
            rows.pivot(index=tensor_column, columns="layer", values="format").reindex(index=tensors, columns=layers)
            if "format" in rows.columns
            else None
        )
        text = [
            [
                f"{name + '<br>' if name else ''}layer {layer}<br>{tensor}<br>"
                + (f"format: {formats.at[tensor, layer]}<br>" if formats is not None else "")
                + f"{format_value(z.at[tensor, layer])} bits per element"
                for layer in layers
            ]
            for tensor in tensors
        ]
        figure.add_trace(
            go.Heatmap(
                x=layers,
                y=tensors,
                z=z.to_numpy(dtype=float),
                zmin=low,
                zmax=high,
                colorscale="Viridis",
                coloraxis=None,
                showscale=row == 1,
                colorbar={"title": {"text": "bits"}},
                text=text,
                hovertemplate="%{text}<extra></extra>",
                xgap=1,
                ygap=1,
            ),
            row=row,
            col=1,
        )
        max_tensors = max(max_tensors, len(tensors))
        figure.update_yaxes(autorange="reversed", row=row, col=1)
    figure.update_xaxes(title_text="layer", row=len(policies), col=1)
    height = max(300, 120 + len(policies) * (40 + 18 * max_tensors))
    figure.update_layout(**base_layout(title, height=height))
    return figure
