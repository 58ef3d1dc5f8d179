"""Exact fast paths: BLAS or integer sums where exactness.plan_fast_path proves no addition rounds."""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def gemm_exact_integer(a, b, a_index, b_index, tile, out):
    """out[t] = a[a_index[t]] @ b[b_index[t]] in int64 for integer codes, b as (batch, K, N).

    The caller bounds every partial sum below 2**53, so no addition wraps.
    Four rows of b are added per pass over a tile of columns, which quarters
    the loads and stores of the accumulators.
    """
    n_batch, m, n = out.shape
    k = a.shape[2]
    k4 = k - k % 4
    n_tiles = (n + tile - 1) // tile
    for task in prange(n_batch * m * n_tiles):
        t = task // (m * n_tiles)
        rest = task - t * m * n_tiles
        i = rest // n_tiles
        j0 = (rest - i * n_tiles) * tile
        width = min(tile, n - j0)
        a_row = a[a_index[t], i]
        b2 = b[b_index[t]]
        acc = np.zeros(tile, np.int64)
        for kk in range(0, k4, 4):
            a0 = np.int64(a_row[kk])
            a1 = np.int64(a_row[kk + 1])
            a2 = np.int64(a_row[kk + 2])
            a3 = np.int64(a_row[kk + 3])
            b0, b1, b2_, b3 = b2[kk], b2[kk + 1], b2[kk + 2], b2[kk + 3]
            for jj in range(width):
                j = j0 + jj
                acc[jj] += a0 * np.int64(b0[j]) + a1 * np.int64(b1[j]) + a2 * np.int64(b2_[j]) + a3 * np.int64(b3[j])
        for kk in range(k4, k):
            av = np.int64(a_row[kk])
            for jj in range(width):
                acc[jj] += av * np.int64(b2[kk, j0 + jj])
        for jj in range(width):
            out[t, i, j0 + jj] = acc[jj]


@njit(cache=True, parallel=True)
def gemm_exact_integer_rows(a, b, a_index, b_index, tile, out):
    """As gemm_exact_integer with b as (batch, N, K): each output is an int64 dot product of two rows."""
    n_batch, m, n = out.shape
    k = a.shape[2]
    n_tiles = (n + tile - 1) // tile
    for task in prange(n_batch * m * n_tiles):
        t = task // (m * n_tiles)
        rest = task - t * m * n_tiles
        i = rest // n_tiles
        j0 = (rest - i * n_tiles) * tile
        a_row = a[a_index[t], i]
        b2 = b[b_index[t]]
        for j in range(j0, min(n, j0 + tile)):
            b_row = b2[j]
            acc = np.int64(0)
            for kk in range(k):
                acc += np.int64(a_row[kk]) * np.int64(b_row[kk])
            out[t, i, j] = acc


def gemm_exact_blas(
    a: np.ndarray, b: np.ndarray, a_index: np.ndarray, b_index: np.ndarray, chunk_k: int, float32: bool, b_by_row: bool = False
) -> np.ndarray:
    """Sum over K chunks of torch.matmul(a chunk, b chunk), each exact in its dtype, added in float64.

    a (Ba, M, Kp) and b (Bb, Kp, N), or b (Bb, N, Kp) when b_by_row, contain
    the values to multiply. The caller has proved that every partial sum of a
    chunk is exact in the dtype, and that the float64 sum of chunk results is
    exact too.
    """
    import torch

    dtype = torch.float32 if float32 else torch.float64
    a_t = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    b_t = torch.from_numpy(np.ascontiguousarray(b)).to(dtype)
    if b_by_row:
        b_t = b_t.transpose(1, 2)
    n_batch = a_index.shape[0]
    if not (a.shape[0] == n_batch and np.array_equal(a_index, np.arange(n_batch))):
        a_t = a_t[torch.from_numpy(a_index)]
    if not (b.shape[0] == n_batch and np.array_equal(b_index, np.arange(n_batch))):
        b_t = b_t[torch.from_numpy(b_index)]
    k_padded = a.shape[2]
    n_columns = b_t.shape[2]
    out = None
    for k0 in range(0, k_padded, chunk_k):
        k1 = min(k0 + chunk_k, k_padded)
        part = torch.matmul(a_t[:, :, k0:k1], b_t[:, k0:k1, :]).to(torch.float64)
        out = part if out is None else out + part
    if out is None:
        return np.zeros((n_batch, a.shape[1], n_columns))
    return out.numpy()
