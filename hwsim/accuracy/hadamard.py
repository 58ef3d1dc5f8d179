"""Hadamard matrices of the sizes transformers use, and a fast transform by their Kronecker factors.

A Hadamard matrix H of order n has entries +-1 and H H^T = n I, so H /
sqrt(n) is orthogonal. Orders built here are products of:
- 2 (Sylvester's construction, repeated);
- q + 1 for a prime q = 3 mod 4 (Paley construction I), such as 12, 20, 24, 48, 60;
- 2(q + 1) for a prime q = 1 mod 4 (Paley construction II), such as 12, 28, 36.
The Kronecker product of Hadamard matrices is one, which covers hidden sizes
like 576 = 12 x 12 x 4 and 1536 = 12 x 128 (SmolLM2-135M). Source: R. E. A. C.
Paley, "On orthogonal matrices", J. Math. Phys. 12 (1933); the same
constructions as QuaRot's `hadamard_utils` tables, generated instead of stored.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    factor = 2
    while factor * factor <= n:
        if n % factor == 0:
            return False
        factor += 1
    return True


def _jacobsthal(q: int) -> np.ndarray:
    """Q[i, j] = chi(j - i), the quadratic character modulo the prime q."""
    residues = {(i * i) % q for i in range(1, q)}
    chi = np.array([0] + [1 if a in residues else -1 for a in range(1, q)], dtype=np.int64)
    index = (np.arange(q)[None, :] - np.arange(q)[:, None]) % q
    return chi[index]


def _paley_one(q: int) -> np.ndarray:
    """Order q + 1 for a prime q = 3 mod 4: H = I + S with S = [[0, 1^T], [-1, Q]] skew-symmetric."""
    n = q + 1
    s = np.zeros((n, n), dtype=np.int64)
    s[0, 1:] = 1
    s[1:, 0] = -1
    s[1:, 1:] = _jacobsthal(q)
    return np.eye(n, dtype=np.int64) + s


def _paley_two(q: int) -> np.ndarray:
    """Order 2(q + 1) for a prime q = 1 mod 4, from the symmetric conference matrix C = [[0, 1^T], [1, Q]]."""
    n = q + 1
    c = np.zeros((n, n), dtype=np.int64)
    c[0, 1:] = 1
    c[1:, 0] = 1
    c[1:, 1:] = _jacobsthal(q)
    plus = np.array([[1, 1], [1, -1]], dtype=np.int64)
    minus = np.array([[1, -1], [-1, -1]], dtype=np.int64)
    return np.kron(c, plus) + np.kron(np.eye(n, dtype=np.int64), minus)


def _paley_matrix(order: int) -> np.ndarray | None:
    """Return a Paley Hadamard matrix of this order, or None when neither construction gives one."""
    if _is_prime(order - 1) and (order - 1) % 4 == 3:
        return _paley_one(order - 1)
    if order % 2 == 0 and _is_prime(order // 2 - 1) and (order // 2 - 1) % 4 == 1:
        return _paley_two(order // 2 - 1)
    return None


def _factor_matrices(n: int) -> list[np.ndarray] | None:
    """Hadamard matrices whose Kronecker product has order n, smallest Paley factors first, or None."""
    if n & (n - 1) == 0:
        return [_sylvester(n)] if n > 1 else []
    for order in range(3, n + 1):
        if n % order or order & (order - 1) == 0:
            continue
        base = _paley_matrix(order)
        if base is None:
            continue
        rest = _factor_matrices(n // order)
        if rest is not None:
            return [base, *rest]
    return None


def _sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1), dtype=np.int64)
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


@lru_cache(maxsize=None)
def hadamard_factors(n: int) -> tuple[np.ndarray, ...]:
    """+-1 Hadamard matrices whose Kronecker product has order n; ValueError when none is constructed here."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"invalid Hadamard order {n!r}: give a positive size such as 576")
    matrices = _factor_matrices(n)
    if matrices is None:
        raise ValueError(
            f"no Hadamard matrix of order {n} is built here: orders are products of powers of two, q + 1 (prime q = 3 mod 4) "
            f"and 2(q + 1) (prime q = 1 mod 4); a Hadamard matrix needs an order of 1, 2 or a multiple of 4"
        )
    factors = tuple(matrices)
    for factor in factors:
        factor.setflags(write=False)
    return factors


def hadamard_matrix(n: int) -> np.ndarray:
    """Dense orthogonal Hadamard matrix H / sqrt(n), float64."""
    dense = np.ones((1, 1), dtype=np.float64)
    for factor in hadamard_factors(n):
        dense = np.kron(dense, factor.astype(np.float64))
    return dense / np.sqrt(n)


class HadamardTransform:
    """x -> x @ (H / sqrt(n)) along the last axis, applied factor by factor instead of as a dense n x n matmul."""

    def __init__(self, n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.n = n
        self.factors = [torch.tensor(f, dtype=dtype, device=device) for f in hadamard_factors(n)]
        self.norm = float(1.0 / np.sqrt(n))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        if shape[-1] != self.n:
            raise ValueError(f"Hadamard transform of order {self.n} got a last axis of {shape[-1]}")
        y = x.reshape(-1, self.n)
        sizes = [f.shape[0] for f in self.factors]
        for position, factor in enumerate(self.factors):
            before = int(np.prod(sizes[:position], dtype=np.int64))
            after = int(np.prod(sizes[position + 1:], dtype=np.int64))
            # (x @ kron(A, B, C))[.., i, j, k] contracts each index with its own factor.
            factor = factor.to(y.dtype)
            if after == 1:
                y = y.reshape(-1, before, sizes[position]) @ factor
            else:
                y = torch.matmul(factor.T, y.reshape(-1, before, sizes[position], after))
        return (y.reshape(shape) * self.norm).to(x.dtype)
