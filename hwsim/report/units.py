"""Display units: read the SI unit from a column name and pick a prefix for plotting.

Tables keep SI units with the unit in the column name (`latency_s`,
`energy_j_per_token`, `dram_read_bytes`). Figures divide by a power of 1000
chosen from the data, so an axis reads "latency (ms)" in place of "1e-3 s".
"""

from __future__ import annotations

import math

import numpy as np

# Column-name suffixes and the unit symbol each stands for, longest first so
# that "_bytes_per_s" wins over "_per_s".
_UNIT_SUFFIXES = (
    ("_bandwidth_bytes_per_s", "B/s"),
    ("_bytes_per_s", "B/s"),
    ("_flops_per_s", "FLOP/s"),
    ("_j_per_token", "J/token"),
    ("_s_per_token", "s/token"),
    ("_bytes", "B"),
    ("_flops", "FLOP"),
    ("_mm2", "mm²"),
    ("_db", "dB"),
    ("_hz", "Hz"),
    ("_j", "J"),
    ("_s", "s"),
    ("_w", "W"),
)
# Whole column names with a unit of their own.
_UNIT_NAMES = {"flops": "FLOP", "bytes": "B", "macs": "MAC", "cycles": "cycles", "bits_per_element": "bits", "bits_per_parameter": "bits"}
# Units that take SI prefixes; dB, mm², bits and cycles are shown as stored.
_PREFIXED = {"B/s", "FLOP/s", "J/token", "s/token", "B", "FLOP", "Hz", "J", "s", "W", "MAC"}
_ACRONYMS = {"sqnr": "SQNR", "mse": "MSE", "rms": "RMS", "dram": "DRAM", "sram": "SRAM", "kv": "KV", "lm": "LM"}
_PREFIXES = ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"), (1e-15, "f"))


def unit_of(column: str) -> str:
    """Return the unit symbol a column name carries ("J" for energy_j), or "" when it names none."""
    if column in _UNIT_NAMES:
        return _UNIT_NAMES[column]
    for suffix, unit in _UNIT_SUFFIXES:
        if column.endswith(suffix):
            return unit
    return ""


def quantity_of(column: str) -> str:
    """Return the column name without its unit suffix, in words: "energy per token" for energy_j_per_token."""
    rest = column
    if column not in _UNIT_NAMES:
        for suffix, _ in _UNIT_SUFFIXES:
            if column.endswith(suffix) and len(column) > len(suffix):
                rest = column[: -len(suffix)]
                per = suffix.split("_per_", 1)
                if len(per) == 2:
                    rest = f"{rest}_per_{per[1]}"
                break
    return " ".join(_ACRONYMS.get(word, word) for word in rest.split("_"))


def si_scale(values, unit: str) -> tuple[float, str]:
    """Choose a power of 1000 for `values` in `unit`; return (divisor, prefixed unit).

    The divisor puts the largest finite magnitude between 1 and 1000. Units
    without SI prefixes (dB, mm², bits) and all-zero or empty data return
    (1.0, unit).
    """
    if unit not in _PREFIXED:
        return 1.0, unit
    magnitudes = np.abs(np.asarray(values, dtype=np.float64))
    magnitudes = magnitudes[np.isfinite(magnitudes) & (magnitudes > 0)]
    if magnitudes.size == 0:
        return 1.0, unit
    largest = float(magnitudes.max())
    for factor, prefix in _PREFIXES:
        if largest >= factor:
            return factor, prefix + unit
    factor, prefix = _PREFIXES[-1]
    return factor, prefix + unit


def axis_title(column: str, unit: str | None = None) -> str:
    """Axis label "quantity (unit)" for a column; `unit` overrides the unit read from the name."""
    unit = unit_of(column) if unit is None else unit
    quantity = quantity_of(column)
    return f"{quantity} ({unit})" if unit else quantity


def format_value(value) -> str:
    """Short text for a hover label: 4 significant digits for floats, the value as is otherwise."""
    if isinstance(value, (float, np.floating)):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    return str(value)


def panel_units(panels, units) -> str:
    """Units of several panels for a title: "J" when they agree, else "prefill: mJ, decode: µJ"."""
    names = [name for name, _ in panels]
    if len(set(units)) == 1 or not any(names):
        return units[0]
    return ", ".join(f"{name}: {unit}" for name, unit in zip(names, units))
