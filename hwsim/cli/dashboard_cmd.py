"""`hwsim dashboard RESULTS -o out.html`: the figures a results table supports, on one self-contained HTML page."""

from __future__ import annotations

import argparse
from pathlib import Path

from hwsim.cli import UsageError
from hwsim.report.dashboard import build_dashboard, load_results


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="write an HTML dashboard of a results table (Parquet or CSV)",
        description=(
            "Draw every figure that the columns of a results table support (roofline, energy breakdown, latency per phase, "
            "Pareto scatter, per-layer bit heat map, format value grid, qdq error histograms) on one HTML page with "
            "plotly.js inline, so it opens offline. Columns carry SI units in their names (latency_s, energy_j)."
        ),
    )
    parser.add_argument("results", metavar="RESULTS", help="results table: a .parquet or .csv file with one row per op or per configuration")
    parser.add_argument("-o", "--output", required=True, metavar="PATH", help="HTML file to write, such as dashboard.html")
    parser.add_argument("--title", help="page title (default: 'hwsim dashboard: ' and the file name)")
    parser.set_defaults(func=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    results = Path(args.results)
    table = load_results(results)
    title = args.title or f"hwsim dashboard: {results.name}"
    try:
        dashboard = build_dashboard({results.name: table}, args.output, title=title, inputs={"results": str(results)})
    except OSError as error:
        raise UsageError(f"cannot write {args.output}: {error.strerror or error}") from error
    print(f"wrote {dashboard.path} with {len(dashboard.figures)} figure(s): {', '.join(dashboard.figures)}")
    for line in dashboard.skipped:
        print(f"  not drawn: {line}")
    return 0
