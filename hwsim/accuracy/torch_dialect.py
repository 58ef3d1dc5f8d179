"""qdq of dialect formats (BlockDialect) in torch operations, bit-identical to `hwsim.formats.dialect`.

Each block takes the OCP shared exponent of its amax, picks a dialect by
the two-stage rule that `hwsim.formats.dialect` documents, and rounds its
elements to that dialect's levels. The selection is vectorised over all
dialects at once. Stage 1 picks the dialect maximum nearest the scaled
block maximum (ties to the larger). Stage 2 counts, per candidate, the
elements it alone rounds with the smallest error, and keeps the candidate
with the most (ties to the lower index).
"""

from __future__ import annotations

import math

import torch

from hwsim.accuracy.torch_elements import codebook_codes, device_levels, flat_index, pow2, random_bits
from hwsim.accuracy.torch_qdq import blocks_of, from_rows, group_statistics, rows_of, shared_exponents
from hwsim.formats import kernels as k
from hwsim.formats.spec import DialectFormat


def qdq_dialect(x: torch.Tensor, fmt: DialectFormat, axis: int, mode: int, seed: int) -> torch.Tensor:
    """qdq of x (float32 or float64) along `axis` in a dialect format; overflow always saturates."""
    scale = fmt.scale
    if scale.mantissa_bits != 0 or scale.signed or scale.subnormals:
        raise ValueError(
            f"invalid dialect format {fmt.name}: the shared exponent is stored as code = exponent + bias, which needs an "
            f"E8M0-like scale (unsigned, no mantissa bits, subnormals=False), got {scale.name or scale}"
        )
    x2 = rows_of(x, axis)
    rows, length = x2.shape
    block = int(fmt.block_size)
    xb = blocks_of(x2, block)
    amax, _, _, special = group_statistics(xb, need_range=False)
    if bool(special.any()) and scale.nan_code < 0:
        raise ValueError(
            f"format {fmt.name}: {int(special.sum())} block(s) hold NaN or Inf, and the scale format {scale.name} has no NaN code "
            f"to mark them; use an E8M0 scale or remove the NaN and Inf values"
        )
    element_max = float(fmt.max_normal)
    amax64 = amax.to(torch.float64)
    s = shared_exponents(amax64, math.floor(math.log2(element_max)), element_max, scale, "ocp")
    scaled = xb.to(torch.float64) * pow2(-s)[..., None]
    chosen = _select_dialects(scaled, amax64 * pow2(-s), fmt)

    rbits = None
    if mode == k.STOCHASTIC:
        rbits = blocks_of(random_bits(seed, flat_index((rows, length), x.device)), block)
    values = torch.zeros_like(scaled)
    for index, dialect in enumerate(fmt.dialects):
        levels = device_levels(dialect, x.device)
        codes = codebook_codes(scaled, levels, mode, rbits)
        values = torch.where((chosen == index)[..., None], levels[codes], values)
    values = values * pow2(s)[..., None]
    values = torch.where(special[..., None], torch.nan, values).to(x.dtype)
    return from_rows(values.reshape(rows, -1)[:, :length], x, axis)


def _select_dialects(scaled: torch.Tensor, scaled_max: torch.Tensor, fmt: DialectFormat) -> torch.Tensor:
    """Dialect index (int64) per block of `scaled` (rows, blocks, block), elements already divided by 2**s."""
    device = scaled.device
    dialect_max = torch.tensor([float(d.max_normal) for d in fmt.dialects], dtype=torch.float64, device=device)

    # Stage 1: the dialect maximum nearest the scaled block maximum, ties to the larger maximum.
    distance = (scaled_max[..., None] - dialect_max).abs()
    nearest = distance == distance.amin(dim=-1, keepdim=True)
    target = torch.where(nearest, dialect_max, -math.inf).amax(dim=-1, keepdim=True)
    candidate = dialect_max == target  # (rows, blocks, dialects)

    # Stage 2: per element, the candidate that alone has the smallest nearest-even error wins it.
    errors = []
    for dialect in fmt.dialects:
        levels = device_levels(dialect, device)
        codes = codebook_codes(scaled, levels, k.NEAREST_EVEN, None)
        errors.append((scaled - levels[codes]).abs())
    error = torch.stack(errors, dim=-1)  # (rows, blocks, block, dialects)
    error = torch.where(candidate[..., None, :], error, math.inf)
    best = error.amin(dim=-1, keepdim=True)
    unique = (error == best).sum(dim=-1) == 1
    winner = error.argmin(dim=-1)
    wins = torch.zeros_like(candidate, dtype=torch.int64)
    wins.scatter_add_(-1, winner, unique.to(torch.int64))
    # The candidate with the most wins; torch.argmax returns the first maximum, the lower index.
    wins = torch.where(candidate, wins, -1)
    return wins.argmax(dim=-1)
