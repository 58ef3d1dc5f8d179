"""Format value grids and qdq error histograms, on the format registry and real fp32 weights of all-MiniLM-L6-v2."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from hwsim import qdq
from hwsim.assets import minilm_dir
from hwsim.formats.report import error_table
from hwsim.report import MissingColumnsError, format_values_figure, format_values_frame, qdq_error_figure, qdq_error_frame

QUERY_WEIGHT = "encoder.layer.0.attention.self.query.weight"


@functools.lru_cache(maxsize=None)
def _minilm_weight() -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(minilm_dir() / "model.safetensors"))[QUERY_WEIGHT]


def minilm_weight() -> np.ndarray:
    """The fp32 query projection of all-MiniLM-L6-v2's first layer, shape (384, 384)."""
    return _minilm_weight().copy()


# Value grids


def test_values_frame_lists_every_code():
    frame = format_values_frame(["fp4_e2m1", "int4", "fp8_e4m3", "mxfp4"])

    counts = frame.groupby("format", sort=False)["code"].count().to_dict()
    assert counts == {"fp4_e2m1": 16, "int4": 16, "fp8_e4m3": 256, "mxfp4": 16}
    fp4 = frame[frame["format"] == "fp4_e2m1"]
    assert sorted(set(np.abs(fp4["value"]))) == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
    # mxfp4 shows its element format, FP4 E2M1, before the shared scale.
    mxfp4 = frame[frame["format"] == "mxfp4"]
    assert list(mxfp4["element"].unique()) == ["fp4_e2m1"]
    np.testing.assert_array_equal(mxfp4["value"].to_numpy(), fp4["value"].to_numpy())


def test_values_frame_rejects_wide_formats():
    with pytest.raises(ValueError, match=r"format 'fp16' has 16-bit elements.*pass max_bits=16"):
        format_values_frame(["fp16"])


def test_values_figure_traces_and_title():
    figure = format_values_figure(format_values_frame(["int4", "fp4_e2m1", "fp8_e4m3"]))

    assert [trace.name for trace in figure.data] == [
        "int4: 16 values",
        "fp4_e2m1: 15 values",
        # OCP E4M3: 0x7F and 0xFF are NaN, and +0 and -0 are one value.
        "fp8_e4m3: 253 values, 2 NaN/Inf codes",
    ]
    assert "value / largest finite value, dimensionless" in figure.layout.title.text
    assert figure.layout.xaxis.title.text == "value / largest finite value"


def test_values_figure_scales_by_largest_magnitude():
    figure = format_values_figure(format_values_frame(["int4", "fp4_e2m1"]))

    int4, fp4 = figure.data
    # int4 spans -8 to 7, so it reaches -1 and 7/8; FP4 E2M1 is symmetric around its max of 6.
    assert min(int4.x) == -1.0
    assert max(int4.x) == pytest.approx(7 / 8)
    assert min(fp4.x) == -1.0
    assert max(fp4.x) == 1.0
    assert sorted(set(np.round(np.abs(fp4.x) * 6, 12))) == [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]


def test_values_figure_hover_gives_code_and_value():
    figure = format_values_figure(format_values_frame(["fp8_e4m3"]))

    texts = figure.data[0].text
    # Code 0x7E is the largest finite E4M3 value, 448.
    assert "fp8_e4m3<br>code 0x7E<br>value 448<br>value / max 1" in texts


def test_values_figure_missing_code_named():
    frame = format_values_frame(["int4"]).drop(columns=["code"])

    with pytest.raises(MissingColumnsError, match="format value grid needs column.*code"):
        format_values_figure(frame)


# Error histograms


def test_error_frame_contains_qdq_error():
    weight = minilm_weight()
    frame = qdq_error_frame(weight, ["int8_channel", "mxfp4"], tensor=QUERY_WEIGHT)

    assert len(frame) == 2 * weight.size
    mxfp4 = frame[frame["format"] == "mxfp4"]
    expected = qdq(weight, "mxfp4").astype(np.float64).ravel() - weight.astype(np.float64).ravel()
    np.testing.assert_array_equal(mxfp4["error"].to_numpy(), expected)
    np.testing.assert_array_equal(mxfp4["value"].to_numpy(), weight.astype(np.float64).ravel())


def test_error_frame_rejects_nan():
    weight = minilm_weight()
    weight[0, 0] = np.nan

    with pytest.raises(ValueError, match="contains NaN or Inf"):
        qdq_error_frame(weight, ["int8_channel"])


def test_error_figure_panels_match_error_table():
    weight = minilm_weight()
    names = ["int8_channel", "fp8_e4m3", "mxfp6_e2m3", "int4_g128", "mxfp4"]
    figure = qdq_error_figure(qdq_error_frame(weight, names, tensor=QUERY_WEIGHT))

    assert len(figure.data) == len(names)
    table = error_table(weight, names).set_index("format")
    for annotation, name in zip(figure.layout.annotations, names):
        assert annotation.text == f"{name}: SQNR {table.at[name, 'sqnr_db']:.1f} dB"
    assert QUERY_WEIGHT in figure.layout.title.text
    assert "qdq(x) - x in the tensor's units" in figure.layout.title.text


def test_error_figure_bins_cover_every_element():
    weight = minilm_weight()
    figure = qdq_error_figure(qdq_error_frame(weight, ["int4_g128", "mxfp4"]), bins=41)

    for trace in figure.data:
        assert len(trace.x) == 41
        assert float(np.sum(trace.y)) == pytest.approx(1.0)
    # Each panel spans the largest error of its format, so mxfp4's widest bar edge is its max abs error.
    mxfp4 = figure.data[1]
    max_error = float(np.max(np.abs(qdq(weight, "mxfp4").astype(np.float64) - weight)))
    assert mxfp4.x[-1] + mxfp4.width[-1] / 2 == pytest.approx(max_error)


def test_error_figure_lossless_format():
    weight = minilm_weight()
    # fp32 weights are exact in fp32, so every error is zero.
    figure = qdq_error_figure(qdq_error_frame(weight, ["fp32"]))

    assert figure.layout.annotations[0].text == "fp32: SQNR inf dB (lossless)"
    assert list(figure.data[0].y) == [1.0]


def test_error_figure_rejects_few_bins():
    frame = qdq_error_frame(minilm_weight(), ["int8_channel"])

    with pytest.raises(ValueError, match="invalid bins=2"):
        qdq_error_figure(frame, bins=2)
