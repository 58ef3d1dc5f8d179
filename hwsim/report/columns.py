"""Column contracts of the figures: what each needs, and how a row's configuration is named.

A requirement is a tuple of alternatives: ("flops", "macs") is met by
either column. `require_columns` raises `MissingColumnsError`, a
ValueError whose message names the figure, the columns it lacks and the
columns the table has.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from hwsim.report.units import format_value

Requirement = tuple[str, ...]

# Columns that describe a configuration rather than measure it, in the order
# labels and hover text list them. Producers may add others; `configuration_columns`
# also takes every text column that is not an op or phase attribute.
CONFIGURATION_COLUMNS = (
    "study", "model", "accelerator", "policy", "format", "scenario", "batch_size", "context_tokens", "generated_tokens",
    "array_rows", "array_cols", "sram_bytes",
)
# Columns that describe one op or tensor rather than a configuration. The
# operand formats are here because a policy gives different ops different
# formats, so they would split one configuration into several labels.
OP_COLUMNS = (
    "op", "kind", "phase", "bound", "tensor", "role", "layer", "element",
    "activation_format", "weight_format", "output_format", "kv_cache_format", "note", "notes",
)


class MissingColumnsError(ValueError):
    """A table lacks the columns a figure needs."""

    def __init__(self, figure: str, missing: Sequence[Requirement], available: Sequence[str]) -> None:
        self.figure = figure
        self.missing = tuple(missing)
        needed = ", ".join(describe_requirement(requirement) for requirement in missing)
        present = ", ".join(str(column) for column in available) or "no columns"
        super().__init__(f"the {figure} needs column(s) {needed}; the table has {present}")


def describe_requirement(requirement: Requirement) -> str:
    """Text for one requirement: "latency_s", or "flops or macs" for alternatives."""
    return " or ".join(requirement)


def missing_requirements(frame: pd.DataFrame, requirements: Sequence[Requirement]) -> list[Requirement]:
    """Return the requirements that no column of `frame` meets."""
    columns = set(frame.columns)
    return [requirement for requirement in requirements if not columns.intersection(requirement)]


def require_columns(frame: pd.DataFrame, requirements: Sequence[Requirement], figure: str) -> None:
    """Raise MissingColumnsError unless `frame` meets every requirement; raise ValueError for an empty table."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"the {figure} takes a pandas DataFrame, got {type(frame).__name__}")
    missing = missing_requirements(frame, requirements)
    if missing:
        raise MissingColumnsError(figure, missing, list(frame.columns))
    if frame.empty:
        raise ValueError(f"the {figure} got a table with no rows; pass a results table with at least one row")


def first_present(frame: pd.DataFrame, requirement: Requirement) -> str:
    """Return the first column of `requirement` that `frame` has."""
    for column in requirement:
        if column in frame.columns:
            return column
    raise MissingColumnsError("figure", [requirement], list(frame.columns))


def configuration_columns(frame: pd.DataFrame, *, exclude: Sequence[str] = ()) -> list[str]:
    """Return the columns that name a configuration: the known ones first, then other text columns.

    Op attributes (op, kind, phase, bound, ...) and `exclude` are left out.
    """
    skipped = set(OP_COLUMNS) | set(exclude)
    known = [column for column in CONFIGURATION_COLUMNS if column in frame.columns and column not in skipped]
    others = [
        str(column)
        for column in frame.columns
        if column not in skipped and column not in known and _is_text(frame[column])
    ]
    return known + others


def varying_columns(frame: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Return the columns of `columns` that take more than one value in `frame`."""
    return [column for column in columns if frame[column].nunique(dropna=False) > 1]


def configuration_labels(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Label each row by its values in `columns`, joined with " / "; "all rows" when `columns` is empty."""
    if not columns:
        return pd.Series("all rows", index=frame.index)
    parts = [frame[column].map(format_value) for column in columns]
    label = parts[0]
    for part in parts[1:]:
        label = label + " / " + part
    return label


def hover_lines(frame: pd.DataFrame, columns: Sequence[str]) -> pd.Series:
    """Hover text per row: one "column: value" line per column, joined with <br>."""
    if not columns:
        return pd.Series("", index=frame.index)
    parts = [f"{column}: " + frame[column].map(format_value) for column in columns]
    text = parts[0]
    for part in parts[1:]:
        text = text + "<br>" + part
    return text


def _is_text(series: pd.Series) -> bool:
    return pd.api.types.is_string_dtype(series) or pd.api.types.is_object_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype)
