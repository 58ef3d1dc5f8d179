"""Bit packing of element codes: codes of `bits` bits laid end to end in bytes.

Codes are packed little-endian: the first code takes the least significant
bits of the first byte, and a code that does not fit in what is left of a
byte continues in the next one. So two 4-bit codes share a byte (the first
in the low nibble), and four 6-bit codes fill three bytes as the 24-bit
little-endian number c0 | c1 << 6 | c2 << 12 | c3 << 18.
"""

from __future__ import annotations

import numpy as np


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= bits <= 16:
        raise ValueError(f"invalid bits={bits!r}: codes take 1 to 16 bits")


def pack_codes(codes, bits: int) -> np.ndarray:
    """Pack unsigned codes of `bits` bits each into ceil(len * bits / 8) bytes (uint8, flattened in C order)."""
    _check_bits(bits)
    codes = np.asarray(codes)
    if codes.dtype.kind not in "ui":
        raise TypeError(f"expected integer codes, got dtype {codes.dtype}; pass Encoded.codes or another integer array")
    flat = codes.reshape(-1).astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= 2**bits):
        bad = flat[(flat < 0) | (flat >= 2**bits)][0]
        raise ValueError(f"code {bad} does not fit in {bits} bits: codes must lie in 0 to {2**bits - 1}")
    little = flat.astype("<u2").view(np.uint8).reshape(-1, 2)
    planes = np.unpackbits(little, axis=1, bitorder="little")[:, :bits]
    return np.packbits(planes.reshape(-1), bitorder="little")


def unpack_codes(packed, bits: int, count: int) -> np.ndarray:
    """Unpack `count` codes of `bits` bits each from bytes made by `pack_codes`; uint8 for 8 bits or fewer, else uint16."""
    _check_bits(bits)
    packed = np.asarray(packed, dtype=np.uint8).reshape(-1)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"invalid count={count!r}: pass the number of codes, a non-negative integer")
    needed = -(-count * bits // 8)
    if packed.size < needed:
        raise ValueError(f"{packed.size} bytes hold fewer than {count} codes of {bits} bits; {needed} bytes are needed")
    planes = np.unpackbits(packed, bitorder="little")[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 16), np.uint8)
    padded[:, :bits] = planes
    values = np.packbits(padded, axis=1, bitorder="little").view("<u2").reshape(count)
    return values.astype(np.uint8 if bits <= 8 else np.uint16)
