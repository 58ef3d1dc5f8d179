"""The Pareto scatter and front, on the error table of real weights and on per-configuration costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from test_report_cost_figures import op_table
from test_report_formats import minilm_weight

from hwsim.formats.report import error_table
from hwsim.report import MissingColumnsError, pareto_figure, pareto_mask

FORMATS = ("bf16", "fp8_e4m3", "fp8_e5m2", "int8_channel", "int4_g128", "mxfp8_e4m3", "mxfp6_e2m3", "mxfp4", "nvfp4")


def format_points() -> pd.DataFrame:
    return error_table(minilm_weight(), FORMATS)


def marker_traces(figure):
    return [trace for trace in figure.data if trace.mode == "markers"]


# The front


def test_pareto_mask_minimizes_both():
    x = [1.0, 2.0, 3.0, 2.5, 4.0]
    y = [5.0, 3.0, 1.0, 3.5, 1.0]
    # (2.5, 3.5) is beaten by (2, 3); (4, 1) by (3, 1).
    assert pareto_mask(x, y).tolist() == [True, True, True, False, False]


def test_pareto_mask_maximized_objective():
    bits = [4.25, 4.5, 8.25, 16.0, 8.0]
    sqnr_db = [18.0, 17.0, 31.0, 60.0, 32.0]
    # Fewer bits and more SQNR are better: (4.25, 18) beats (4.5, 17), and (8, 32) beats (8.25, 31).
    assert pareto_mask(bits, sqnr_db, maximize_y=True).tolist() == [True, False, False, True, True]
    # Maximizing both leaves only the point with the most bits and the most SQNR.
    assert pareto_mask(bits, sqnr_db, maximize_x=True, maximize_y=True).tolist() == [False, False, False, True, False]


def test_pareto_mask_ignores_nan_and_keeps_duplicates():
    mask = pareto_mask([1.0, 1.0, np.nan, 2.0], [2.0, 2.0, 0.0, 1.0])

    assert mask.tolist() == [True, True, False, True]


# The figure on the error table of real weights


def test_pareto_figure_front_of_formats():
    points = format_points()
    figure = pareto_figure(points, "bits_per_element", "sqnr_db")

    flags = ["on the Pareto front" in text for text in marker_traces(figure)[0].text]
    on_front = set(points.loc[flags, "format"])
    # bf16 has the highest SQNR of the formats.
    assert "bf16" in on_front
    # E5M2 keeps one mantissa bit fewer than E4M3 at the same 8 bits, so E4M3 beats it.
    assert "fp8_e5m2" not in on_front
    assert figure.layout.meta["pareto_points"] == len(on_front)
    front_line = figure.data[-1]
    assert front_line.name == "Pareto front"
    assert len(front_line.x) == len(on_front)
    assert list(front_line.x) == sorted(front_line.x)


def test_pareto_figure_axes_title_and_direction():
    figure = pareto_figure(format_points(), "bits_per_element", "sqnr_db")

    assert figure.layout.xaxis.title.text == "bits per element (bits)"
    assert figure.layout.yaxis.title.text == "SQNR (dB)"
    assert figure.layout.title.text == "Pareto front: SQNR (dB) against bits per element (bits)"
    assert figure.layout.title.subtitle.text.startswith("lower bits per element and higher SQNR are better")
    # x is minimized, so the front steps right then up.
    assert figure.data[-1].line.shape == "hv"


def test_pareto_hover_shows_full_row():
    points = format_points()
    figure = pareto_figure(points, "bits_per_element", "sqnr_db")

    text = marker_traces(figure)[0].text[list(points["format"]).index("mxfp4")]
    assert text.startswith("<b>mxfp4</b><br>format: mxfp4")
    for column in ("bits_per_element: 4.25", "sqnr_db: ", "storage_bytes: ", "mse: ", "max_abs_error: ", "relative_rms_error: "):
        assert column in text


def test_pareto_figure_colors_by_column():
    points = format_points()
    points["family"] = np.where(points["format"].str.startswith("mx"), "MX", "other")

    figure = pareto_figure(points, "bits_per_element", "sqnr_db", color="family")

    assert [trace.name for trace in marker_traces(figure)] == ["other", "MX"]
    assert sum(len(trace.x) for trace in marker_traces(figure)) == len(points)


def test_pareto_figure_costs_per_configuration():
    table = op_table()
    decode = table[table["phase"] == "decode"]
    points = decode.groupby(["accelerator", "policy"], sort=False, as_index=False).agg(energy_j=("energy_j", "sum"), latency_s=("latency_s", "sum"))

    figure = pareto_figure(points, "energy_j", "latency_s")

    # One marker trace per accelerator, then the front.
    assert [trace.name for trace in figure.data] == ["tpu-v1", "research-32x32", "Pareto front"]
    assert figure.layout.xaxis.title.text == "energy (mJ)"
    assert figure.layout.yaxis.title.text == "latency (ms)"
    assert "accelerator: tpu-v1<br>policy: w8a8" in figure.data[0].text[0]
    np.testing.assert_allclose(np.asarray(figure.data[0].x) * 1e-3, points.loc[points["accelerator"] == "tpu-v1", "energy_j"])


def test_pareto_figure_uses_producer_front():
    points = format_points()
    points["pareto"] = points["format"].isin(["bf16", "mxfp4"])

    figure = pareto_figure(points, "bits_per_element", "sqnr_db")

    assert figure.layout.meta["pareto_points"] == 2


def test_pareto_figure_missing_objective_named():
    with pytest.raises(MissingColumnsError, match="Pareto scatter needs column.*perplexity.*the table has format"):
        pareto_figure(format_points(), "bits_per_element", "perplexity")


def test_pareto_figure_rejects_text_objective():
    with pytest.raises(ValueError, match="objective column 'format' has dtype"):
        pareto_figure(format_points(), "format", "sqnr_db")
