"""The dashboard: every figure the results' columns support, on one self-contained HTML page.

`build_dashboard(results, path)` takes one results table (a DataFrame, or a
Parquet or CSV file) or several named tables. It draws each figure of
`FIGURES` from the first table that has its columns, and writes one HTML
file with plotly.js inline, so the page opens offline. The page states its
inputs: what the caller passes in `inputs`, and for each table its rows and
the values of its configuration columns. Figures a table cannot support
are listed at the bottom with the columns they need.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.offline

from hwsim.report.accumulation import REQUIREMENTS as ACCUMULATION_REQUIREMENTS
from hwsim.report.accumulation import accumulation_figure
from hwsim.report.bits import REQUIREMENTS as BITS_REQUIREMENTS
from hwsim.report.bits import bit_heatmap_figure
from hwsim.report.columns import configuration_columns, describe_requirement, missing_requirements
from hwsim.report.energy import REQUIREMENTS as ENERGY_REQUIREMENTS
from hwsim.report.energy import energy_breakdown_figure
from hwsim.report.format_figures import ERROR_REQUIREMENTS, VALUE_REQUIREMENTS, format_values_figure, qdq_error_figure
from hwsim.report.latency import REQUIREMENTS as LATENCY_REQUIREMENTS
from hwsim.report.latency import phase_latency_figure
from hwsim.report.pareto import COST_OBJECTIVES, QUALITY_OBJECTIVES, pareto_figure
from hwsim.report.roofline import REQUIREMENTS as ROOFLINE_REQUIREMENTS
from hwsim.report.roofline import ROOF_COLUMNS, Roof, roofline_figure

log = logging.getLogger(__name__)

DEFAULT_TITLE = "hwsim dashboard"
RESULT_SUFFIXES = (".parquet", ".csv")


@dataclass(frozen=True)
class FigureSpec:
    """One kind of figure: its name, the columns it needs, and how to draw it from a table."""

    name: str
    requirements: tuple[tuple[str, ...], ...]
    draw: Callable[..., go.Figure]
    wide: bool = False

    def missing(self, frame: pd.DataFrame, roofs: Sequence[Roof] | None = None) -> list[tuple[str, ...]]:
        """Requirements `frame` does not meet; the roof columns are not needed when `roofs` is given."""
        requirements = self.requirements
        if self.name == "roofline" and roofs:
            requirements = ROOFLINE_REQUIREMENTS
        return missing_requirements(frame, requirements)


def _pareto_axes(frame: pd.DataFrame) -> tuple[str, str] | None:
    cost = next((column for column in COST_OBJECTIVES if column in frame.columns), None)
    quality = next((column for column in QUALITY_OBJECTIVES if column in frame.columns), None)
    if cost is None or quality is None:
        return None
    return cost, quality


def _draw_pareto(frame: pd.DataFrame, **_) -> go.Figure:
    axes = _pareto_axes(frame)
    assert axes is not None, "FigureSpec.missing checked the objectives"
    return pareto_figure(frame, *axes)


def _draw_roofline(frame: pd.DataFrame, roofs: Sequence[Roof] | None = None, **_) -> go.Figure:
    return roofline_figure(frame, list(roofs) if roofs else None)


FIGURES = (
    FigureSpec("Pareto scatter", (COST_OBJECTIVES, QUALITY_OBJECTIVES), _draw_pareto),
    FigureSpec("roofline", ROOFLINE_REQUIREMENTS + tuple((column,) for column in ROOF_COLUMNS), _draw_roofline),
    FigureSpec("energy breakdown", ENERGY_REQUIREMENTS, lambda frame, **_: energy_breakdown_figure(frame), wide=True),
    FigureSpec("latency per phase", LATENCY_REQUIREMENTS, lambda frame, **_: phase_latency_figure(frame), wide=True),
    FigureSpec("bit heat map", BITS_REQUIREMENTS, lambda frame, **_: bit_heatmap_figure(frame), wide=True),
    FigureSpec("format value grid", VALUE_REQUIREMENTS, lambda frame, **_: format_values_figure(frame), wide=True),
    FigureSpec("qdq error histograms", ERROR_REQUIREMENTS, lambda frame, **_: qdq_error_figure(frame), wide=True),
    FigureSpec("accumulation error vs K", ACCUMULATION_REQUIREMENTS, lambda frame, **_: accumulation_figure(frame), wide=True),
)


@dataclass(frozen=True)
class Dashboard:
    """A written dashboard: its path, the figures on it, and one line per figure left out."""

    path: Path
    figures: tuple[str, ...]
    skipped: tuple[str, ...]


def load_results(path: str | os.PathLike) -> pd.DataFrame:
    """Read a results table from a .parquet or .csv file; raise ValueError with one line when the file cannot be parsed."""
    path = Path(path)
    if path.suffix.lower() not in RESULT_SUFFIXES:
        raise ValueError(f"unsupported results file {str(path)!r}: pass a .parquet or .csv file")
    if not path.is_file():
        raise FileNotFoundError(f"results file not found: {path}")
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (ValueError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"cannot read results file {path}: {reason}; check that it is a valid {path.suffix.lstrip('.').lower()} file") from error


def _as_tables(results) -> dict[str, pd.DataFrame]:
    if isinstance(results, pd.DataFrame):
        return {"results": results}
    if isinstance(results, (str, os.PathLike)):
        return {Path(results).name: load_results(results)}
    if isinstance(results, Mapping):
        tables = {}
        for name, table in results.items():
            if not isinstance(table, pd.DataFrame):
                raise TypeError(f"results[{name!r}] is a {type(table).__name__}; pass pandas DataFrames")
            tables[str(name)] = table
        if not tables:
            raise ValueError("results is an empty mapping: pass at least one table")
        return tables
    raise TypeError(f"results is a {type(results).__name__}; pass a DataFrame, a mapping of names to DataFrames, or a .parquet or .csv path")


def dashboard_figures(
    results, *, roofs: Sequence[Roof] | None = None, figures: Sequence[FigureSpec] = FIGURES
) -> tuple[list[tuple[FigureSpec, str, go.Figure]], list[str]]:
    """Draw every figure of `figures` (default FIGURES) that some table supports.

    Returns (drawn, skipped). `drawn` contains (spec, table name, figure) in
    the order of `figures`, and `skipped` one line per figure not drawn,
    naming the columns it needs. Raises ValueError when no figure can be
    drawn, naming what each figure needs.
    """
    tables = _as_tables(results)
    drawn, skipped = [], []
    for spec in figures:
        source = next(
            (name for name, table in tables.items() if not table.empty and not spec.missing(table, roofs) and (spec.name != "Pareto scatter" or len(table) > 1)),
            None,
        )
        if source is None:
            needs = ", ".join(describe_requirement(requirement) for requirement in spec.requirements)
            skipped.append(f"{spec.name}: needs columns {needs}")
            continue
        log.info("drawing the %s from table %s", spec.name, source)
        drawn.append((spec, source, spec.draw(tables[source], roofs=roofs)))
    if not drawn:
        columns = "; ".join(f"{name} has {', '.join(map(str, table.columns)) or 'no columns'}" for name, table in tables.items())
        raise ValueError("no figure can be drawn from the results: " + "; ".join(skipped) + f" (table {columns})")
    return drawn, skipped


def describe_tables(tables: Mapping[str, pd.DataFrame], *, max_values: int = 12) -> list[tuple[str, str]]:
    """Summarize each table as a (label, text) pair: its rows, and the values of each configuration column."""
    lines = []
    for name, table in tables.items():
        parts = [f"{len(table)} rows, {len(table.columns)} columns"]
        for column in configuration_columns(table):
            values = [str(value) for value in dict.fromkeys(table[column].dropna())]
            listed = ", ".join(values[:max_values]) + (f" and {len(values) - max_values} more" if len(values) > max_values else "")
            parts.append(f"{column}: {listed}")
        lines.append((f"table {name}", "; ".join(parts)))
    return lines


def build_dashboard(
    results,
    path: str | os.PathLike,
    *,
    title: str = DEFAULT_TITLE,
    inputs: Mapping[str, object] | None = None,
    roofs: Sequence[Roof] | None = None,
    figures: Sequence[FigureSpec] = FIGURES,
) -> Dashboard:
    """Write the dashboard of `results` to `path` (an .html file).

    results: a DataFrame, a mapping of table names to DataFrames, or a
        .parquet or .csv file.
    inputs: what produced the results (model, accelerators, data, scripts),
        listed at the top of the page as given.
    roofs: roofline roofs, when the per-op table has no roof columns.
    figures: the figures to draw, in page order. A study may pass its own
        FigureSpecs, such as `hwsim.report.policy_comparison.POLICY_FIGURES`.
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ValueError(f"invalid dashboard path {str(path)!r}: the dashboard is an HTML page; name it with .html")
    tables = _as_tables(results)
    drawn, skipped = dashboard_figures(tables, roofs=roofs, figures=figures)
    page = render_page(title, drawn, skipped, list((inputs or {}).items()), describe_tables(tables))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    log.info("wrote %s: %d figures, %d bytes", path, len(drawn), len(page))
    return Dashboard(path, tuple(spec.name for spec, _, _ in drawn), tuple(skipped))


# Collects JavaScript errors (uncaught exceptions, rejected promises and
# console.error) into #page-errors, so a reader sees a figure that failed and
# a headless browser's DOM dump records it.
_ERROR_HOOK = """
window.hwsimErrors = [];
function hwsimShowErrors() {
  var box = document.getElementById('page-errors');
  if (box && window.hwsimErrors.length) {
    box.hidden = false;
    box.textContent = 'JavaScript errors on this page: ' + window.hwsimErrors.join(' | ');
  }
}
function hwsimReport(message) { window.hwsimErrors.push(String(message)); hwsimShowErrors(); }
window.addEventListener('error', function (event) { hwsimReport(event.message || event.type); });
window.addEventListener('unhandledrejection', function (event) { hwsimReport(event.reason); });
(function () {
  var original = console.error;
  console.error = function () { hwsimReport(Array.prototype.join.call(arguments, ' ')); original.apply(console, arguments); };
})();
document.addEventListener('DOMContentLoaded', hwsimShowErrors);
"""

_STYLE = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 18px 24px; color: #222; }
h1 { font-size: 22px; margin: 0 0 8px 0; }
dl.inputs { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; font-size: 13px; margin: 0 0 14px 0; }
dl.inputs dt { font-weight: 600; }
dl.inputs dd { margin: 0; }
#page-errors { background: #fde2e1; border: 1px solid #d55e00; padding: 8px; font-family: monospace; }
main { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 12px; }
.figure { border: 1px solid #e4e4e4; border-radius: 4px; padding: 4px; min-width: 0; }
.figure.wide { grid-column: 1 / -1; }
.source { font-size: 11px; color: #666; margin: 0 6px 2px 6px; }
footer { font-size: 12px; color: #555; margin-top: 14px; }
details.tables { font-size: 13px; margin: 0 0 12px 0; }
"""

# Figures are drawn while the page is parsed, before the grid has its final
# column widths; resizing once after load makes each fit its box.
_RESIZE_ON_LOAD = """
window.addEventListener('load', function () {
  document.querySelectorAll('.plotly-graph-div').forEach(function (graph) { Plotly.Plots.resize(graph); });
});
"""


def render_page(title: str, drawn, skipped: Sequence[str], inputs: Sequence[tuple[str, object]], tables: Sequence[tuple[str, str]]) -> str:
    """Assemble the HTML page: title, inputs, the tables, an error box, one block per figure, then the figures not drawn.

    The table summaries fold away under the caller's inputs, and stay open when the caller gave none.
    """
    escape = html.escape
    items = "\n".join(f"<dt>{escape(str(key))}</dt><dd>{escape(str(value))}</dd>" for key, value in inputs)
    table_items = "\n".join(f"<dt>{escape(key)}</dt><dd>{escape(value)}</dd>" for key, value in tables)
    opened = "" if inputs else " open"
    table_block = f'<details class="tables"{opened}><summary>Tables</summary><dl class="inputs">{table_items}</dl></details>'
    blocks = []
    for index, (spec, source, figure) in enumerate(drawn):
        body = figure.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{index}", config={"responsive": True, "displaylogo": False})
        wide = " wide" if spec.wide else ""
        blocks.append(
            f'<section class="figure{wide}" data-figure="{escape(spec.name)}">'
            f'<p class="source">{escape(spec.name)} from table {escape(source)}</p>{body}</section>'
        )
    not_drawn = "".join(f"<li>{escape(line)}</li>" for line in skipped)
    footer = f"<footer><p>Figures not drawn, for lack of columns:</p><ul>{not_drawn}</ul></footer>" if skipped else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n"
        f"<script>{_ERROR_HOOK}</script>\n"
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>\n'
        "</head>\n<body>\n"
        f"<h1>{escape(title)}</h1>\n<dl class=\"inputs\">{items}</dl>\n{table_block}\n"
        '<div id="page-errors" hidden></div>\n'
        f"<main>\n{''.join(blocks)}\n</main>\n{footer}\n<script>{_RESIZE_ON_LOAD}</script>\n</body>\n</html>\n"
    )
