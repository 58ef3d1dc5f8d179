"""Action counts of a GEMM on a systolic array: cycles and bytes moved, vectorised over many GEMMs.

This is the performance half of the systolic-array model. It takes plain
integers and numpy arrays and returns counts; `hwsim.hardware.systolic`
prices them. One function serves all three dataflows, which differ only in
which GEMM dimension goes to the array rows, the array columns and time.

Mapping. With A[M, K] @ B[K, N] = C[M, N] on an R x C array:

| dataflow | rows (Sr) | cols (Sc) | time (T) | stationary |
| --- | --- | --- | --- | --- |
| os | M | N | K | C tile |
| ws | K | N | M | B tile |
| is | K | M | N | A tile |

Folds. The GEMM splits into Fr = ceil(Sr / R) x Fc = ceil(Sc / C) folds, run
one after another with the column fold outer (SCALE-Sim's order). A fold
takes 2R + C + T - 2 cycles in every dataflow:
- ws and is: shifting the stationary tile into the rows takes R cycles.
  Then T vectors stream through, the last one entering at cycle R + T - 1.
  It crosses R rows of skew and C columns, so the last result leaves at
  cycle 2R + C + T - 2.
- os: T operand pairs stream in with R - 1 and C - 1 cycles of skew, so the
  last MAC ends at cycle T + R + C - 3. Then the R outputs of each column
  leave through the column's one output port, one per cycle, the last at
  cycle 2R + C + T - 2. SCALE-Sim v3 counts R + C + T - 2 (no drain).

Precision-flexible PEs. A PE that consumes P reduction elements per step
(Bit Fusion fusing narrow operands) divides K by P: K on the time axis takes
ceil(K / P) steps, K on the rows fills R*P elements per fold. A step that
takes s cycles (bit-serial weights) stretches the T steps to s*T cycles.

Reuse and DRAM traffic, with each SRAM buffer double-buffered (half of it
active while the other half fills):
- a tensor spanning rows and columns (the stationary one) is read once;
- a tensor spanning rows and time is reused by every column fold: read once
  if it fits in half its buffer, else once per column fold;
- a tensor spanning columns and time is reused by every row fold of one
  column fold: read once if one column fold's block (C x T) fits in half its
  buffer, else once per row fold. When that tensor is the output (ws and is)
  it accumulates partial sums over the row folds; a block that does not fit
  in half the output buffer spills to DRAM and is read back at every row fold
  after the first.

Stalls. DRAM transfers overlap compute (double buffering) except the
stationary tile of the first fold, which must arrive before the fold starts,
and the last outputs, which leave after it ends:
cycles = prologue + max(compute, remaining DRAM transfer, SRAM transfer) + epilogue.

What the model ignores: DRAM latency and bank conflicts (only bandwidth
counts), uneven traffic across folds (a tensor read once arrives during the
first column fold but the model spreads it over the op), overlap of one
fold's drain with the next fold's fill, and re-tiling of M to keep partial
sums on chip (a compiler could avoid the spills this model charges).
"""

from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType

import numpy as np

# Dataflow -> GEMM dimension on the rows, on the columns, in time.
DATAFLOW_AXES = {"os": ("m", "n", "k"), "ws": ("k", "n", "m"), "is": ("k", "m", "n")}
TENSOR_DIMS = {"a": ("m", "k"), "b": ("k", "n"), "c": ("m", "n")}


@lru_cache(maxsize=None)
def tensor_roles(dataflow: str) -> MappingProxyType:
    """Reuse class of each tensor: "stationary" (rows, cols), "row_stream" (rows, time) or "col_stream" (cols, time)."""
    rows_dim, cols_dim, time_dim = DATAFLOW_AXES[dataflow]
    axis_of = {rows_dim: "rows", cols_dim: "cols", time_dim: "time"}
    roles = {}
    for tensor, dims in TENSOR_DIMS.items():
        axes = {axis_of[d] for d in dims}
        if axes == {"rows", "cols"}:
            roles[tensor] = "stationary"
        elif axes == {"rows", "time"}:
            roles[tensor] = "row_stream"
        else:
            roles[tensor] = "col_stream"
    return MappingProxyType(roles)


def _ceil_div(a, b):
    return -(-a // b)


def gemm_counts(
    rows: int,
    cols: int,
    dataflow: str,
    m,
    n,
    k,
    *,
    reduction_per_step: int = 1,
    cycles_per_step: int = 1,
    a_bytes,
    b_bytes,
    c_bytes,
    accumulator_bytes_per_element: float,
    buffer_bytes: tuple[float, float, float],
    dram_bytes_per_cycle: float,
    sram_bytes_per_cycle: tuple[float, float, float] = (np.inf, np.inf, np.inf),
    in_dram: tuple[bool, bool, bool] = (True, True, True),
) -> dict[str, np.ndarray]:
    """Cycles and bytes of GEMMs A[m, k] @ B[k, n] on a rows x cols array.

    m, n, k and the tensor sizes a_bytes, b_bytes, c_bytes (A, B and the
    final C, in their storage formats) may be numpy arrays of one shape.
    buffer_bytes are the capacities of the A, B and C buffers. The C buffer
    stores partial sums at `accumulator_bytes_per_element`. Returns arrays of
    compute and stall cycles, folds, and bytes read and written at DRAM and
    at each buffer (array-side and DRAM-side accesses together).
    """
    m, n, k = (np.asarray(x, dtype=np.int64) for x in (m, n, k))
    a_bytes, b_bytes, c_bytes = (np.asarray(x, dtype=np.float64) for x in (a_bytes, b_bytes, c_bytes))
    dims = {"m": m, "n": n, "k": k}
    rows_dim, cols_dim, time_dim = DATAFLOW_AXES[dataflow]
    roles = tensor_roles(dataflow)
    p, s = reduction_per_step, cycles_per_step

    rows_per_fold = rows * p if rows_dim == "k" else rows
    time_steps = _ceil_div(dims[time_dim], p) if time_dim == "k" else dims[time_dim]
    row_folds = _ceil_div(dims[rows_dim], rows_per_fold)
    col_folds = _ceil_div(dims[cols_dim], cols)
    folds = row_folds * col_folds
    compute_cycles = folds * (2 * rows + cols + time_steps * s - 2)

    sizes = {"a": a_bytes, "b": b_bytes}
    halves = {"a": buffer_bytes[0] / 2, "b": buffer_bytes[1] / 2, "c": buffer_bytes[2] / 2}
    time_len = dims[time_dim].astype(np.float64)
    cols_used = np.minimum(dims[cols_dim], cols).astype(np.float64)
    rows_used = np.minimum(dims[rows_dim], rows_per_fold).astype(np.float64)

    array_reads, dram_reads = {}, {}
    for tensor in ("a", "b"):
        size = sizes[tensor]
        elements = (dims[TENSOR_DIMS[tensor][0]] * dims[TENSOR_DIMS[tensor][1]]).astype(np.float64)
        per_element = size / elements
        role = roles[tensor]
        if role == "stationary":
            array_reads[tensor] = size
            refetch = np.ones_like(size)
        elif role == "row_stream":
            array_reads[tensor] = size * col_folds
            refetch = np.where(size <= halves[tensor], 1.0, col_folds)
        else:
            array_reads[tensor] = size * row_folds
            block = per_element * time_len * cols_used
            refetch = np.where(block <= halves[tensor], 1.0, row_folds)
        dram_reads[tensor] = size * refetch if in_dram["ab".index(tensor)] else np.zeros_like(size)

    # Output: partial sums live in the C buffer at accumulator width.
    outputs = (m * n).astype(np.float64)
    partial_bytes = outputs * accumulator_bytes_per_element
    if roles["c"] == "stationary":
        c_array_writes = partial_bytes
        c_array_reads = np.zeros_like(partial_bytes)
        spill = np.zeros_like(partial_bytes)
    else:
        c_array_writes = partial_bytes * row_folds
        c_array_reads = partial_bytes * (row_folds - 1)
        block = accumulator_bytes_per_element * time_len * cols_used
        spill = np.where(block <= halves["c"], 0.0, partial_bytes * (row_folds - 1))
    c_dram_writes = (c_bytes if in_dram[2] else np.zeros_like(c_bytes)) + spill
    c_dram_reads = spill

    # Buffer-side totals: the array's accesses plus fills from DRAM and drains to DRAM.
    buffer_reads = (array_reads["a"], array_reads["b"], c_array_reads + c_dram_writes)
    buffer_writes = (dram_reads["a"], dram_reads["b"], c_array_writes + c_dram_reads)
    dram_read_bytes = dram_reads["a"] + dram_reads["b"] + c_dram_reads
    dram_write_bytes = c_dram_writes

    # Stalls: the first fold's stationary tile and the last outputs cannot overlap compute.
    stationary = next(t for t, r in roles.items() if r == "stationary")
    if stationary == "c":
        prologue_bytes = np.zeros_like(partial_bytes)
        epilogue_bytes = rows_used * cols_used * (c_bytes / outputs) if in_dram[2] else np.zeros_like(c_bytes)
    else:
        size = sizes[stationary]
        elements = (dims[TENSOR_DIMS[stationary][0]] * dims[TENSOR_DIMS[stationary][1]]).astype(np.float64)
        prologue_bytes = rows_used * cols_used * (size / elements) if in_dram["ab".index(stationary)] else np.zeros_like(size)
        epilogue_bytes = cols_used * (c_bytes / outputs) if in_dram[2] else np.zeros_like(c_bytes)
    dram_cycles = (dram_read_bytes + dram_write_bytes) / dram_bytes_per_cycle
    prologue = prologue_bytes / dram_bytes_per_cycle
    epilogue = epilogue_bytes / dram_bytes_per_cycle
    overlapped_dram = np.maximum(dram_cycles - prologue - epilogue, 0.0)
    sram_cycles = np.zeros_like(dram_cycles)
    for reads, writes, bandwidth in zip(buffer_reads, buffer_writes, sram_bytes_per_cycle):
        if np.isfinite(bandwidth):
            sram_cycles = np.maximum(sram_cycles, (reads + writes) / bandwidth)
    memory_cycles = np.maximum(overlapped_dram, sram_cycles)
    total_cycles = prologue + np.maximum(compute_cycles, memory_cycles) + epilogue
    return {
        "compute_cycles": compute_cycles.astype(np.float64),
        "stall_cycles": total_cycles - compute_cycles,
        "memory_bound": memory_cycles > compute_cycles,
        "row_folds": row_folds,
        "col_folds": col_folds,
        "folds": folds,
        "time_steps": time_steps,
        "dram_read_bytes": dram_read_bytes,
        "dram_write_bytes": dram_write_bytes,
        "dram_read_bytes_a": dram_reads["a"],
        "dram_read_bytes_b": dram_reads["b"],
        "dram_read_bytes_c": c_dram_reads,
        "dram_write_bytes_c": c_dram_writes,
        "array_read_bytes_a": array_reads["a"],
        "array_read_bytes_b": array_reads["b"],
        "array_read_bytes_c": c_array_reads,
        "array_write_bytes_c": c_array_writes,
        "buffer_read_bytes": buffer_reads,
        "buffer_write_bytes": buffer_writes,
    }


@lru_cache(maxsize=1024)
def minimum_buffer_bytes(
    rows: int,
    cols: int,
    dataflow: str,
    reduction_per_step: int,
    bytes_per_element: tuple[float, float, float],
) -> tuple[float, float, float]:
    """Smallest A, B and C buffers that hold one fold's working set twice (double buffering).

    The stationary tile must fit whole in one half. A streamed tensor needs
    one vector along the array edge it enters. The output buffer needs the
    output tile (os) or one row of C partial sums (ws, is).
    """
    rows_dim, cols_dim, _ = DATAFLOW_AXES[dataflow]
    rows_per_fold = rows * reduction_per_step if rows_dim == "k" else rows
    roles = tensor_roles(dataflow)
    minimums = []
    for index, tensor in enumerate(("a", "b", "c")):
        role = roles[tensor]
        if role == "stationary":
            elements = rows_per_fold * cols
        elif role == "row_stream":
            elements = rows_per_fold
        else:
            elements = cols
        minimums.append(2 * elements * bytes_per_element[index])
    return tuple(minimums)
