"""`build_dashboard` and `hwsim dashboard`: which figures a table supports, the self-contained page, and bad input."""

from __future__ import annotations

import pandas as pd
import plotly.offline
import pytest

from test_report_bits import bits_table
from test_report_cost_figures import op_table
from test_report_formats import QUERY_WEIGHT, minilm_weight
from test_report_pareto import format_points

from hwsim.cli import main
from hwsim.report import FIGURES, Roof, build_dashboard, format_values_frame, qdq_error_frame

ALL_FIGURES = (
    "Pareto scatter", "roofline", "energy breakdown", "latency per phase", "bit heat map", "format value grid", "qdq error histograms",
    "accumulation error vs K",
)


def all_tables() -> dict:
    return {
        "points": format_points(),
        "ops": op_table(),
        "bits": bits_table(),
        "values": format_values_frame(["int8", "fp8_e4m3", "fp4_e2m1"]),
        "errors": qdq_error_frame(minilm_weight(), ["int8_channel", "mxfp4"], tensor=QUERY_WEIGHT),
        "accumulation": pd.DataFrame(
            {"k": [64, 128], "accumulator": ["fp16", "fp16"], "median_rel_error": [1e-3, 2e-3], "p99_rel_error": [1e-2, 2e-2]}
        ),
    }


def run(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_figure_list_is_complete():
    assert tuple(spec.name for spec in FIGURES) == ALL_FIGURES


def test_dashboard_draws_every_figure(tmp_path):
    path = tmp_path / "dashboard.html"

    dashboard = build_dashboard(all_tables(), path, title="Shoot-out <test>", inputs={"model": "smollm2-135m"})

    assert dashboard.path == path
    assert dashboard.figures == ALL_FIGURES
    assert dashboard.skipped == ()
    page = path.read_text(encoding="utf-8")
    assert "<h1>Shoot-out &lt;test&gt;</h1>" in page
    assert "<dt>model</dt><dd>smollm2-135m</dd>" in page
    assert "<dt>table ops</dt><dd>40 rows" in page
    assert page.count('class="plotly-graph-div"') == len(ALL_FIGURES)


def test_dashboard_is_self_contained(tmp_path):
    path = build_dashboard({"ops": op_table()}, tmp_path / "ops.html").path
    page = path.read_text(encoding="utf-8")

    plotly_js = plotly.offline.get_plotlyjs()
    # plotly.js is inlined once, not per figure.
    assert page.count(plotly_js) == 1
    # Outside plotly.js itself (whose defaults name a CDN for map data), nothing is fetched.
    rest = page.replace(plotly_js, "")
    assert "<script src" not in rest
    assert "https://" not in rest
    assert "http://" not in rest


def test_dashboard_of_one_op_table(tmp_path):
    dashboard = build_dashboard(op_table(), tmp_path / "ops.html")

    assert dashboard.figures == ("roofline", "energy breakdown", "latency per phase")
    assert dashboard.skipped[0].startswith("Pareto scatter: needs columns energy_j_per_token or latency_s_per_token")
    page = dashboard.path.read_text(encoding="utf-8")
    assert "Figures not drawn, for lack of columns:" in page
    assert "<dt>table results</dt><dd>40 rows" in page
    # With no inputs from the caller, the table summary is shown unfolded.
    assert '<details class="tables" open>' in page


def test_dashboard_roofs_argument(tmp_path):
    ops = op_table().drop(columns=["peak_flops_per_s", "dram_bandwidth_bytes_per_s"])

    without = build_dashboard(ops, tmp_path / "without.html")
    with_roofs = build_dashboard(ops, tmp_path / "with.html", roofs=[Roof("tpu-v1 int8", 2 * 65536 * 700e6, 34e9)])

    assert "roofline" not in without.figures
    assert "roofline" in with_roofs.figures


def test_dashboard_without_usable_columns_names_needs(tmp_path):
    table = format_points()[["format", "mse"]]

    with pytest.raises(ValueError, match=r"no figure can be drawn from the results: .*roofline: needs columns latency_s.*table results has format, mse"):
        build_dashboard(table, tmp_path / "none.html")
    assert not (tmp_path / "none.html").exists()


def test_dashboard_rejects_non_html_path(tmp_path):
    with pytest.raises(ValueError, match="name it with .html"):
        build_dashboard(op_table(), tmp_path / "dashboard.png")


def test_dashboard_rejects_non_frame():
    with pytest.raises(TypeError, match="pass a DataFrame, a mapping"):
        build_dashboard([1, 2, 3], "out.html")


# The command line


def test_cli_parquet(tmp_path, capsys):
    results = tmp_path / "ops.parquet"
    op_table().to_parquet(results, index=False)
    out = tmp_path / "out" / "ops.html"

    status, output, error = run(capsys, "dashboard", str(results), "-o", str(out))

    assert status == 0
    assert error == ""
    assert output.startswith(f"wrote {out} with 3 figure(s): roofline, energy breakdown, latency per phase\n")
    assert "  not drawn: Pareto scatter: needs columns" in output
    page = out.read_text(encoding="utf-8")
    assert "<title>hwsim dashboard: ops.parquet</title>" in page
    assert f"<dt>results</dt><dd>{results}</dd>" in page


def test_cli_csv_with_title(tmp_path, capsys):
    results = tmp_path / "bits.csv"
    bits_table().to_csv(results, index=False)
    out = tmp_path / "bits.html"

    status, output, _ = run(capsys, "dashboard", str(results), "-o", str(out), "--title", "Bits of two policies")

    assert status == 0
    assert "1 figure(s): bit heat map" in output
    assert "<h1>Bits of two policies</h1>" in out.read_text(encoding="utf-8")


def test_cli_missing_file(tmp_path, capsys):
    status, output, error = run(capsys, "dashboard", str(tmp_path / "absent.parquet"), "-o", str(tmp_path / "out.html"))

    assert status == 2
    assert output == ""
    assert error == f"hwsim dashboard: error: results file not found: {tmp_path / 'absent.parquet'}\n"


def test_cli_table_without_usable_columns(tmp_path, capsys):
    results = tmp_path / "results.csv"
    results.write_text("name,score\nfirst,1\nsecond,2\n")

    status, _, error = run(capsys, "dashboard", str(results), "-o", str(tmp_path / "out.html"))

    assert status == 2
    assert error.count("\n") == 1
    assert error.startswith("hwsim dashboard: error: no figure can be drawn from the results: ")
    assert "roofline: needs columns latency_s, flops or macs" in error
    assert "has name, score" in error


def test_cli_unsupported_suffix(tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text("{}")

    status, _, error = run(capsys, "dashboard", str(results), "-o", str(tmp_path / "out.html"))

    assert status == 2
    assert "pass a .parquet or .csv file" in error


def test_cli_corrupt_parquet(tmp_path, capsys):
    results = tmp_path / "results.parquet"
    results.write_bytes(b"not a parquet file")

    status, _, error = run(capsys, "dashboard", str(results), "-o", str(tmp_path / "out.html"))

    assert status == 2
    assert error.count("\n") == 1
    assert error.startswith(f"hwsim dashboard: error: cannot read results file {results}: ")


def test_cli_output_must_be_html(tmp_path, capsys):
    results = tmp_path / "ops.parquet"
    op_table().to_parquet(results, index=False)

    status, _, error = run(capsys, "dashboard", str(results), "-o", str(tmp_path / "ops.png"))

    assert status == 2
    assert "the dashboard is an HTML page; name it with .html" in error
