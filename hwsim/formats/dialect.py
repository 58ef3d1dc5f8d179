"""BlockDialect: blocks that each pick one FP4 variant (a *dialect*) from a book.

Source: W. Jang and T. Tambe, "BlockDialect: Block-wise Fine-grained Mixed
Format Quantization for Energy-Efficient LLM Inference", ICML 2025,
arXiv:2501.01144. Its abstract states the scheme: a formatbook of FP4
variants (DialectFP4), one dialect per block, representable values that are
scaled integers, and a two-stage online dialect selection for activations.

The book (`DIALECTFP4_BOOK`). Every dialect has eight magnitudes on a 0.5
grid, so a magnitude is a 4-bit unsigned integer (0 to 15) times 0.5. All
dialects share 0, 0.5, 1, 1.5, 2 and 3. Dialects 2k and 2k+1 form a pair with
one maximum: 7.5, 7, 6.5, 6, 5.5, 5, 4.5 and 4 for k = 0 to 7. In pairs 0 to 6
the two differ in the second largest magnitude, which is larger in the even
dialect. In the last pair, dialect 14 adds 3.5 and dialect 15 adds 2.5.
Dialect 7 has the values of FP4 E2M1. A block stores its 4-bit dialect index.

NOTE: the magnitudes are a reconstruction. They come from a third-party
transcription of the paper's Figure 4 (arXiv v5) in the public repository
BigBoySanchez/VexRiscv, scripts/blockdialect_codec.py, and were not checked
against the paper itself. The count of 16 and the 0.5 grid agree with a
published summary of the paper (chatpaper.com/paper/167727).

Encoding one block of `block_size` elements (a short last block is encoded
as if padded with zeros):

1. Shared exponent s = floor(log2(amax)) - 2, the OCP MX rule with the
   element emax floor(log2(7.5)) = 2, stored in E8M0 (clamped to its range).
   Scaled magnitudes |x| / 2**s then lie in [0, 8), with the block max in [4, 8).
2. Stage 1 picks the dialect maximum nearest the scaled block max, and a tie
   goes to the larger maximum. The dialects with that maximum (a pair in this
   book) are the candidates.
3. Stage 2 counts, for each candidate, the elements that it alone rounds with
   the smallest error (its *beneficial range*, from the candidates' midpoints).
   The candidate with the highest count wins, and equal counts go to the
   lower index. Selection always uses round-to-nearest, whatever the rounding mode.
4. Each element rounds to the chosen dialect in the requested rounding mode.

NOTE: steps 1 to 3 are a reconstruction, after the same repository's account
of the paper's section 3.2. By that account the shared exponent is
floor(log2(amax)) - 2, stage 1 picks the pair from the block max, and stage 2
counts elements in each dialect's beneficial range, such as [4.5, 5.75) for
the pair with maximum 6.5. The tie rules are ours. That account also says the paper first rounds scaled
magnitudes to a 5-bit intermediate with 0.25 steps, whereas this kernel
rounds each element once, directly to the dialect.

Codes are level indices of each dialect's `CodebookFormat`: 15 sorted signed
levels, code 7 is zero and code 15 is unused. The third-party account
stores a sign bit and a 3-bit magnitude index instead, which is a
relabelling of the same values. Nearest-even breaks a tie toward the even level index, as for every
codebook format. Stochastic rounding uses 32 random bits per element, keyed
by the seed and the element's flat index in the (rows, length) layout, as
the MX kernel does. Overflow always saturates, because dialects have no Inf
or NaN. A block containing NaN or Inf gets the E8M0 NaN code 0xFF, dialect 0
and the zero code, and decodes to NaN (OCP MX v1.0, section 6.3). An all-zero
block gets E8M0 code 0 and decodes to zeros.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from numba import njit, prange

from hwsim.formats.block_kernels import RULE_OCP, shared_exponent
from hwsim.formats.decoding import code_values
from hwsim.formats.kernels import NEAREST_EVEN, STOCHASTIC, codebook_code, random_bits
from hwsim.formats.params import code_dtype, values_table
from hwsim.formats.spec import CodebookFormat, DialectFormat

# DialectFP4 magnitudes in halves (value = halves / 2), one row per dialect.
DIALECTFP4_HALVES = (
    (0, 1, 2, 3, 4, 6, 11, 15),  # 0: ..., 3, 5.5, 7.5
    (0, 1, 2, 3, 4, 6, 9, 15),  # 1: ..., 3, 4.5, 7.5
    (0, 1, 2, 3, 4, 6, 11, 14),  # 2: ..., 3, 5.5, 7
    (0, 1, 2, 3, 4, 6, 9, 14),  # 3: ..., 3, 4.5, 7
    (0, 1, 2, 3, 4, 6, 10, 13),  # 4: ..., 3, 5, 6.5
    (0, 1, 2, 3, 4, 6, 8, 13),  # 5: ..., 3, 4, 6.5
    (0, 1, 2, 3, 4, 6, 10, 12),  # 6: ..., 3, 5, 6
    (0, 1, 2, 3, 4, 6, 8, 12),  # 7: ..., 3, 4, 6 (FP4 E2M1)
    (0, 1, 2, 3, 4, 6, 9, 11),  # 8: ..., 3, 4.5, 5.5
    (0, 1, 2, 3, 4, 6, 7, 11),  # 9: ..., 3, 3.5, 5.5
    (0, 1, 2, 3, 4, 6, 9, 10),  # 10: ..., 3, 4.5, 5
    (0, 1, 2, 3, 4, 6, 7, 10),  # 11: ..., 3, 3.5, 5
    (0, 1, 2, 3, 4, 6, 8, 9),  # 12: ..., 3, 4, 4.5
    (0, 1, 2, 3, 4, 6, 7, 9),  # 13: ..., 3, 3.5, 4.5
    (0, 1, 2, 3, 4, 6, 7, 8),  # 14: ..., 3, 3.5, 4
    (0, 1, 2, 3, 4, 5, 6, 8),  # 15: ..., 2.5, 3, 4
)


def dialect_from_halves(halves: tuple[int, ...], name: str) -> CodebookFormat:
    """Signed codebook with the magnitudes halves / 2 and their negatives (one zero)."""
    magnitudes = sorted({h / 2 for h in halves})
    levels = tuple(-m for m in reversed(magnitudes) if m != 0) + tuple(magnitudes)
    return CodebookFormat(levels, name=name)


DIALECTFP4_BOOK = tuple(dialect_from_halves(halves, f"dialectfp4_d{index}") for index, halves in enumerate(DIALECTFP4_HALVES))


@njit(cache=True, inline="always")
def _nearest_error(v, levels):
    """Distance from v to the nearest level of one dialect."""
    code = codebook_code(v, levels, NEAREST_EVEN, np.int64(0))
    return abs(v - levels[code])


@njit(cache=True, inline="always")
def select_dialect(x2, r, start, stop, block, s, scaled_max, book, n_levels, dialect_max):
    """Dialect index of one block by the two-stage rule of the module docstring.

    scaled_max is the block's largest finite magnitude times 2**-s.
    """
    n_dialects = book.shape[0]
    # Stage 1: the dialect maximum nearest the scaled block max, ties to the larger.
    target = dialect_max[0]
    best_distance = abs(scaled_max - target)
    for d in range(1, n_dialects):
        distance = abs(scaled_max - dialect_max[d])
        if distance < best_distance or (distance == best_distance and dialect_max[d] > target):
            target = dialect_max[d]
            best_distance = distance
    candidates = 0
    first = -1
    for d in range(n_dialects):
        if dialect_max[d] == target:
            candidates += 1
            if first < 0:
                first = d
    if candidates == 1:
        return first

    # Stage 2: count the elements that exactly one candidate rounds best.
    wins = np.zeros(n_dialects, np.int64)
    for i in range(start, start + block):
        v = math.ldexp(np.float64(x2[r, i]), -s) if i < stop else 0.0
        best = -1
        best_error = 0.0
        unique = False
        for d in range(n_dialects):
            if dialect_max[d] != target:
                continue
            error = _nearest_error(v, book[d, : n_levels[d]])
            if best < 0 or error < best_error:
                best = d
                best_error = error
                unique = True
            elif error == best_error:
                unique = False
        if unique:
            wins[best] += 1
    chosen = first
    for d in range(first + 1, n_dialects):
        if dialect_max[d] == target and wins[d] > wins[chosen]:
            chosen = d
    return chosen


@njit(cache=True, parallel=True)
def encode_dialect_blocks(
    x2, block, book, n_levels, dialect_max, zero_codes, elem_emax, elem_max,
    scale_emin, scale_emax, scale_nan_code, mode, seed, codes2, scale_codes, dialects, out2,
):
    """Encode rows of x2 into blocks that each pick a dialect from `book`.

    book: (dialects, max levels) float64, row d contains dialect d's sorted levels
    in its first n_levels[d] entries. zero_codes[d] is dialect d's code for 0.
    Writes codes (skipped when codes2 has no rows), scale codes, dialect indices
    and decoded values (skipped when out2 has no rows). Returns the count of
    blocks holding NaN or Inf.
    """
    rows, length = x2.shape
    n_blocks = (length + block - 1) // block
    write_codes = codes2.shape[0] == rows
    write_values = out2.shape[0] == rows
    nan_blocks = np.zeros(rows * n_blocks, np.int64)
    for t in prange(rows * n_blocks):
        r = t // n_blocks
        j = t - r * n_blocks
        start = j * block
        stop = min(start + block, length)
        amax = 0.0
        special = False
        for i in range(start, stop):
            v = abs(np.float64(x2[r, i]))
            if math.isnan(v) or math.isinf(v):
                special = True
            elif v > amax:
                amax = v
        if special:
            nan_blocks[t] = 1
            scale_codes[r, j] = scale_nan_code
            dialects[r, j] = 0
            if write_codes:
                for i in range(start, start + block):
                    codes2[r, i] = zero_codes[0]
            if write_values:
                for i in range(start, stop):
                    out2[r, i] = np.nan
            continue

        if amax == 0.0:
            s = scale_emin
        else:
            s = shared_exponent(amax, RULE_OCP, elem_emax, elem_max, scale_emin, scale_emax)
        d = select_dialect(x2, r, start, stop, block, s, math.ldexp(amax, -s), book, n_levels, dialect_max)
        scale_codes[r, j] = s - scale_emin
        dialects[r, j] = d
        levels = book[d, : n_levels[d]]
        for i in range(start, stop):
            rbits = random_bits(seed, r * length + i) if mode == STOCHASTIC else np.int64(0)
            code = codebook_code(math.ldexp(np.float64(x2[r, i]), -s), levels, mode, rbits)
            if write_codes:
                codes2[r, i] = code
            if write_values:
                out2[r, i] = math.ldexp(levels[code], s)
        if write_codes:
            for i in range(stop, start + block):
                codes2[r, i] = zero_codes[d]
    return nan_blocks.sum()


@lru_cache(maxsize=None)
def book_arrays(fmt: DialectFormat) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(levels, level counts, max magnitudes, zero codes) of a book, read-only, as the kernel takes them."""
    n_dialects = len(fmt.dialects)
    width = max(len(d.levels) for d in fmt.dialects)
    levels = np.zeros((n_dialects, width), np.float64)
    n_levels = np.zeros(n_dialects, np.int64)
    dialect_max = np.zeros(n_dialects, np.float64)
    zero_codes = np.zeros(n_dialects, np.int64)
    for index, dialect in enumerate(fmt.dialects):
        row = np.asarray(dialect.levels, np.float64)
        levels[index, : row.size] = row
        n_levels[index] = row.size
        dialect_max[index] = dialect.max_normal
        # Padding and NaN blocks store the code nearest zero (zero itself in DialectFP4).
        zero_codes[index] = int(np.argmin(np.abs(row)))
    for array in (levels, n_levels, dialect_max, zero_codes):
        array.setflags(write=False)
    return levels, n_levels, dialect_max, zero_codes


def _check_scale(fmt: DialectFormat) -> None:
    scale = fmt.scale
    if scale.mantissa_bits != 0 or scale.signed or scale.subnormals:
        raise ValueError(
            f"invalid dialect format {fmt.name}: the shared exponent is stored as code = exponent + bias, which needs an "
            f"E8M0-like scale (unsigned, no mantissa bits, subnormals=False), got {scale.name or scale}"
        )


def run_dialect(array, fmt: DialectFormat, axis, mode, saturate, seed, want_codes, want_values):
    """Encode and/or qdq `array` along `axis`, returning (values, Encoded) as `run_scaled` does.

    `saturate` has no effect: dialect elements have no Inf or NaN, so overflow saturates.
    """
    from hwsim.formats.ops import Encoded

    _check_scale(fmt)
    moved = np.moveaxis(array, axis, -1) if array.ndim else array.reshape(1)
    length = moved.shape[-1]
    lead = int(np.prod(moved.shape[:-1]))
    x2 = np.ascontiguousarray(moved).reshape(-1, length) if length else np.zeros((lead, 0), array.dtype)
    rows = x2.shape[0]
    block = int(fmt.block_size)
    n_blocks = -(-length // block) if length else 0
    padded = n_blocks * block

    levels, n_levels, dialect_max, zero_codes = book_arrays(fmt)
    scale = fmt.scale
    elem_max = fmt.max_normal
    codes2 = np.empty((rows, padded), code_dtype(fmt.width)) if want_codes else np.zeros((0, 0), np.uint8)
    out2 = np.empty((rows, length), array.dtype) if want_values else np.zeros((0, 0), array.dtype)
    scale_codes = np.empty((rows, n_blocks), code_dtype(scale.width))
    dialects = np.empty((rows, n_blocks), code_dtype(fmt.selector_bits))
    nan_blocks = encode_dialect_blocks(
        x2, block, levels, n_levels, dialect_max, zero_codes, math.floor(math.log2(elem_max)), elem_max,
        scale.emin, scale.emax, scale.nan_code, mode, seed, codes2, scale_codes, dialects, out2,
    )
    if nan_blocks and scale.nan_code < 0:
        raise ValueError(
            f"format {fmt.name}: {nan_blocks} block(s) contain NaN or Inf, and the scale format {scale.name} has no NaN code "
            f"to mark them. Use an E8M0 scale or remove the NaN and Inf values"
        )

    values = None
    if want_values:
        values = out2.reshape(moved.shape)
        values = np.moveaxis(values, -1, axis) if array.ndim else values.reshape(())
    encoded = None
    if want_codes:
        encoded = Encoded(
            fmt=fmt,
            shape=tuple(array.shape),
            axis=axis,
            codes=codes2,
            scale_codes=scale_codes,
            dialects=dialects,
            padded_elements=int(rows * (padded - length)),
            nan_groups=int(nan_blocks),
        )
        encoded.info["moved_shape"] = tuple(moved.shape)
        encoded.info["group_size"] = block
    return values, encoded


def decode_dialect(encoded, dtype: np.dtype) -> np.ndarray:
    """Values of an `Encoded` dialect format: level of (dialect, code) times 2**shared exponent, NaN for NaN blocks."""
    fmt: DialectFormat = encoded.fmt
    block = encoded.info["group_size"]
    moved_shape = encoded.info["moved_shape"]
    length = moved_shape[-1]
    rows, padded = encoded.codes.shape
    n_blocks = encoded.scale_codes.shape[1]
    tables = np.stack([values_table(d) for d in fmt.dialects])
    codes = encoded.codes.reshape(rows, n_blocks, block).astype(np.intp)
    elements = tables[encoded.dialects.astype(np.intp)[:, :, None], codes]
    # Power-of-two scales make the product exact in float64. The NaN scale code gives NaN.
    scales = code_values(fmt.scale, encoded.scale_codes)
    values = (elements * scales[:, :, None]).reshape(rows, padded)[:, :length]
    values = values.reshape(moved_shape).astype(dtype)
    if len(encoded.shape) == 0:
        return values.reshape(())
    return np.moveaxis(values, -1, encoded.axis)
