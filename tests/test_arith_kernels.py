"""The emulating kernels against the first-principles reference, bit for bit.

Every accumulator and every order of addition runs on random inputs and on
adversarial ones: cancellation, max-magnitude operands, subnormals, wide
spans inside one block, and NaN and Inf where the formats have them.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_arith_reference import reference_matmul, same_bits

import hwsim
from hwsim.arith import FloatAccumulator, IntAccumulator, MacSpec, matmul
from hwsim.formats.spec import FloatFormat, IntFormat, ScaledFormat

M, K, N = 2, 40, 3

FLOAT_REGISTERS = [
    "fp32",
    "fp16",
    "bf16",
    "fp22_e8m13_rtz",
    FloatAccumulator(5, 4, "nearest_away", "saturate", name="e5m4_away_saturate"),
]
INT_REGISTERS = [
    "int32_wrap",
    "int32_saturate",
    "int16_wrap",
    "int16_saturate",
    IntAccumulator(12, "saturate", name="int12_saturate"),
]
FLOAT_PAIRS = [
    ("fp8_e4m3", "fp8_e4m3"),
    ("fp8_e5m2", "fp8_e5m2"),
    ("bf16", "bf16"),
    ("fp16", "fp8_e4m3"),
    ("mxfp4", "mxfp4"),
    ("mxfp8_e5m2", "mxfp8_e5m2"),
    ("nvfp4", "nvfp4"),
    ("int8", "int4"),
]
INT_PAIRS = [("int8", "int8"), ("int4", "int8"), ("int8_channel", "int8_channel"), ("uint8", "int8_sym")]
ORDERS = ["sequential", "pairwise", "tree"]
INPUTS = ["random", "cancellation", "extreme", "special"]


def _element(fmt):
    return fmt.element if isinstance(fmt, ScaledFormat) else fmt


def _has_nan_code(fmt) -> bool:
    element = _element(fmt)
    if isinstance(fmt, ScaledFormat):
        return True  # a NaN in a block makes the block scale NaN
    return isinstance(element, FloatFormat) and element.special != "none"


def make_operand(fmt, shape, kind: str, seed: int) -> np.ndarray:
    """Float inputs of `shape` that quantize to the case `kind` in format fmt."""
    rng = np.random.default_rng(seed)
    element = _element(fmt)
    top = float(element.max_normal)
    if isinstance(element, IntFormat):
        bottom = 2.0**-element.frac_bits
    elif isinstance(element, FloatFormat):
        bottom = float(element.min_subnormal)
    else:
        bottom = float(element.min_normal)
    x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-2, 2, shape)
    if not isinstance(fmt, ScaledFormat):
        x = np.clip(x, -top, top)
    if kind == "cancellation":
        # Columns (or rows) whose second half cancels the first, plus one small residue.
        half = shape[-1] // 2 if shape[-1] > 1 else 0
        if half:
            x[..., half : 2 * half] = -x[..., :half]
        x.flat[0] *= 1e-3
    elif kind == "extreme":
        choice = rng.integers(0, 4, shape)
        sign = np.where(rng.integers(0, 2, shape) == 1, -1.0, 1.0)
        x = np.where(choice == 0, top, np.where(choice == 1, bottom, np.where(choice == 2, 0.0, 1.0))) * sign
        if isinstance(fmt, ScaledFormat):
            # Wide spans inside a block: max-magnitude and tiny elements together.
            x = np.where(choice == 0, 6e4, np.where(choice == 1, 1e-3, x)) * sign
    elif kind == "special":
        x.flat[1] = np.nan
        x.flat[-1] = np.inf
        x.flat[x.size // 2] = -np.inf
    return x.astype(np.float32)


def _run_case(mac: MacSpec, kind: str, seed: int):
    a = make_operand(mac.a, (M, K), kind, seed)
    b = make_operand(mac.b, (K, N), kind, seed + 1)
    if kind == "cancellation":
        b = np.ascontiguousarray(make_operand(mac.b, (N, K), kind, seed + 1).T)
    encoded_a = hwsim.encode(a, mac.a, axis=-1)
    encoded_b = hwsim.encode(b, mac.b, axis=-2)
    result = matmul(encoded_a, encoded_b, mac, path="general")
    expected, expected_overflows = reference_matmul(encoded_a, encoded_b, mac)
    return result, expected, expected_overflows


def _tree_width(a: str, b: str) -> int:
    return 2 * MacSpec(a, b, "fp32").block_length if MacSpec(a, b, "fp32").block_length > 1 else 4


@pytest.mark.parametrize("register", FLOAT_REGISTERS, ids=lambda r: r if isinstance(r, str) else r.name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("pair", FLOAT_PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("kind", INPUTS)
def test_float_register_matches_reference(register, order, pair, kind):
    a_name, b_name = pair
    if kind == "special" and not (_has_nan_code(hwsim.formats.get(a_name)) and _has_nan_code(hwsim.formats.get(b_name))):
        pytest.skip(f"{a_name} or {b_name} has no NaN code, so NaN inputs are rejected by encode")
    width = _tree_width(a_name, b_name) if order == "tree" else None
    mac = MacSpec(a_name, b_name, register, order=order, tree_width=width)
    result, expected, expected_overflows = _run_case(mac, kind, seed=len(a_name) * 7 + ORDERS.index(order))
    mismatch = ~same_bits(result.values, expected)
    assert not mismatch.any(), f"{mac.label} {kind}: got {result.values[mismatch]} expected {expected[mismatch]}"
    assert result.overflow_events == expected_overflows


@pytest.mark.parametrize("register", INT_REGISTERS, ids=lambda r: r if isinstance(r, str) else r.name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("pair", INT_PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
@pytest.mark.parametrize("kind", ["random", "extreme"])
def test_integer_register_matches_reference(register, order, pair, kind):
    mac = MacSpec(pair[0], pair[1], register, order=order, tree_width=4 if order == "tree" else None)
    result, expected, expected_overflows = _run_case(mac, kind, seed=11 + ORDERS.index(order))
    mismatch = ~same_bits(result.values, expected)
    assert not mismatch.any(), f"{mac.label} {kind}: got {result.values[mismatch]} expected {expected[mismatch]}"
    assert result.overflow_events == expected_overflows


@pytest.mark.parametrize(
    "pair",
    [
        ("nf4", "nf4"),  # products of 48-bit scaled values exceed float64: the limb path with Dekker's product
        ("fp32", "fp32"),  # products span 2**-298 .. 2**256
        ("mxint8", "mxint8"),
        ("mxfp6_e3m2", "mxfp6_e2m3"),
        ("bfp8", "bfp8"),
        ("int8_asym_g32", "fp8_e4m3"),  # zero points subtracted inside the datapath
        ("fp8_e4m3_g16", "fp8_e4m3_channel"),  # FP32 group scale inside, FP32 channel scale after
        ("int4_g16", "int8_tensor"),
    ],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("register", ["fp32", "bf16"])
def test_other_format_pairs_match_reference(pair, order, register):
    mac0 = MacSpec(pair[0], pair[1], register)
    width = 2 * mac0.block_length if mac0.block_length > 1 else 4
    mac = MacSpec(pair[0], pair[1], register, order=order, tree_width=width if order == "tree" else None)
    for kind in ("random", "extreme"):
        result, expected, expected_overflows = _run_case(mac, kind, seed=5)
        mismatch = ~same_bits(result.values, expected)
        assert not mismatch.any(), f"{mac.label} {kind}: got {result.values[mismatch]} expected {expected[mismatch]}"
        assert result.overflow_events == expected_overflows


@pytest.mark.parametrize("order", ORDERS)
def test_batched_operands_match_reference(order):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2, 1, M, K)).astype(np.float32)
    b = rng.standard_normal((3, K, N)).astype(np.float32)
    mac = MacSpec("mxfp8_e4m3", "fp8_e4m3", "fp16", order=order, tree_width=64 if order == "tree" else None)
    encoded_a, encoded_b = hwsim.encode(a, mac.a, axis=-1), hwsim.encode(b, mac.b, axis=-2)
    result = matmul(encoded_a, encoded_b, mac, path="general")
    expected, _ = reference_matmul(encoded_a, encoded_b, mac)
    assert result.values.shape == (2, 3, M, N)
    assert same_bits(result.values, expected).all()


def test_single_term_pairwise_keeps_sign_of_zero():
    # One leaf: the result is R(leaf), so -0 * +1 stays -0.
    mac = MacSpec("fp8_e4m3", "fp8_e4m3", "fp32", order="pairwise")
    result = matmul(np.array([[-0.0]], np.float32), np.array([[1.0]], np.float32), mac, path="general")
    assert np.signbit(result.values[0, 0])
    sequential = matmul(np.array([[-0.0]], np.float32), np.array([[1.0]], np.float32), MacSpec("fp8_e4m3", "fp8_e4m3", "fp32"), path="general")
    # Sequential adds the leaf to a register cleared to +0, and +0 + -0 = +0.
    assert not np.signbit(sequential.values[0, 0])


def _near_tie_rows(register) -> dict[str, tuple[list[float], list[float]]]:
    """Rows a and columns b of fp32 values whose exact dot products sit next to halfway points of `register`.

    With p significand bits and E a safe exponent, the register's spacing at
    2**E is 2**(E - p + 1), so 2**(E - p) is half of it. A tiny term 2**(E - p - 60)
    moves the sum off the tie by far less than float64 can represent next to 2**E,
    and (2**23 + 1)(2**23 - 1) = 2**46 - 1 makes a product 2**(E - p - 46) below half.
    """
    spec = hwsim.arith.get_accumulator(register) if isinstance(register, str) else register
    p = spec.mantissa_bits + 1
    e = min(10, spec.emax - 2)
    odd_base = (2.0 ** (p - 1) + 1) * 2.0 ** (e - p + 1)
    return {
        "tie_plus_tiny": ([2.0**e, 2.0 ** (e - p), 2.0 ** (e - p - 60)], [1.0, 1.0, 1.0]),
        "tie_minus_tiny": ([2.0**e, 2.0 ** (e - p), -(2.0 ** (e - p - 60))], [1.0, 1.0, 1.0]),
        "odd_plus_under_half": ([odd_base, 2.0**23 + 1], [1.0, (2.0**23 - 1) * 2.0 ** (e - p - 46)]),
    }


@pytest.mark.parametrize("register", FLOAT_REGISTERS, ids=lambda r: r if isinstance(r, str) else r.name)
@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("case", ["tie_plus_tiny", "tie_minus_tiny", "odd_plus_under_half"])
def test_near_tie_sums_match_reference(register, order, case):
    a_row, b_column = _near_tie_rows(register)[case]
    a = np.array([a_row])
    b = np.array(b_column).reshape(-1, 1)
    mac = MacSpec("fp32", "fp32", register, order=order, tree_width=4 if order == "tree" else None)
    encoded_a, encoded_b = hwsim.encode(a, mac.a, axis=-1), hwsim.encode(b, mac.b, axis=-2)
    np.testing.assert_array_equal(hwsim.decode(encoded_a, np.float64), a)
    np.testing.assert_array_equal(hwsim.decode(encoded_b, np.float64), b)
    result = matmul(encoded_a, encoded_b, mac, path="general")
    expected, _ = reference_matmul(encoded_a, encoded_b, mac)
    assert same_bits(result.values, expected).all(), f"{mac.label} {case}: got {result.values} expected {expected}"
