"""Slow, obviously correct references for element encoding, and the table that runs them against the kernels.

The references use nothing of hwsim's kernels. They read only the primitive
fields of a spec: sign, exponent and mantissa bits, bias and special-value
policy for floats, bits and fraction bits for integers, levels for
codebooks. From those they list every finite value of the format, pick the
nearest one with the tie rule of the rounding mode, and then apply the
overflow rules:

- a float rounds on the grid of its non-negative values extended by one step
  past the max normal (the next value an unbounded exponent would give);
  rounding onto that extra step is an overflow, as in IEEE 754 section 7.4;
- overflow saturates to the max normal when asked, and always for formats
  without Inf or NaN and for toward-zero rounding of a finite input (IEEE 754
  section 7.4); otherwise it gives Inf where the format has it, else NaN;
- ties go to the neighbour whose integral significand is even. With no
  mantissa bits (E8M0) both neighbours have significand 1, and the tie goes
  to the larger one, as ml_dtypes 0.7 rounds E8M0;
- an integer rounds on the unbounded integer grid and then saturates to its
  code range; a codebook rounds to its levels, ties to the even index.

`reference_code` is the scalar reference, exact through `fractions.Fraction`;
`reference_codes` is the same rule vectorised with numpy, for 2**16 inputs.
Other test files import both.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import ml_dtypes
import numpy as np
import pytest

import hwsim
from hwsim.formats import CodebookFormat, Encoded, FloatFormat, IntFormat, get, names

NEAREST_AND_TRUNCATING = ("nearest_even", "nearest_away", "toward_zero")

# The inputs go past the float32 and float16 ranges on purpose, and NaN
# payloads pass through casts, so numpy's cast warnings are expected here.
pytestmark = pytest.mark.filterwarnings(
    "ignore:overflow encountered in cast:RuntimeWarning",
    "ignore:invalid value encountered in cast:RuntimeWarning",
)


# ----------------------------------------------------------------------------
# Values of codes, from the field definitions.


def float_field_value(fmt: FloatFormat, code: int) -> float:
    """Value of one code from its sign, exponent and mantissa fields."""
    exponent_bits, mantissa_bits = fmt.exponent_bits, fmt.mantissa_bits
    magnitude_bits = exponent_bits + mantissa_bits
    negative = fmt.signed and (code >> magnitude_bits) & 1 == 1
    magnitude = code & ((1 << magnitude_bits) - 1)
    exponent_field = magnitude >> mantissa_bits
    mantissa_field = magnitude & ((1 << mantissa_bits) - 1)
    exponent_all_ones = exponent_field == (1 << exponent_bits) - 1
    if fmt.special == "fnuz" and negative and magnitude == 0:
        return math.nan
    if fmt.special == "ieee" and exponent_all_ones:
        if mantissa_field:
            return math.nan
        return -math.inf if negative else math.inf
    if fmt.special == "fn" and magnitude == (1 << magnitude_bits) - 1:
        return math.nan
    if exponent_field == 0 and fmt.subnormals:
        value = math.ldexp(mantissa_field, 1 - fmt.bias - mantissa_bits)
    else:
        value = math.ldexp((1 << mantissa_bits) + mantissa_field, exponent_field - fmt.bias - mantissa_bits)
    return -value if negative else value


def int_range(fmt: IntFormat) -> tuple[int, int]:
    """Smallest and largest integer a code stands for, from bits, signed and restricted."""
    if not fmt.signed:
        return 0, 2**fmt.bits - 1
    return -(2 ** (fmt.bits - 1)) + int(fmt.restricted), 2 ** (fmt.bits - 1) - 1


def int_field_value(fmt: IntFormat, code: int) -> float:
    """Two's-complement (or unsigned) value of a code times 2**-frac_bits; NaN for the unused code of a restricted range."""
    integer = code - 2**fmt.bits if fmt.signed and code >= 2 ** (fmt.bits - 1) else code
    low, _ = int_range(fmt)
    if integer < low:
        return math.nan
    return math.ldexp(integer, -fmt.frac_bits)


def field_value(fmt, code: int) -> float:
    """Value of a code of any element format, from the spec's fields."""
    if isinstance(fmt, FloatFormat):
        return float_field_value(fmt, code)
    if isinstance(fmt, IntFormat):
        return int_field_value(fmt, code)
    return float(fmt.levels[code]) if code < len(fmt.levels) else math.nan


def canonical_nan_code(fmt: FloatFormat, negative: bool) -> int:
    """NaN code an encoder writes: the quiet NaN of IEEE 754-2008 6.2.1 (top mantissa bit set), else the format's one NaN."""
    magnitude_bits = fmt.exponent_bits + fmt.mantissa_bits
    sign_bit = 1 << magnitude_bits if fmt.signed else 0
    if fmt.special == "fnuz":
        return sign_bit
    if fmt.special == "fn":
        nan = (1 << magnitude_bits) - 1
    else:
        quiet_bit = 1 << (fmt.mantissa_bits - 1) if fmt.mantissa_bits else 0
        nan = (((1 << fmt.exponent_bits) - 1) << fmt.mantissa_bits) | quiet_bit
    return nan | (sign_bit if negative else 0)


def inf_code(fmt: FloatFormat) -> int:
    return ((1 << fmt.exponent_bits) - 1) << fmt.mantissa_bits


# ----------------------------------------------------------------------------
# The grid of non-negative finite values of a float format.


@dataclass(frozen=True)
class FloatGrid:
    """Non-negative finite values of a float format, ascending, with their magnitude codes.

    `values` ends with one extra step past the max normal, whose code is -1
    and means overflow. `even[i]` is True when values[i] has an even
    integral significand (zero counts as even).
    """

    values: tuple[float, ...]
    codes: tuple[int, ...]
    even: tuple[bool, ...]


@lru_cache(maxsize=None)
def float_grid(fmt: FloatFormat) -> FloatGrid:
    magnitude_bits = fmt.exponent_bits + fmt.mantissa_bits
    pairs = sorted(
        (value, code)
        for code in range(2**magnitude_bits)
        if math.isfinite(value := float_field_value(fmt, code)) and value >= 0
    )
    max_normal = pairs[-1][0]
    emin = 1 - fmt.bias if fmt.subnormals else -fmt.bias
    step_at_max = math.ldexp(1.0, math.frexp(max_normal)[1] - 1 - fmt.mantissa_bits)
    values = [value for value, _ in pairs] + [max_normal + step_at_max]
    codes = [code for _, code in pairs] + [-1]

    def significand_is_even(value: float) -> bool:
        if value == 0:
            return True
        exponent = max(math.frexp(value)[1] - 1, emin)
        significand = Fraction(value) / Fraction(2) ** (exponent - fmt.mantissa_bits)
        assert significand.denominator == 1
        return significand.numerator % 2 == 0

    return FloatGrid(tuple(values), tuple(codes), tuple(significand_is_even(v) for v in values))


def _pick(x: Fraction, low: Fraction, high: Fraction, mode: str, low_even: bool) -> bool:
    """True to take `high`, False to take `low`, for low < x < high."""
    if mode == "toward_zero":
        return abs(high) < abs(low)
    below, above = x - low, high - x
    if below != above:
        return above < below
    if mode == "nearest_away":
        return abs(high) >= abs(low)
    # Tie to even; when `low` is odd, `high` is even, or both are odd (no
    # mantissa bits) and the larger one wins.
    return not low_even


# ----------------------------------------------------------------------------
# Scalar reference.


def reference_float_code(fmt: FloatFormat, x: float, mode: str, saturate: bool, nan_to_zero: bool = False) -> int | None:
    """Code of x in a float format; None for a NaN into a format without NaN."""
    magnitude_bits = fmt.exponent_bits + fmt.mantissa_bits
    sign_bit = 1 << magnitude_bits if fmt.signed else 0
    negative = math.copysign(1.0, x) < 0
    if math.isnan(x):
        if fmt.special != "none":
            return canonical_nan_code(fmt, negative)
        if nan_to_zero:
            return 0 if negative else sign_bit  # ml_dtypes: NaN becomes the zero of opposite sign
        return None
    if negative and not fmt.signed and x != 0:
        return canonical_nan_code(fmt, False)  # unsigned formats have no negative numbers

    grid = float_grid(fmt)
    magnitude = abs(x)
    overflow = math.isinf(magnitude)
    code = -1
    if not overflow:
        i = bisect.bisect_right(grid.values, magnitude) - 1
        if i < 0:
            code = grid.codes[0]  # below the smallest value of a format without zero (E8M0)
        elif grid.values[i] == magnitude:
            code = grid.codes[i]
        elif i == len(grid.values) - 1:
            overflow = True
        else:
            up = _pick(Fraction(magnitude), Fraction(grid.values[i]), Fraction(grid.values[i + 1]), mode, grid.even[i])
            code = grid.codes[i + 1] if up else grid.codes[i]
        overflow = overflow or code == -1

    max_code = grid.codes[-2]
    if overflow:
        finite_toward_zero = mode == "toward_zero" and not math.isinf(x)
        if saturate or fmt.special == "none" or finite_toward_zero:
            code = max_code
        elif fmt.special == "ieee":
            code = inf_code(fmt)
        else:
            return canonical_nan_code(fmt, negative)
    if negative and fmt.signed:
        if code == 0 and fmt.special == "fnuz":
            return 0  # fnuz has no negative zero
        return code | sign_bit
    return code


def reference_int_code(fmt: IntFormat, x: float, mode: str, nan_to_zero: bool = False) -> int | None:
    low, high = int_range(fmt)
    if math.isnan(x):
        return 0 if nan_to_zero else None
    if math.isinf(x):
        integer = high if x > 0 else low
    else:
        scaled = Fraction(x) * 2**fmt.frac_bits
        floor = math.floor(scaled)
        if scaled == floor:
            integer = floor
        else:
            up = _pick(scaled, Fraction(floor), Fraction(floor + 1), mode, floor % 2 == 0)
            integer = floor + 1 if up else floor
        integer = min(max(integer, low), high)
    return integer % 2**fmt.bits


def reference_codebook_code(fmt: CodebookFormat, x: float, mode: str, nan_to_zero: bool = False) -> int | None:
    levels = fmt.levels
    if math.isnan(x):
        if not nan_to_zero:
            return None
        x = 0.0
    if x <= levels[0]:
        return 0
    if x >= levels[-1]:
        return len(levels) - 1
    i = bisect.bisect_right(levels, x) - 1
    if levels[i] == x:
        return i
    up = _pick(Fraction(x), Fraction(levels[i]), Fraction(levels[i + 1]), mode, i % 2 == 0)
    return i + 1 if up else i


def reference_code(fmt, x: float, mode: str = "nearest_even", saturate: bool = False, nan_to_zero: bool = False) -> int | None:
    """Code of one value in any element format of 16 bits or fewer, by the rules in the module docstring."""
    if isinstance(fmt, FloatFormat):
        return reference_float_code(fmt, x, mode, saturate, nan_to_zero)
    if isinstance(fmt, IntFormat):
        return reference_int_code(fmt, x, mode, nan_to_zero)
    return reference_codebook_code(fmt, x, mode, nan_to_zero)


# ----------------------------------------------------------------------------
# Vectorised reference: the same rules on a numpy array, for 2**16 inputs.
# Midpoints of neighbouring values are exact in float64 for every format of
# 16 bits or fewer, so comparing x with the midpoint decides ties exactly.


def _round_on_sorted(x: np.ndarray, values: np.ndarray, even: np.ndarray, mode: str) -> np.ndarray:
    """Index into ascending `values` that each x (inside the range values[0] .. values[-1]) rounds to."""
    i = np.clip(np.searchsorted(values, x, side="right") - 1, 0, len(values) - 2)
    low, high = values[i], values[i + 1]
    if mode == "toward_zero":
        up = np.abs(high) < np.abs(low)
    else:
        middle = (low + high) / 2
        if mode == "nearest_away":
            tie_up = np.abs(high) >= np.abs(low)
        else:
            tie_up = ~even[i]
        up = (x > middle) | ((x == middle) & tie_up)
    j = np.where(up, i + 1, i)
    j = np.where(x == high, i + 1, j)
    return np.where(x == low, i, j)


def reference_codes(fmt, x: np.ndarray, mode: str = "nearest_even", saturate: bool = False, nan_to_zero: bool = False) -> np.ndarray:
    """Codes of a float64 array; -1 marks a NaN that has no code."""
    x = np.asarray(x, dtype=np.float64)
    nan = np.isnan(x)
    if isinstance(fmt, IntFormat):
        low, high = int_range(fmt)
        scaled = np.where(nan, 0.0, np.ldexp(x, fmt.frac_bits))
        clipped = np.clip(scaled, low - 1, high + 1)
        floor = np.floor(clipped)
        if mode == "toward_zero":
            integer = np.trunc(clipped)
        else:
            middle = floor + 0.5  # exact, unlike clipped - floor
            tie_up = np.mod(floor, 2) == 1 if mode == "nearest_even" else floor >= 0
            integer = floor + ((clipped > middle) | ((clipped == middle) & tie_up))
        integer = np.clip(integer, low, high).astype(np.int64)
        codes = np.mod(integer, 2**fmt.bits)
        return np.where(nan, 0 if nan_to_zero else -1, codes)
    if isinstance(fmt, CodebookFormat):
        levels = np.asarray(fmt.levels, dtype=np.float64)
        even = np.arange(len(levels)) % 2 == 0
        v = np.where(nan, 0.0, x)
        inside = np.clip(v, levels[0], levels[-1])
        codes = _round_on_sorted(inside, levels, even, mode)
        return np.where(nan & (not nan_to_zero), -1, codes)

    grid = float_grid(fmt)
    values = np.array(grid.values)
    grid_codes = np.array(grid.codes)
    magnitude_bits = fmt.exponent_bits + fmt.mantissa_bits
    sign_bit = 1 << magnitude_bits if fmt.signed else 0
    negative = np.signbit(x)
    magnitude = np.abs(np.where(nan, 0.0, x))
    infinite = np.isinf(magnitude)
    inside = np.clip(magnitude, values[0], values[-1])
    index = _round_on_sorted(inside, values, np.array(grid.even), mode)
    code = grid_codes[index]
    overflow = infinite | (code == -1)
    max_code = grid.codes[-2]
    saturating = saturate or fmt.special == "none"
    to_max = overflow & (saturating | ((mode == "toward_zero") & ~infinite))
    code = np.where(to_max, max_code, code)
    special_overflow = overflow & ~to_max
    if fmt.special == "ieee":
        code = np.where(special_overflow, inf_code(fmt), code)
        special_nan = np.zeros_like(nan)
    else:
        special_nan = special_overflow
    signed_code = code | np.where(negative, sign_bit, 0)
    if fmt.special == "fnuz":
        signed_code = np.where(code == 0, 0, signed_code)
    result = signed_code
    nan_positive = canonical_nan_code(fmt, False) if fmt.special != "none" else -1
    nan_negative = canonical_nan_code(fmt, True) if fmt.special != "none" else -1
    result = np.where(special_nan, np.where(negative, nan_negative, nan_positive), result)
    if not fmt.signed:
        result = np.where(negative & (x != 0) & ~nan, nan_positive, result)
    if fmt.special == "none":
        nan_result = np.where(negative, 0, sign_bit) if nan_to_zero else -1
    else:
        nan_result = np.where(negative, nan_negative, nan_positive)
    return np.where(nan, nan_result, result).astype(np.int64)


# ----------------------------------------------------------------------------
# The formats and inputs the table runs over.


def element_formats() -> dict[str, object]:
    """Every registered element format of 16 bits or fewer, and the elements of registered scaled formats."""
    found = {}
    for name in names():
        fmt = get(name)
        if fmt.kind in ("int", "float", "codebook") and fmt.width <= 16:
            found[name] = fmt
        element = getattr(fmt, "element", None)
        if fmt.kind == "scaled" and element.width <= 16 and element.name and element.name not in found:
            found[element.name] = element
    return found


ELEMENT_FORMATS = element_formats()
FLOAT_FORMATS = {n: f for n, f in ELEMENT_FORMATS.items() if isinstance(f, FloatFormat)}


def format_values(fmt) -> np.ndarray:
    """Every finite value of a format, both signs, ascending and unique."""
    if isinstance(fmt, FloatFormat):
        magnitudes = np.array(float_grid(fmt).values[:-1])
        return np.unique(np.concatenate([magnitudes, -magnitudes]) if fmt.signed else magnitudes)
    if isinstance(fmt, IntFormat):
        low, high = int_range(fmt)
        return np.ldexp(np.arange(low, high + 1, dtype=np.float64), -fmt.frac_bits)
    return np.asarray(fmt.levels, dtype=np.float64)


def adversarial_inputs(fmt, rng: np.random.Generator, max_values: int = 600) -> np.ndarray:
    """Values, exact midpoints, neighbours of both, range ends, subnormal edges, zeros, infinities; float64."""
    values = format_values(fmt)
    if values.size > max_values:
        values = np.unique(np.concatenate([values[:32], values[-32:], rng.choice(values, max_values, replace=False)]))
    midpoints = (values[:-1] + values[1:]) / 2
    points = [values, midpoints]
    if isinstance(fmt, FloatFormat):
        grid = float_grid(fmt)
        max_normal, past_max = grid.values[-2], grid.values[-1]
        smallest = [v for v in grid.values if v > 0][0]
        edges = np.array([
            smallest / 2, smallest * 1.5, smallest / 4,
            fmt.min_normal - smallest / 2, fmt.min_normal,
            (max_normal + past_max) / 2, past_max, 2 * past_max, 1e30, 1e300,
        ])
        points += [edges, -edges]
    else:
        span = max(abs(values[0]), abs(values[-1]))
        points.append(np.array([values[0] - 0.5, values[-1] + 0.5, 2 * span, -2 * span, 1e30, -1e30]))
    base = np.concatenate(points)
    neighbours = np.concatenate([np.nextafter(base, np.inf), np.nextafter(base, -np.inf)])
    span = float(np.max(np.abs(values)))
    random = rng.choice([-1.0, 1.0], 256) * np.exp2(rng.uniform(-12, math.log2(span) + 2, 256))
    specials = np.array([0.0, -0.0, np.inf, -np.inf])
    return np.concatenate([base, neighbours, random, specials])


def encode_codes(x: np.ndarray, fmt, mode: str, saturate: bool, nan_to_zero: bool = False) -> np.ndarray:
    return hwsim.encode(x, fmt, rounding=mode, saturate=saturate, nan_to_zero=nan_to_zero).codes.astype(np.int64)


def decode_codes(fmt, codes: np.ndarray) -> np.ndarray:
    """hwsim.decode of raw element codes, as float64."""
    encoded = Encoded(fmt=fmt, shape=codes.shape, axis=-1, codes=codes.astype(np.uint8 if fmt.width <= 8 else np.uint16))
    return hwsim.decode(encoded, np.float64)


def saturate_options(fmt) -> list[bool]:
    return [False, True] if isinstance(fmt, FloatFormat) else [True]


TABLE = [
    pytest.param(name, mode, saturate, id=f"{name}-{mode}-{'sat' if saturate else 'nosat'}")
    for name, fmt in ELEMENT_FORMATS.items()
    for mode in NEAREST_AND_TRUNCATING
    for saturate in saturate_options(fmt)
]


# ----------------------------------------------------------------------------
# The table: the scalar reference against the kernels.


@pytest.mark.parametrize("input_dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, mode, saturate", TABLE)
def test_scalar_reference_matches_kernels(name, mode, saturate, input_dtype):
    fmt = ELEMENT_FORMATS[name]
    rng = np.random.default_rng(20240601)
    x = adversarial_inputs(fmt, rng).astype(input_dtype)
    expected = np.array([reference_code(fmt, float(v), mode, saturate) for v in x], dtype=np.int64)
    codes = encode_codes(x, fmt, mode, saturate)
    wrong = np.nonzero(codes != expected)[0]
    assert wrong.size == 0, f"{name}: {x[wrong[:5]]} encode to {codes[wrong[:5]]}, reference {expected[wrong[:5]]}"


@pytest.mark.parametrize("name, mode, saturate", TABLE)
def test_qdq_matches_reference_values(name, mode, saturate):
    fmt = ELEMENT_FORMATS[name]
    x = adversarial_inputs(fmt, np.random.default_rng(7)).astype(np.float32)
    expected = np.array([field_value(fmt, reference_code(fmt, float(v), mode, saturate)) for v in x])
    values = hwsim.qdq(x, fmt, rounding=mode, saturate=saturate).astype(np.float64)
    np.testing.assert_array_equal(values, expected.astype(np.float32).astype(np.float64))


@pytest.mark.parametrize("name, mode, saturate", TABLE)
def test_vectorised_reference_matches_scalar(name, mode, saturate):
    fmt = ELEMENT_FORMATS[name]
    x = adversarial_inputs(fmt, np.random.default_rng(11))
    scalar = np.array([reference_code(fmt, float(v), mode, saturate) for v in x], dtype=np.int64)
    np.testing.assert_array_equal(reference_codes(fmt, x, mode, saturate), scalar)


def all_16_bit_patterns() -> dict[str, np.ndarray]:
    """Every fp16 and every bf16 bit pattern, widened exactly to float32."""
    patterns = np.arange(2**16, dtype=np.uint16)
    return {
        "fp16": patterns.view(np.float16).astype(np.float32),
        "bf16": patterns.view(ml_dtypes.bfloat16).astype(np.float32),
    }


SIXTEEN_BIT_INPUTS = all_16_bit_patterns()


@pytest.mark.parametrize("source", ["fp16", "bf16"])
@pytest.mark.parametrize("name, mode, saturate", TABLE)
def test_every_16_bit_input_matches_reference(name, mode, saturate, source):
    fmt = ELEMENT_FORMATS[name]
    x = SIXTEEN_BIT_INPUTS[source]
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    expected = reference_codes(fmt, x, mode, saturate)
    codes = encode_codes(x, fmt, mode, saturate)
    wrong = np.nonzero(codes != expected)[0]
    assert wrong.size == 0, f"{name} from {source}: {x[wrong[:5]]} encode to {codes[wrong[:5]]}, reference {expected[wrong[:5]]}"


@pytest.mark.parametrize("name", [n for n, f in ELEMENT_FORMATS.items() if not f.has_nan])
def test_nan_to_zero_matches_reference(name):
    fmt = ELEMENT_FORMATS[name]
    x = np.array([np.nan, -np.nan, 1.0, np.nan], dtype=np.float32)
    x[1] = np.copysign(np.nan, -1.0)
    expected = np.array([reference_code(fmt, float(v), "nearest_even", True, nan_to_zero=True) for v in x])
    codes = encode_codes(x, fmt, "nearest_even", True, nan_to_zero=True)
    np.testing.assert_array_equal(codes, expected)


@pytest.mark.parametrize("name", [n for n, f in ELEMENT_FORMATS.items() if not f.has_nan])
def test_nan_to_zero_qdq_matches_decode(name):
    fmt = ELEMENT_FORMATS[name]
    x = np.array([np.nan, 0.5, -np.nan], dtype=np.float32)
    encoded = hwsim.encode(x, fmt, nan_to_zero=True)
    np.testing.assert_array_equal(hwsim.qdq(x, fmt, nan_to_zero=True), hwsim.decode(encoded))
