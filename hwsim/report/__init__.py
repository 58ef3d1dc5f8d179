"""Plotly figures and self-contained HTML dashboards from tidy results tables.

One function per figure, each taking a DataFrame with SI units in the
column names and converting only for display:

| figure | function | columns it needs |
| --- | --- | --- |
| roofline | `roofline_figure` | latency_s; flops or macs; dram_bytes, dram_read_bytes (+ dram_write_bytes) or hbm_read_bytes (+ hbm_write_bytes); peak_flops_per_s and dram_bandwidth_bytes_per_s, or roofs= |
| energy breakdown | `energy_breakdown_figure` | one or more of compute_energy_j, sram_energy_j, dram_energy_j, static_energy_j |
| latency per phase | `phase_latency_figure` | phase, latency_s (kind stacks the bars) |
| Pareto scatter | `pareto_figure` | the two objective columns named by x= and y= |
| bit heat map | `bit_heatmap_figure` | layer, tensor or role, bits_per_element |
| format value grid | `format_values_figure` | format, code, value (bits for the hex code width) |
| qdq error histograms | `qdq_error_figure` | format, error (value for the SQNR) |
| accumulation error vs K | `accumulation_figure` | k, accumulator, median_rel_error, p99_rel_error (operand_format, order, max_normalized_error, bound_normalized_error) |

`hwsim.report.policy_comparison` adds figures that set bit policies side
by side (`POLICY_FIGURES`, drawn when a caller passes them to
`build_dashboard(..., figures=...)`): `bits_per_parameter_figure` (policy,
bits_per_parameter), `per_token_figure` (policy, accelerator,
energy_j_per_token or latency_s_per_token) and `perplexity_table_figure`
(policy, model, perplexity, source).

Configuration columns (accelerator, policy, format, model, scenario, and
any other text column) label bars and points and fill the hover text.
`build_dashboard(results, path)` draws every figure the tables support on
one HTML page; `hwsim dashboard RESULTS -o out.html` does the same from a
Parquet or CSV file.
"""

from hwsim.report.accumulation import accumulation_figure
from hwsim.report.bits import bit_heatmap_figure, layer_bits_frame
from hwsim.report.columns import MissingColumnsError
from hwsim.report.dashboard import FIGURES, Dashboard, build_dashboard, dashboard_figures, load_results
from hwsim.report.energy import energy_breakdown_figure
from hwsim.report.format_figures import format_values_figure, format_values_frame, qdq_error_figure, qdq_error_frame
from hwsim.report.latency import phase_latency_figure
from hwsim.report.pareto import pareto_figure, pareto_mask
from hwsim.report.policy_comparison import POLICY_FIGURES, bits_per_parameter_figure, per_token_figure, perplexity_table_figure
from hwsim.report.roofline import Roof, roofline_figure, systolic_roof

__all__ = [
    "FIGURES",
    "POLICY_FIGURES",
    "Dashboard",
    "MissingColumnsError",
    "Roof",
    "accumulation_figure",
    "bit_heatmap_figure",
    "bits_per_parameter_figure",
    "build_dashboard",
    "dashboard_figures",
    "energy_breakdown_figure",
    "format_values_figure",
    "format_values_frame",
    "layer_bits_frame",
    "load_results",
    "pareto_figure",
    "pareto_mask",
    "per_token_figure",
    "perplexity_table_figure",
    "phase_latency_figure",
    "qdq_error_figure",
    "qdq_error_frame",
    "roofline_figure",
    "systolic_roof",
]
