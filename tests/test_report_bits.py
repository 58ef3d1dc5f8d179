"""The per-layer bit heat map, on bit policies applied to SmolLM2-135M's tensors."""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from hwsim.policy import Quantizer, Rule, preset
from hwsim.report import MissingColumnsError, bit_heatmap_figure, layer_bits_frame
from hwsim.workload import load_model

EDGE_LAYERS = ((0, 1), (28, 29))


@functools.lru_cache(maxsize=None)
def _bits_table() -> pd.DataFrame:
    spec = load_model("smollm2-135m")
    edge = Rule(("weight",), Quantizer("int8_channel"), layers=EDGE_LAYERS, name="edge layers in int8")
    mixed = preset("w4a16-g128").with_rules([edge], name="w4a16-edge8")
    return pd.concat([layer_bits_frame(mixed, spec), layer_bits_frame(preset("quarot-w4a4kv4"), spec)], ignore_index=True)


def bits_table() -> pd.DataFrame:
    return _bits_table().copy()


def test_layer_bits_frame_rows_and_formats():
    table = bits_table()
    mixed = table[table["policy"] == "w4a16-edge8"]

    # SmolLM2-135M has 30 layers; per layer, 7 linear weights, their 7 inputs, and the key and value cache.
    assert len(mixed) == 30 * 16
    assert set(mixed["role"]) == {"weight", "activation", "kv_cache"}
    q_weight = mixed[mixed["tensor"] == "q_proj weight"].set_index("layer")["format"]
    assert q_weight[0] == q_weight[1] == q_weight[28] == q_weight[29] == "int8_channel"
    assert set(q_weight[2:28]) == {"int4_g128"}
    assert set(mixed.loc[mixed["tensor"] == "q_proj input", "format"]) == {"fp16"}


def test_layer_bits_frame_counts_scales():
    table = bits_table()
    mixed = table[table["policy"] == "w4a16-edge8"]
    down = mixed[mixed["tensor"] == "down_proj weight"].set_index("layer")["bits_per_element"]

    # int8 per output channel with an fp16 scale: 8 + 16 / 1536 bits for the [576, 1536] down projection.
    assert down[0] == pytest.approx(8 + 16 / 1536)
    # int4 in groups of 128 along the 1536 inputs: 12 whole groups, each with a 16-bit scale.
    assert down[10] == 4 + 16 / 128
    # The q projection has 576 inputs, so its fifth group of 128 is padded to full size: 5 x (128 x 4 + 16) / 576.
    q_weight = mixed[mixed["tensor"] == "q_proj weight"].set_index("layer")["bits_per_element"]
    assert q_weight[10] == pytest.approx(5 * (128 * 4 + 16) / 576)


def test_heatmap_one_trace_per_policy():
    table = bits_table()
    figure = bit_heatmap_figure(table)

    assert len(figure.data) == 2
    assert [annotation.text for annotation in figure.layout.annotations] == ["policy: w4a16-edge8", "policy: quarot-w4a4kv4"]
    assert "bits" in figure.layout.title.text.lower()
    assert figure.layout.xaxis2.title.text == "layer"
    # One shared colour scale: the first trace shows it, both use the same range.
    assert figure.data[0].showscale and not figure.data[1].showscale
    assert figure.data[0].zmin == figure.data[1].zmin == table["bits_per_element"].min()
    assert figure.data[0].zmax == figure.data[1].zmax == table["bits_per_element"].max()


def test_heatmap_cells_match_table():
    table = bits_table()
    figure = bit_heatmap_figure(table)
    heatmap = figure.data[0]
    mixed = table[table["policy"] == "w4a16-edge8"]

    z = np.asarray(heatmap.z)
    assert z.shape == (16, 30)
    row = list(heatmap.y).index("gate_proj weight")
    expected = mixed[mixed["tensor"] == "gate_proj weight"].sort_values("layer")["bits_per_element"].to_numpy()
    np.testing.assert_array_equal(z[row], expected)


def test_heatmap_hover_names_format():
    figure = bit_heatmap_figure(bits_table())
    heatmap = figure.data[0]
    row = list(heatmap.y).index("o_proj weight")

    assert heatmap.text[row][0].startswith("w4a16-edge8<br>layer 0<br>o_proj weight<br>format: int8_channel<br>")
    assert heatmap.text[row][5].startswith("w4a16-edge8<br>layer 5<br>o_proj weight<br>format: int4_g128<br>")
    assert heatmap.text[row][5].endswith("bits per element")


def test_heatmap_rejects_duplicate_cells():
    table = bits_table()
    table = pd.concat([table, table.iloc[[0]]], ignore_index=True)

    with pytest.raises(ValueError, match="two rows for layer 0 and tensor 'q_proj input'"):
        bit_heatmap_figure(table)


def test_heatmap_missing_columns_named():
    with pytest.raises(MissingColumnsError, match="bit heat map needs column.*bits_per_element"):
        bit_heatmap_figure(bits_table().drop(columns=["bits_per_element"]))
