"""A slow reference GEMM written from first principles, and checks of the reference itself.

Values are Python Fractions (finite, nonzero) or Python floats (signed
zeros, Inf, NaN), so every sum and product is exact and IEEE 754's rules for
zeros and specials are applied explicitly. Codes are decoded from the format
fields (sign, exponent, mantissa; two's complement; codebook levels) without
the library's decoders. Rounding into a register is written out below.

The datapath semantics this reference implements:
- in-datapath values: element value times its block scale (block or group
  granularity along K); scales constant along K are applied after
  accumulation, together with NVFP4's alpha = float32(1 / float32(g_a g_b));
- a term is the exact sum of `block` consecutive products (block = 1 for
  element formats); K is zero-padded to whole blocks;
- sequential: acc = R(acc + term) from acc = +0; tree of width w: acc =
  R(acc + exact sum of w / block terms); pairwise: level by level,
  R(left + right), a node without a partner moves up unchanged, and a single
  term is R(term);
- integer registers wrap or saturate after every addition;
- epilogue: R(acc * f) with f = float64(scale_a * scale_b * alpha), one
  rounding into the float register, or into FP32 for an integer register.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from hwsim.arith import FloatAccumulator, IntAccumulator, MacSpec
from hwsim.formats.spec import CodebookFormat, FloatFormat, IntFormat, ScaledFormat

NAN = float("nan")
INF = float("inf")


# ---------------------------------------------------------------- values


def is_nan(x) -> bool:
    return isinstance(x, float) and math.isnan(x)


def is_inf(x) -> bool:
    return isinstance(x, float) and math.isinf(x)


def is_zero(x) -> bool:
    return isinstance(x, float) and x == 0.0


def from_float(v: float):
    """A float64 value in the reference domain."""
    if math.isnan(v) or math.isinf(v) or v == 0.0:
        return float(v)
    return Fraction(v)


def to_float(x) -> float:
    return x if isinstance(x, float) else float(x)


def negative(x) -> bool:
    if isinstance(x, Fraction):
        return x < 0
    return math.copysign(1.0, x) < 0


def mul(x, y):
    """Exact IEEE product."""
    if is_nan(x) or is_nan(y):
        return NAN
    sign = -1.0 if negative(x) != negative(y) else 1.0
    if is_inf(x) or is_inf(y):
        if is_zero(x) or is_zero(y):
            return NAN
        return sign * INF
    if is_zero(x) or is_zero(y):
        return sign * 0.0
    return x * y


def add(x, y):
    """Exact IEEE sum: x + (-x) is +0, and -0 + -0 is -0."""
    if is_nan(x) or is_nan(y):
        return NAN
    if is_inf(x) and is_inf(y):
        return x if x == y else NAN
    if is_inf(x):
        return x
    if is_inf(y):
        return y
    if is_zero(x) and is_zero(y):
        return -0.0 if negative(x) and negative(y) else 0.0
    if is_zero(x):
        return y
    if is_zero(y):
        return x
    total = x + y
    return total if total != 0 else 0.0


def exact_sum(values):
    total = -0.0  # the additive identity for both zeros
    for v in values:
        total = add(total, v)
    return total


def floor_log2(x: Fraction) -> int:
    e = x.numerator.bit_length() - x.denominator.bit_length()
    while Fraction(2) ** e > x:
        e -= 1
    while Fraction(2) ** (e + 1) <= x:
        e += 1
    return e


def round_to_register(x, register: FloatAccumulator):
    """Round x into a float register; return (value, overflowed)."""
    if not isinstance(x, Fraction):
        return x, False
    m = register.mantissa_bits
    bias = 2 ** (register.exponent_bits - 1) - 1
    emin, emax = 1 - bias, bias
    largest = (2 - Fraction(1, 2**m)) * Fraction(2) ** emax
    magnitude = abs(x)
    exponent = max(floor_log2(magnitude), emin)
    quantum = Fraction(2) ** (exponent - m)
    scaled = magnitude / quantum
    whole = scaled.numerator // scaled.denominator
    rest = scaled - whole
    if register.rounding == "nearest_even":
        if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1):
            whole += 1
    elif register.rounding == "nearest_away":
        if rest >= Fraction(1, 2):
            whole += 1
    rounded = whole * quantum
    overflowed = rounded > largest
    if overflowed:
        if register.overflow == "saturate" or register.rounding == "toward_zero":
            rounded = largest
        else:
            return (-INF if x < 0 else INF), True
    if rounded == 0:
        return (-0.0 if x < 0 else 0.0), False
    return (-rounded if x < 0 else rounded), overflowed


def fit_integer(x: int, register: IntAccumulator) -> tuple[int, bool]:
    low, high = -(2 ** (register.bits - 1)), 2 ** (register.bits - 1) - 1
    if low <= x <= high:
        return x, False
    if register.overflow == "saturate":
        return (high if x > high else low), True
    return (x - low) % 2**register.bits + low, True


FP32_REGISTER = FloatAccumulator(8, 23)


# ---------------------------------------------------------------- decoding


def float_code_value(fmt: FloatFormat, code: int):
    """Value of a float code from its fields."""
    magnitude_bits = fmt.exponent_bits + fmt.mantissa_bits
    sign = fmt.signed and (code >> magnitude_bits) & 1
    magnitude = code & ((1 << magnitude_bits) - 1)
    exponent_field = magnitude >> fmt.mantissa_bits
    fraction = magnitude & ((1 << fmt.mantissa_bits) - 1)
    all_ones = (1 << fmt.exponent_bits) - 1
    if fmt.special == "fnuz" and sign and magnitude == 0:
        return NAN
    if fmt.special == "ieee" and exponent_field == all_ones:
        if fraction:
            return NAN
        return -INF if sign else INF
    if fmt.special == "fn" and magnitude == (1 << magnitude_bits) - 1:
        return NAN
    if exponent_field == 0 and fmt.subnormals:
        value = Fraction(fraction) * Fraction(2) ** (1 - fmt.bias - fmt.mantissa_bits)
    else:
        value = Fraction((1 << fmt.mantissa_bits) + fraction) * Fraction(2) ** (exponent_field - fmt.bias - fmt.mantissa_bits)
    if value == 0:
        return -0.0 if sign else 0.0
    return -value if sign else value


def int_code_value(fmt: IntFormat, code: int) -> int:
    """Two's-complement (or unsigned) integer of a code, before 2**-frac_bits."""
    if fmt.signed and code >= 1 << (fmt.bits - 1):
        return code - (1 << fmt.bits)
    return code


def element_value(fmt, code: int):
    if isinstance(fmt, FloatFormat):
        if fmt.width > 16:
            return from_float(float(np.array([code], np.uint32).view(np.float32)[0]))
        return float_code_value(fmt, code)
    if isinstance(fmt, IntFormat):
        return from_float(0.0) if int_code_value(fmt, code) == 0 else Fraction(int_code_value(fmt, code), 2**fmt.frac_bits)
    if isinstance(fmt, CodebookFormat):
        return from_float(fmt.levels[code])
    raise TypeError(fmt)


class DecodedOperand:
    """One operand as rows of datapath values along K, with per-row factors applied after accumulation.

    values[batch * rows + row][k]: reference-domain values, each an element
        times its in-datapath scale.
    ints[batch * rows + row][k]: integer codes with the zero point
        subtracted, for integer elements.
    row_factor[batch * rows + row]: the scale applied after accumulation.
    tensor_scale: NVFP4's g.
    """

    def __init__(self, encoded, role: str):
        fmt = encoded.fmt
        shape = tuple(encoded.shape)
        self.batch = int(np.prod(shape[:-2])) if len(shape) > 2 else 1
        if role == "a":
            self.rows, self.k = shape[-2], shape[-1]
        else:
            self.k, self.rows = shape[-2], shape[-1]
        self.tensor_scale = encoded.tensor_scale
        n_rows = self.batch * self.rows
        if isinstance(fmt, ScaledFormat):
            element = fmt.element
            codes = np.asarray(encoded.codes).reshape(n_rows, -1)
            group = int(encoded.info["group_size"])
            scale_codes = np.asarray(encoded.scale_codes).reshape(encoded.scale_codes.shape[0], -1)
            per_block = fmt.granularity in ("group", "block")
            zero_points = encoded.zero_points
        else:
            element = fmt
            codes = np.asarray(encoded.codes)
            if role == "b":
                codes = np.swapaxes(codes.reshape(self.batch, self.k, self.rows), 1, 2)
            codes = codes.reshape(n_rows, self.k)
            group, scale_codes, per_block, zero_points = self.k, None, False, None
        self.values, self.ints, self.row_factor = [], [], []
        for r in range(n_rows):
            row_values, row_ints = [], []
            for kk in range(codes.shape[1] if per_block else self.k):
                code = int(codes[r, kk])
                if kk >= self.k:
                    row_values.append(0.0)  # padding to whole blocks
                    row_ints.append(0)
                    continue
                if isinstance(element, IntFormat):
                    integer = int_code_value(element, code)
                    if zero_points is not None:
                        integer = code - int(zero_points[r, kk // group])
                    row_ints.append(integer)
                    value = 0.0 if integer == 0 else Fraction(integer, 2**element.frac_bits)
                else:
                    value = element_value(element, code)
                if per_block:
                    value = mul(value, float_code_value(fmt.scale, int(scale_codes[r, kk // group])))
                row_values.append(value)
            self.values.append(row_values)
            self.ints.append(row_ints)
            if scale_codes is not None and not per_block:
                scale_row = r if scale_codes.shape[0] == n_rows else 0
                self.row_factor.append(to_float(float_code_value(fmt.scale, int(scale_codes[scale_row, 0]))))
            else:
                self.row_factor.append(1.0)

    def row(self, batch: int, row: int, integer: bool, k_padded: int):
        index = batch * self.rows + row
        data = self.ints[index] if integer else self.values[index]
        fill = 0 if integer else 0.0
        return list(data) + [fill] * (k_padded - len(data))


# ---------------------------------------------------------------- the GEMM


def _terms(a_row, b_col, block):
    products = [mul(x, y) for x, y in zip(a_row, b_col)]
    return [exact_sum(products[t : t + block]) for t in range(0, len(products), block)]


def _float_dot(a_row, b_col, mac: MacSpec):
    register = mac.accumulator
    block = mac.block_length
    terms = _terms(a_row, b_col, block)
    overflows = 0
    if mac.order == "pairwise":
        if len(terms) == 1:
            value, overflowed = round_to_register(terms[0], register)
            return value, int(overflowed)
        level = terms
        while len(level) > 1:
            nxt = []
            for t in range(0, len(level) - 1, 2):
                value, overflowed = round_to_register(add(level[t], level[t + 1]), register)
                nxt.append(value)
                overflows += overflowed
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return level[0], overflows
    per_chunk = (mac.tree_width // block) if mac.order == "tree" else 1
    acc = 0.0
    for t in range(0, len(terms), per_chunk):
        value, overflowed = round_to_register(add(acc, exact_sum(terms[t : t + per_chunk])), register)
        acc = value
        overflows += overflowed
    return acc, overflows


def _int_dot(a_row, b_col, mac: MacSpec):
    register = mac.accumulator
    products = [x * y for x, y in zip(a_row, b_col)]
    overflows = 0
    if mac.order == "pairwise":
        level, first = products, True
        if len(level) == 1:
            value, overflowed = fit_integer(level[0], register)
            return value, int(overflowed)
        while len(level) > 1:
            nxt = []
            for t in range(0, len(level) - 1, 2):
                value, overflowed = fit_integer(level[t] + level[t + 1], register)
                nxt.append(value)
                overflows += overflowed
            if len(level) % 2:
                nxt.append(level[-1])
            level = nxt
        return level[0], overflows
    chunk = mac.tree_width if mac.order == "tree" else 1
    acc = 0
    for t in range(0, len(products), chunk):
        acc, overflowed = fit_integer(acc + sum(products[t : t + chunk]), register)
        overflows += overflowed
    return acc, overflows


def nvfp4_alpha(g_a, g_b) -> float:
    """alpha = float32(1 / float32(g_a * g_b)), in float32 arithmetic (NVFP4 epilogue)."""
    g = np.float32(1.0)
    for scale in (g_a, g_b):
        if scale is not None:
            g = np.float32(g * np.float32(scale))
    return float(np.float32(1.0) / g)


def reference_matmul(encoded_a, encoded_b, mac: MacSpec):
    """Emulated a @ b from first principles; return (float64 array of shape batch + (M, N), overflow events)."""
    a = DecodedOperand(encoded_a, "a")
    b = DecodedOperand(encoded_b, "b")
    batch_a, batch_b = tuple(encoded_a.shape[:-2]), tuple(encoded_b.shape[:-2])
    batch_shape = np.broadcast_shapes(batch_a, batch_b)
    index_a = np.broadcast_to(np.arange(a.batch).reshape(batch_a), batch_shape).reshape(-1)
    index_b = np.broadcast_to(np.arange(b.batch).reshape(batch_b), batch_shape).reshape(-1)

    integer = isinstance(mac.accumulator, IntAccumulator)
    k_padded = max(len(a.values[0]) if a.values else 0, len(b.values[0]) if b.values else 0)
    alpha = nvfp4_alpha(a.tensor_scale, b.tensor_scale)
    frac_bits = 0
    if integer:
        element_a = mac.a.element if isinstance(mac.a, ScaledFormat) else mac.a
        element_b = mac.b.element if isinstance(mac.b, ScaledFormat) else mac.b
        frac_bits = element_a.frac_bits + element_b.frac_bits

    out = np.empty((len(index_a), a.rows, b.rows))
    overflows = 0
    for t in range(len(index_a)):
        for i in range(a.rows):
            a_row = a.row(int(index_a[t]), i, integer, k_padded)
            for j in range(b.rows):
                b_col = b.row(int(index_b[t]), j, integer, k_padded)
                if integer:
                    acc, count = _int_dot(a_row, b_col, mac)
                    acc = 0.0 if acc == 0 else Fraction(acc)
                else:
                    acc, count = _float_dot(a_row, b_col, mac)
                overflows += count
                factor = a.row_factor[int(index_a[t]) * a.rows + i]
                factor_b = b.row_factor[int(index_b[t]) * b.rows + j]
                if math.isnan(factor) or math.isnan(factor_b) or math.isnan(alpha):
                    f = NAN
                else:
                    f = from_float(float(Fraction(factor) * Fraction(factor_b) * Fraction(alpha) / 2**frac_bits))
                if f == 1:
                    out[t, i, j] = to_float(acc)
                    continue
                register = FP32_REGISTER if integer else mac.accumulator
                value, _ = round_to_register(mul(acc, f), register)
                out[t, i, j] = to_float(value)
    return out.reshape(tuple(batch_shape) + (a.rows, b.rows)), overflows


def same_bits(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise: equal float64 bit patterns, or both NaN."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return (x.view(np.int64) == y.view(np.int64)) | (np.isnan(x) & np.isnan(y))


# ---------------------------------------------------------------- checks of the reference


FP16 = FloatAccumulator(5, 10)


@pytest.mark.parametrize(
    "value, rounding, expected",
    [
        # fp16 spacing in [2048, 4096) is 2: 2049 is halfway between 2048 and 2050.
        (Fraction(2049), "nearest_even", Fraction(2048)),
        (Fraction(2049), "nearest_away", Fraction(2050)),
        (Fraction(2051), "nearest_even", Fraction(2052)),
        (Fraction(2051), "toward_zero", Fraction(2050)),
        (Fraction(-2051), "toward_zero", Fraction(-2050)),
        # Smallest fp16 subnormal 2**-24: half of it ties to the even 0, a bit more rounds up.
        (Fraction(1, 2**25), "nearest_even", 0.0),
        (Fraction(3, 2**26), "nearest_even", Fraction(1, 2**24)),
        (Fraction(1, 2**25), "nearest_away", Fraction(1, 2**24)),
    ],
)
def test_reference_rounding_hand_cases(value, rounding, expected):
    register = FloatAccumulator(5, 10, rounding)
    got, overflowed = round_to_register(value, register)
    assert got == expected
    assert not overflowed


def test_reference_rounding_overflow_rules():
    # fp16 max 65504; 65520 is halfway to 65536 = 2**16, which overflows.
    assert round_to_register(Fraction(65519), FP16) == (Fraction(65504), False)
    assert round_to_register(Fraction(65520), FP16) == (INF, True)
    assert round_to_register(Fraction(-70000), FloatAccumulator(5, 10, "toward_zero")) == (Fraction(-65504), True)
    assert round_to_register(Fraction(70000), FloatAccumulator(5, 10, overflow="saturate")) == (Fraction(65504), True)


def test_reference_zero_signs():
    assert negative(add(-0.0, -0.0))
    assert not negative(add(-0.0, 0.0))
    assert not negative(add(Fraction(3), Fraction(-3)))
    assert negative(mul(-0.0, Fraction(2)))
    assert is_nan(mul(INF, 0.0))
    assert is_nan(add(INF, -INF))
    value, _ = round_to_register(Fraction(-1, 2**30), FP16)
    assert is_zero(value)
    assert negative(value)


def test_reference_float_decoding_matches_spec_tables():
    # E4M3: 0x7E = 448 (max), 0x01 = 2**-9 (min subnormal), 0x7F = NaN (OCP 8-bit FP spec).
    e4m3 = FloatFormat(4, 3, 7, "fn")
    assert float_code_value(e4m3, 0x7E) == 448
    assert float_code_value(e4m3, 0x01) == Fraction(1, 512)
    assert is_nan(float_code_value(e4m3, 0x7F))
    assert negative(float_code_value(e4m3, 0x80))
    # E8M0: 2**(code - 127), 0xFF NaN (OCP MX v1.0 section 5.4).
    e8m0 = FloatFormat(8, 0, 127, "fn", signed=False, subnormals=False)
    assert float_code_value(e8m0, 127) == 1
    assert float_code_value(e8m0, 0) == Fraction(1, 2**127)
    assert is_nan(float_code_value(e8m0, 0xFF))


def test_reference_integer_wrap_and_saturate():
    int32_wrap = IntAccumulator(32, "wrap")
    int32_saturate = IntAccumulator(32, "saturate")
    assert fit_integer(2**31, int32_wrap) == (-(2**31), True)
    assert fit_integer(2**31, int32_saturate) == (2**31 - 1, True)
    assert fit_integer(-(2**31) - 1, int32_wrap) == (2**31 - 1, True)
    assert fit_integer(5, int32_wrap) == (5, False)
