"""studies/accumulation.py on a small grid: errors against hand-derived bounds, exact int32 sums, and the files it writes.

Unit roundoffs used below, from the register widths (p significand bits,
the implicit one included):
- fp16: p = 11, nearest-even, u = 2**-11;
- fp32: p = 24, nearest-even, u = 2**-24;
- fp22_e8m13_rtz: p = 14, toward zero, u = 2**(1 - 14) = 2**-13 (a whole ulp).
Higham's gamma_n = n*u / (1 - n*u) bounds the relative error of n roundings.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pandas as pd
import pytest

from hwsim.report import MissingColumnsError, accumulation_figure
from hwsim.report.accumulation import TITLE, growth_exponent

STUDY_PATH = Path(__file__).resolve().parents[1] / "studies" / "accumulation.py"
U_FP16 = 2.0**-11
U_FP32 = 2.0**-24
U_FP22_RTZ = 2.0**-13


def load_study():
    spec = importlib.util.spec_from_file_location("accumulation_study", STUDY_PATH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


study = load_study()
GRID = study.QUICK_GRID
MAX_K = max(GRID.k_values)

FP32_SEQUENTIAL = study.Datapath("fp8_e4m3", "fp32")
FP16_SEQUENTIAL = study.Datapath("fp8_e4m3", "fp16")
FP16_PAIRWISE = study.Datapath("fp8_e4m3", "fp16", "pairwise")
FP22_TREE = study.Datapath("fp8_e4m3", "fp22_e8m13_rtz", "tree", 32)
FP22_PROMOTED = study.Datapath("fp8_e4m3", "fp22_e8m13_rtz", "tree", 32, fp32_promotion_interval=128)
INT8_INT32 = study.Datapath("int8", "int32_wrap")
CHOSEN = [FP32_SEQUENTIAL, FP16_SEQUENTIAL, FP16_PAIRWISE, FP22_TREE, FP22_PROMOTED, INT8_INT32]


def gamma(n: int, u: float) -> float:
    assert n * u < 1
    return n * u / (1 - n * u)


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("accumulation")
    tables = study.run(out, GRID, CHOSEN)
    return out, tables


@pytest.fixture(scope="module")
def errors(study_run):
    return study_run[1]["errors"]


def rows_of(errors: pd.DataFrame, datapath) -> pd.DataFrame:
    rows = errors[errors["datapath"] == datapath.label].sort_values("k")
    assert list(rows["k"]) == list(GRID.k_values)
    return rows.set_index("k")


def test_grid_covers_k_64_to_1024():
    assert GRID.k_values == (64, 128, 256, 512, 1024)


def test_fp32_error_far_below_fp16(errors):
    # Each rounding's error is at most u times the partial sum, and the partial
    # sums agree to O(u), so for the same data and order the errors scale as
    # u_fp32 / u_fp16 = 2**-13. Allow a factor 8 of slack.
    fp32 = rows_of(errors, FP32_SEQUENTIAL).loc[MAX_K]
    fp16 = rows_of(errors, FP16_SEQUENTIAL).loc[MAX_K]

    assert fp16["max_normalized_error"] > 0
    assert fp32["max_normalized_error"] <= 2.0**-10 * fp16["max_normalized_error"]
    assert fp32["p99_rel_error"] <= 2.0**-10 * fp16["p99_rel_error"]


def test_fp32_within_its_bound(errors):
    # fp8_e4m3 products have 8 significand bits and are multiples of 2**-18, so
    # fp32 represents each one exactly and the first addition (to zero) is exact: K - 1 roundings.
    rows = rows_of(errors, FP32_SEQUENTIAL)
    for k, row in rows.iterrows():
        assert row["max_normalized_error"] <= gamma(k - 1, U_FP32), f"K={k}"


def test_fp16_sequential_error_grows_with_k(errors):
    # Rounding errors of random sign add like a random walk, so the relative
    # error grows like sqrt(K): a factor 4 from K = 64 to K = 1024. Ask for half.
    rows = rows_of(errors, FP16_SEQUENTIAL)

    assert rows.loc[1024, "median_rel_error"] > 2 * rows.loc[64, "median_rel_error"]
    assert rows.loc[1024, "p99_rel_error"] > rows.loc[64, "p99_rel_error"]
    exponent = growth_exponent(rows.index, rows["median_rel_error"])
    assert 0.25 <= exponent <= 1.0


def test_fp16_sequential_within_k_u_bound(errors):
    # Products have 8 significand bits and are multiples of 2**-18, and in this
    # data they stay below fp16's 65504 (no overflow), so fp16 represents each
    # one: 0 + p1 is exact and K - 1 additions round. Partial sums are multiples
    # of 2**-18, which fp16 represents exactly below 2**-14, so no rounding underflows:
    # |error| <= gamma_{K-1}(2**-11) * sum|a*b|, with (K - 1) * u < 1/2 for K <= 1024.
    rows = rows_of(errors, FP16_SEQUENTIAL)
    for k, row in rows.iterrows():
        assert row["overflow_events"] == 0, f"K={k}"
        assert row["max_normalized_error"] <= gamma(k - 1, U_FP16), f"K={k}"
        assert row["within_bound"], f"K={k}"


def test_fp16_pairwise_beats_sequential(errors):
    # Pairwise passes each product through log2(K) = 10 roundings at K = 1024,
    # against up to K - 1 = 1023 in sequence.
    pairwise = rows_of(errors, FP16_PAIRWISE).loc[MAX_K]
    sequential = rows_of(errors, FP16_SEQUENTIAL).loc[MAX_K]

    assert pairwise["median_rel_error"] <= 0.5 * sequential["median_rel_error"]
    assert pairwise["p99_rel_error"] < sequential["p99_rel_error"]
    assert pairwise["max_normalized_error"] <= gamma(10, U_FP16)


def test_promotion_to_fp32_bounds_fp22_error(errors):
    # Promotion every 128 products leaves 128 / 32 = 4 roundings in fp22 and
    # 1024 / 128 = 8 in fp32, bound gamma_4(2**-13) + gamma_8(2**-24) * (1 + gamma_4(2**-13))
    # = 4.886e-4, against gamma_32(2**-13) = 3.922e-3 without promotion.
    promoted = rows_of(errors, FP22_PROMOTED).loc[MAX_K]
    tree = rows_of(errors, FP22_TREE).loc[MAX_K]
    bound = gamma(4, U_FP22_RTZ) + gamma(8, U_FP32) * (1 + gamma(4, U_FP22_RTZ))

    assert promoted["bound_normalized_error"] == pytest.approx(bound, rel=1e-12)
    assert tree["bound_normalized_error"] == pytest.approx(gamma(32, U_FP22_RTZ), rel=1e-12)
    assert promoted["max_normalized_error"] <= bound
    assert promoted["median_rel_error"] < tree["median_rel_error"]


def test_int32_exact_for_int8(errors):
    # |int8 code| <= 128, so every partial sum is at most K * 2**14 < 2**31 for K <= 2**16.
    rows = rows_of(errors, INT8_INT32)
    for k, row in rows.iterrows():
        assert k * 128 * 128 < 2**31
        assert row["max_abs_error"] == 0, f"K={k}"
        assert row["overflow_events"] == 0, f"K={k}"


def test_int32_worst_case_operands():
    # All codes -128: each product is 2**14, so K = 2**16 sums to exactly 2**30.
    # At K = 2**17 the sum reaches 2**31, one past the int32 maximum, on the
    # last addition, and wraps to -2**31.
    for k, expected in ((2**16, 2**30), (2**17, -(2**31))):
        a = np.full((2, k), -128.0, np.float32)
        b = np.full((k, 3), -128.0, np.float32)
        operands = study.quantize(a, b, "int8")

        values, overflows = study.emulate(INT8_INT32, operands)

        assert np.all(values == expected), f"K={k}"
        assert overflows == (0 if k == 2**16 else values.size), f"K={k}"


def test_reference_matches_fsum():
    # Oracle: ml_dtypes rounds to float8_e4m3fn, and math.fsum sums the float64
    # products exactly. sum|a*b| is exact in float64 too: its partial sums are
    # multiples of 2**-18 below 256 * 448**2 < 2**26, 44 bits in all.
    a, b = study.load_operands(256, 3, 4)
    operands = study.quantize(a, b, "fp8_e4m3")
    a_q = a.astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    b_q = b.astype(ml_dtypes.float8_e4m3fn).astype(np.float64)

    for i in range(3):
        for j in range(4):
            products = a_q[i] * b_q[:, j]
            assert operands.exact[i, j] == math.fsum(products)
            assert operands.abs_sum[i, j] == math.fsum(np.abs(products))


def test_sequential_bound_at_k_1024_is_one():
    # gamma_1024(2**-11) = (1/2) / (1 - 1/2) = 1.
    relative, _, steps, u = study.error_bound(FP16_SEQUENTIAL, 1024)

    assert steps == 1024
    assert u == U_FP16
    assert relative == 1.0


def test_bound_infinite_past_one_over_u():
    # bf16: u = 2**-8, so 256 roundings give n*u = 1 and no bound.
    relative, _, _, _ = study.error_bound(study.Datapath("fp8_e4m3", "bf16"), 256)

    assert relative == math.inf


def test_writes_tables_and_dashboard(study_run):
    out, tables = study_run
    page = (out / "dashboard.html").read_text(encoding="utf-8")

    assert TITLE in page
    assert "accumulation error vs K" in page
    for name in ("errors", "growth"):
        written = pd.read_parquet(out / f"{name}.parquet")
        pd.testing.assert_frame_equal(written, tables[name])
    assert set(tables["errors"]["datapath"]) == {datapath.label for datapath in CHOSEN}
    assert INT8_INT32.label not in set(tables["growth"]["datapath"])


def test_grid_rejects_k_not_power_of_two():
    with pytest.raises(ValueError, match=r"K=48 .* power of two"):
        study.Grid((64, 48), m=2, n=2)


def test_promotion_rejects_integer_accumulator():
    with pytest.raises(ValueError, match="must be a float register"):
        study.Datapath("int8", "int32_wrap", fp32_promotion_interval=128)


def test_promotion_rejects_interval_off_tree():
    with pytest.raises(ValueError, match="fp32_promotion_interval=48"):
        study.Datapath("fp8_e4m3", "fp22_e8m13_rtz", "tree", 32, fp32_promotion_interval=48)


def test_growth_exponent_of_power_law():
    k = np.array([64, 128, 256, 512])

    assert growth_exponent(k, 3 * k**0.5) == pytest.approx(0.5)
    assert growth_exponent(k, np.zeros(4)) is None


def test_figure_rejects_missing_columns():
    frame = pd.DataFrame({"k": [64], "accumulator": ["fp16"], "median_rel_error": [1e-3]})

    with pytest.raises(MissingColumnsError, match="p99_rel_error"):
        accumulation_figure(frame)


def test_figure_rejects_all_zero_errors():
    frame = pd.DataFrame({"k": [64, 128], "accumulator": ["int32_wrap"] * 2, "median_rel_error": [0.0, 0.0], "p99_rel_error": [0.0, 0.0]})

    with pytest.raises(ValueError, match="every error in the table is zero"):
        accumulation_figure(frame)
