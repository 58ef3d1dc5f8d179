"""Roofline, energy breakdown and latency-per-phase figures on per-op costs from the systolic-array model.

The per-op table costs the matmul ops of SmolLM2-135M (a prefill of 256
tokens and one decode step) on tpu-v1 with int8 operands and on
research-32x32 with int8 activations and int4 weights.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import pytest

from hwsim.hardware import GemmOp, SystolicArray, load_accelerator
from hwsim.report import MissingColumnsError, Roof, energy_breakdown_figure, phase_latency_figure, roofline_figure, systolic_roof
from hwsim.workload import Scenario, build_workload, load_model

CONFIGURATIONS = (("tpu-v1", "w8a8", ("int8", "int8", "int8")), ("research-32x32", "w4a8", ("int8", "int4", "int8")))
PHASES = (("prefill", Scenario.prefill(batch_size=1, prompt_tokens=256)), ("decode", Scenario.decode(batch_size=1, context_tokens=256)))
EXTENSIVE = ("macs", "cycles", "latency_s", "energy_j", "compute_energy_j", "sram_energy_j", "dram_energy_j", "static_energy_j")


@functools.lru_cache(maxsize=None)
def _op_table() -> pd.DataFrame:
    spec = load_model("smollm2-135m")
    rows = []
    for accelerator_name, policy, formats in CONFIGURATIONS:
        accelerator = load_accelerator(accelerator_name)
        array = SystolicArray(accelerator)
        roof = systolic_roof(accelerator, formats[0], formats[1])
        for phase, scenario in PHASES:
            for op in build_workload(spec, scenario).ops:
                if op.kind not in ("GEMM", "GEMV", "attention"):
                    continue
                row = array.cost(GemmOp(op.m, op.n, op.k, *formats, name=op.name)).to_row()
                runs = op.count * op.batch
                for column in [*EXTENSIVE, *(c for c in row if c.endswith("_bytes"))]:
                    row[column] *= runs
                row.update(
                    policy=policy, phase=phase, kind=op.kind, flops=2 * row["macs"],
                    peak_flops_per_s=roof.peak_flops_per_s, dram_bandwidth_bytes_per_s=roof.bandwidth_bytes_per_s,
                )
                rows.append(row)
    return pd.DataFrame(rows)


def op_table() -> pd.DataFrame:
    """A fresh copy of the per-op cost table, one row per matmul op, phase and configuration."""
    return _op_table().copy()


def marker_traces(figure):
    return [trace for trace in figure.data if trace.mode == "markers"]


def line_traces(figure):
    return [trace for trace in figure.data if trace.mode == "lines"]


# Roofline


def test_systolic_roof_of_tpu_v1():
    roof = systolic_roof(load_accelerator("tpu-v1"), "int8", "int8")

    # 256 x 256 int8 MACs at 700 MHz, 2 FLOPs each; 34 GB/s of DDR3.
    assert roof.peak_flops_per_s == 2 * 256 * 256 * 700e6
    assert roof.bandwidth_bytes_per_s == 34e9
    assert roof.ridge_intensity == pytest.approx(2 * 256 * 256 * 700e6 / 34e9)


def test_roofline_title_axes_and_traces():
    figure = roofline_figure(op_table())

    assert "FLOP/s" in figure.layout.title.text
    assert "FLOP per DRAM byte" in figure.layout.title.text
    assert figure.layout.xaxis.type == "log"
    assert figure.layout.yaxis.type == "log"
    assert figure.layout.xaxis.title.text == "arithmetic intensity (FLOP/B, DRAM bytes)"
    # Peaks of 91.75 TFLOP/s (tpu-v1) and 2 TFLOP/s (research-32x32) put the axis in TFLOP/s.
    assert figure.layout.yaxis.title.text == "attained (TFLOP/s)"
    # The accelerator varies, so one marker trace per accelerator, and one line per distinct roof.
    assert [trace.name for trace in marker_traces(figure)] == ["tpu-v1", "research-32x32"]
    assert len(line_traces(figure)) == 2


def test_roofline_places_each_op_at_its_intensity():
    table = op_table()
    figure = roofline_figure(table)
    tpu = table[table["accelerator"] == "tpu-v1"]
    dram = tpu["dram_read_bytes"] + tpu["dram_write_bytes"]

    trace = marker_traces(figure)[0]
    np.testing.assert_allclose(trace.x, tpu["flops"] / dram, rtol=1e-12)
    np.testing.assert_allclose(np.asarray(trace.y) * 1e12, tpu["flops"] / tpu["latency_s"], rtol=1e-12)


def test_roofline_points_stay_under_their_roof():
    table = op_table()
    figure = roofline_figure(table)

    for trace, (name, rows) in zip(marker_traces(figure), table.groupby("accelerator", sort=False)):
        peak = rows["peak_flops_per_s"].iloc[0] / 1e12
        bandwidth = rows["dram_bandwidth_bytes_per_s"].iloc[0] / 1e12
        roof = np.minimum(peak, bandwidth * np.asarray(trace.x))
        assert np.all(np.asarray(trace.y) <= roof * (1 + 1e-9)), name


def test_roofline_flat_roof_is_the_peak():
    figure = roofline_figure(op_table())

    peaks = sorted(max(trace.y) for trace in line_traces(figure))
    # tpu-v1: 2 x 65,536 PEs x 700 MHz. research-32x32 fuses int8 x int4 into 2 MACs per PE cycle: 2 x 1024 x 2 x 500 MHz.
    assert peaks == pytest.approx([2 * 1024 * 2 * 500e6 / 1e12, 2 * 65536 * 700e6 / 1e12], rel=1e-12)


def test_roofline_hover_names_configuration_and_op():
    figure = roofline_figure(op_table())

    text = marker_traces(figure)[1].text[0]
    assert "accelerator: research-32x32" in text
    assert "policy: w4a8" in text
    assert "op: layers.*.self_attn.q_proj" in text
    assert "phase: prefill" in text
    assert "FLOP/B" in text


def test_roofline_from_macs_and_given_roofs():
    table = op_table().drop(columns=["flops", "peak_flops_per_s", "dram_bandwidth_bytes_per_s"])
    table = table[table["accelerator"] == "tpu-v1"]
    roof = Roof("tpu-v1 int8", 2 * 65536 * 700e6, 34e9)

    figure = roofline_figure(table, [roof])

    trace = marker_traces(figure)[0]
    dram = table["dram_read_bytes"] + table["dram_write_bytes"]
    np.testing.assert_allclose(trace.x, 2 * table["macs"] / dram, rtol=1e-12)
    assert line_traces(figure)[0].name == "roof: 91.75 TFLOP/s, 34 GB/s"


def test_roofline_leaves_out_ops_without_dram_traffic():
    table = op_table()
    table.loc[table.index[0], ["dram_read_bytes", "dram_write_bytes"]] = 0.0

    figure = roofline_figure(table)

    placed = sum(len(trace.x) for trace in marker_traces(figure))
    assert placed == len(table) - 1
    assert "1 op(s) without DRAM traffic or FLOPs not placed" in figure.layout.annotations[0].text


def test_roofline_missing_columns_named():
    with pytest.raises(MissingColumnsError, match="roofline needs column.*latency_s"):
        roofline_figure(op_table().drop(columns=["latency_s"]))
    with pytest.raises(MissingColumnsError, match="peak_flops_per_s"):
        roofline_figure(op_table().drop(columns=["peak_flops_per_s"]))


def test_roofline_rejects_zero_latency():
    table = op_table()
    table.loc[table.index[3], "latency_s"] = 0.0

    with pytest.raises(ValueError, match="latency_s=0.0 must be a positive number of seconds"):
        roofline_figure(table)


def test_roof_rejects_non_positive_bandwidth():
    with pytest.raises(ValueError, match="invalid bandwidth_bytes_per_s=0"):
        Roof("broken", 1e12, 0)


# Energy breakdown


def test_energy_breakdown_traces_and_units():
    figure = energy_breakdown_figure(op_table())

    # Four components in each of the two phase panels.
    assert len(figure.data) == 8
    assert [trace.name for trace in figure.data[:4]] == ["compute", "sram", "dram", "static"]
    assert figure.layout.barmode == "stack"
    # research-32x32's decode step takes tens of mJ, so both panels are in mJ.
    assert figure.layout.yaxis.title.text == "energy (mJ)"
    assert figure.layout.yaxis2.title.text == "energy (mJ)"
    assert figure.layout.title.text == "Energy by component per accelerator / policy (mJ, stacked)"


def test_energy_breakdown_title_names_each_panel_unit():
    table = op_table()
    table = table[(table["accelerator"] == "research-32x32") & (table["kind"] == "attention")]

    figure = energy_breakdown_figure(table)

    # Attention on research-32x32 takes mJ in the prefill and µJ in one decode step.
    assert figure.layout.yaxis.title.text == "energy (mJ)"
    assert figure.layout.yaxis2.title.text == "energy (µJ)"
    assert "(prefill: mJ, decode: µJ, stacked)" in figure.layout.title.text


def test_energy_breakdown_bars_sum_to_total_energy():
    table = op_table()
    figure = energy_breakdown_figure(table)

    prefill_traces = figure.data[:4]
    assert list(prefill_traces[0].x) == ["tpu-v1 / w8a8", "research-32x32 / w4a8"]
    stacked_mj = sum(np.asarray(trace.y) for trace in prefill_traces)
    expected_j = table[table["phase"] == "prefill"].groupby("accelerator", sort=False)["energy_j"].sum().to_numpy()
    np.testing.assert_allclose(stacked_mj * 1e-3, expected_j, rtol=1e-9)


def test_energy_breakdown_hover_gives_share():
    figure = energy_breakdown_figure(op_table())

    text = figure.data[2].text[0]
    assert text.startswith("tpu-v1 / w8a8<br>dram: ")
    assert "mJ (" in text
    assert text.endswith("%)")


def test_energy_breakdown_one_configuration_bars_per_op():
    table = op_table()
    table = table[(table["accelerator"] == "tpu-v1") & (table["phase"] == "decode")]

    figure = energy_breakdown_figure(table)

    assert len(figure.data) == 4
    assert "layers.*.mlp.up_proj" in list(figure.data[0].x)
    assert figure.layout.title.text.startswith("Energy by component per op (")


def test_energy_breakdown_rejects_negative_energy():
    table = op_table()
    table.loc[table.index[0], "dram_energy_j"] = -1.0

    with pytest.raises(ValueError, match="dram_energy_j contains a negative"):
        energy_breakdown_figure(table)


def test_energy_breakdown_missing_columns_named():
    table = op_table().drop(columns=["compute_energy_j", "sram_energy_j", "dram_energy_j", "static_energy_j"])

    with pytest.raises(MissingColumnsError, match="compute_energy_j or sram_energy_j or dram_energy_j or static_energy_j"):
        energy_breakdown_figure(table)


# Latency per phase


def test_phase_latency_traces_stack_by_kind():
    table = op_table()
    figure = phase_latency_figure(table)

    # Prefill has GEMM, attention and the last-position LM head (GEMV); decode has GEMV and attention.
    names = [(trace.name, trace.xaxis) for trace in figure.data]
    assert names == [("GEMM", "x"), ("attention", "x"), ("GEMV", "x"), ("attention", "x2"), ("GEMV", "x2")]
    assert "stacked by op kind" in figure.layout.title.text
    assert figure.layout.yaxis.title.text.startswith("latency (")


def test_phase_latency_bars_sum_to_phase_latency():
    table = op_table()
    figure = phase_latency_figure(table)

    decode = [trace for trace in figure.data if trace.xaxis == "x2"]
    unit = figure.layout.yaxis2.title.text
    divisor = {"latency (s)": 1.0, "latency (ms)": 1e-3, "latency (µs)": 1e-6}[unit]
    stacked = sum(np.asarray(trace.y) for trace in decode) * divisor
    expected = table[table["phase"] == "decode"].groupby("accelerator", sort=False)["latency_s"].sum().to_numpy()
    np.testing.assert_allclose(stacked, expected, rtol=1e-9)
    assert figure.layout.title.text == f"Latency per phase ({unit[len('latency ('):-1]}, stacked by op kind)"


def test_phase_latency_hover_names_configuration():
    figure = phase_latency_figure(op_table())

    assert figure.data[0].text[1].startswith("research-32x32 / w4a8<br>GEMM: ")


def test_phase_latency_missing_phase_named():
    with pytest.raises(MissingColumnsError, match="latency-per-phase chart needs column.*phase"):
        phase_latency_figure(op_table().drop(columns=["phase"]))


def test_bars_by_named_column():
    table = op_table()

    energy = energy_breakdown_figure(table, by="accelerator")
    latency = phase_latency_figure(table, by=["accelerator"])

    assert list(energy.data[0].x) == ["tpu-v1", "research-32x32"]
    assert list(latency.data[0].x) == ["tpu-v1", "research-32x32"]
    with pytest.raises(ValueError, match=r"by=\['chip'\]: column\(s\) chip not in the table"):
        phase_latency_figure(table, by="chip")


def test_roofline_reads_hbm_traffic():
    table = op_table()
    table = table.rename(columns={"dram_read_bytes": "hbm_read_bytes", "dram_write_bytes": "hbm_write_bytes"})

    figure = roofline_figure(table)

    tpu = table[table["accelerator"] == "tpu-v1"]
    np.testing.assert_allclose(marker_traces(figure)[0].x, tpu["flops"] / (tpu["hbm_read_bytes"] + tpu["hbm_write_bytes"]), rtol=1e-12)


def test_roofline_mixes_hbm_and_dram_rows():
    table = op_table()
    tpu = table["accelerator"] == "tpu-v1"
    # research-32x32's rows report their traffic as HBM, as a GPU's do, beside tpu-v1's DRAM rows.
    as_hbm = table.loc[~tpu].rename(columns={"dram_read_bytes": "hbm_read_bytes", "dram_write_bytes": "hbm_write_bytes"})
    mixed = pd.concat([table.loc[tpu], as_hbm], ignore_index=True)

    figure = roofline_figure(mixed)

    traces = {trace.name: trace for trace in marker_traces(figure)}
    research = table.loc[~tpu]
    np.testing.assert_allclose(traces["research-32x32"].x, research["flops"] / (research["dram_read_bytes"] + research["dram_write_bytes"]), rtol=1e-12)
    assert len(traces["tpu-v1"].x) == int(tpu.sum())


def test_roofline_draws_roofs_of_placed_ops_only():
    table = op_table()
    # A vector op: no MACs, so it is not placed, and its vector-unit peak draws no roof.
    vector = table.iloc[[0]].assign(op="layers.*.attn_norm", kind="reduction", macs=0, flops=0, peak_flops_per_s=67e12)

    figure = roofline_figure(pd.concat([table, vector], ignore_index=True))

    assert len(line_traces(figure)) == 2
    assert "1 op(s) without DRAM traffic or FLOPs not placed" in figure.layout.annotations[0].text
