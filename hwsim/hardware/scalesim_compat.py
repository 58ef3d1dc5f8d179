"""GEMM-level entry point that takes SCALE-Sim's configuration fields.

`simulate_gemm(ScaleSimConfig(...), m, n, k)` runs the systolic-array
performance model on the fields of a SCALE-Sim v3 configuration file
(ArrayHeight, ArrayWidth, Dataflow, IfmapSramSzkB, FilterSramSzkB,
OfmapSramSzkB, Bandwidth) and returns counts in SCALE-Sim's units: words
(one word = `word_bytes`, 1 in SCALE-Sim) and cycles. SCALE-Sim's ifmap is
the activation A[M, K], its filter the weight B[K, N] and its ofmap C[M, N].

Where the two tools differ, by construction (each derived in
tests/test_systolic_scalesim.py):
- output-stationary folds take 2R + C + T - 2 cycles here, R + C + T - 2 in
  SCALE-Sim, which does not count draining the outputs out of the array;
- SCALE-Sim reports the last cycle's index as its total, one less than the count;
- SCALE-Sim fetches operands from DRAM in lines of `Bandwidth` words and pads
  partial folds with empty slots, so its reads round up;
- SCALE-Sim writes every partial sum of ws and is to DRAM; here partial sums
  stay in the output buffer when one column fold's block fits in half of it.
SCALE-Sim gives each of its three buffers its own DRAM interface of
`Bandwidth` words per cycle, so this entry point gives the shared DRAM three
times that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from hwsim.hardware.spec import DATAFLOWS, FieldChecker
from hwsim.hardware.systolic_counts import gemm_counts, minimum_buffer_bytes

KIB = 1024

# SCALE-Sim configuration key -> ScaleSimConfig field.
SCALESIM_FIELDS = {
    "ArrayHeight": "array_height",
    "ArrayWidth": "array_width",
    "Dataflow": "dataflow",
    "IfmapSramSzkB": "ifmap_sram_kb",
    "FilterSramSzkB": "filter_sram_kb",
    "OfmapSramSzkB": "ofmap_sram_kb",
    "Bandwidth": "bandwidth_words_per_cycle",
}


@dataclass(frozen=True)
class ScaleSimConfig:
    """The fields of a SCALE-Sim v3 configuration that set GEMM cycles and traffic."""

    array_height: int
    array_width: int
    dataflow: str
    ifmap_sram_kb: int
    filter_sram_kb: int
    ofmap_sram_kb: int
    bandwidth_words_per_cycle: int
    word_bytes: int = 1

    def __post_init__(self) -> None:
        check = FieldChecker()
        check.positive_int("ArrayHeight", self.array_height, "an array needs at least one PE")
        check.positive_int("ArrayWidth", self.array_width, "an array needs at least one PE")
        check.choice("Dataflow", self.dataflow, DATAFLOWS)
        for key in ("IfmapSramSzkB", "FilterSramSzkB", "OfmapSramSzkB"):
            check.positive_int(key, getattr(self, SCALESIM_FIELDS[key]))
        check.positive_int("Bandwidth", self.bandwidth_words_per_cycle, "with no DRAM bandwidth no operand ever arrives")
        check.positive_int("word_bytes", self.word_bytes)
        check.raise_if_any()

    @classmethod
    def from_scalesim_fields(cls, fields: Mapping[str, object], word_bytes: int = 1) -> "ScaleSimConfig":
        """Config from SCALE-Sim's own key names; unknown keys raise KeyError listing the known ones."""
        unknown = sorted(set(fields) - set(SCALESIM_FIELDS))
        if unknown:
            raise KeyError(f"unknown SCALE-Sim field(s) {unknown}; known: {', '.join(SCALESIM_FIELDS)}")
        missing = sorted(set(SCALESIM_FIELDS) - set(fields))
        if missing:
            raise KeyError(f"missing SCALE-Sim field(s) {missing}")
        return cls(**{SCALESIM_FIELDS[key]: value for key, value in fields.items()}, word_bytes=word_bytes)


@dataclass(frozen=True)
class ScaleSimGemmResult:
    """Cycles and traffic in words, named after SCALE-Sim's reports; arrays when the shapes were arrays."""

    compute_cycles: np.ndarray
    stall_cycles: np.ndarray
    ifmap_sram_reads: np.ndarray
    filter_sram_reads: np.ndarray
    ofmap_sram_writes: np.ndarray
    ofmap_sram_reads: np.ndarray
    ifmap_dram_reads: np.ndarray
    filter_dram_reads: np.ndarray
    ofmap_dram_writes: np.ndarray
    ofmap_dram_reads: np.ndarray
    folds: np.ndarray

    @property
    def total_cycles(self) -> np.ndarray:
        return self.compute_cycles + self.stall_cycles


def simulate_gemm(config: ScaleSimConfig, m, n, k) -> ScaleSimGemmResult:
    """Compute and stall cycles and memory traffic of GEMMs A[m, k] @ B[k, n] under a SCALE-Sim configuration."""
    m, n, k = np.broadcast_arrays(*(np.asarray(x, dtype=np.int64) for x in (m, n, k)))
    if np.any(m <= 0) or np.any(n <= 0) or np.any(k <= 0):
        raise ValueError(f"GEMM dimensions must be positive integers; got m={m}, n={n}, k={k}")
    word = config.word_bytes
    buffers = tuple(float(kb * KIB) for kb in (config.ifmap_sram_kb, config.filter_sram_kb, config.ofmap_sram_kb))
    minimums = minimum_buffer_bytes(config.array_height, config.array_width, config.dataflow, 1, (word, word, word))
    for key, capacity, minimum in zip(("IfmapSramSzkB", "FilterSramSzkB", "OfmapSramSzkB"), buffers, minimums):
        if capacity < minimum:
            raise ValueError(
                f"{key}={int(capacity // KIB)} is too small for one {config.array_height}x{config.array_width} "
                f"{config.dataflow} fold with double buffering; it needs at least {minimum / KIB:.3g} kB"
            )
    counts = gemm_counts(
        config.array_height, config.array_width, config.dataflow, m, n, k,
        a_bytes=(m * k * word).astype(float), b_bytes=(k * n * word).astype(float), c_bytes=(m * n * word).astype(float),
        accumulator_bytes_per_element=float(word),
        buffer_bytes=buffers,
        dram_bytes_per_cycle=3.0 * config.bandwidth_words_per_cycle * word,
    )
    return ScaleSimGemmResult(
        compute_cycles=counts["compute_cycles"],
        stall_cycles=counts["stall_cycles"],
        ifmap_sram_reads=counts["array_read_bytes_a"] / word,
        filter_sram_reads=counts["array_read_bytes_b"] / word,
        ofmap_sram_writes=counts["array_write_bytes_c"] / word,
        ofmap_sram_reads=counts["array_read_bytes_c"] / word,
        ifmap_dram_reads=counts["dram_read_bytes_a"] / word,
        filter_dram_reads=counts["dram_read_bytes_b"] / word,
        ofmap_dram_writes=counts["dram_write_bytes_c"] / word,
        ofmap_dram_reads=counts["dram_read_bytes_c"] / word,
        folds=counts["folds"],
    )
