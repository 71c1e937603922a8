"""Fused residual-VQ encode on the GPU (Triton): every level's nearest-code search in one kernel that never
writes the n x K score matrix.

Per block of rows and per level: scores x·c - ½‖c‖² are accumulated tile by tile over the codebook with
TF32 tensor-core products, and only each row's two best candidates are kept; those two are then scored
again exactly in float32 on the CUDA cores and the better one wins. TF32 rounds the products (about 1e-3
relative), so the TF32 winner can be a near-tie's wrong side; the true nearest code is almost always
among the TF32 top two, and the float32 rescoring picks it. The residual of level l is recomputed from
the input and the codes of levels < l (the codebooks stay in L2), in the same order as
`ResidualVQ.encode`, so no residual is ever written to memory.

Certified: a code outside the TF32 top two can only beat the chosen one if the chosen one's exact score
is within the TF32 error bound of the second candidate's TF32 score (|x·c|'s TF32 error is at most
`error_bound` x ‖residual‖ x max ‖c‖). The kernel flags every row where that happens at any level, and
`rvq_encode` encodes the flagged rows again with the exact float32 search of `ResidualVQ.encode`; the codes
then equal that search's on every row (ties aside), at the cost of the flagged rows.

`rvq_encode(x, codebooks)` is the entry point. `ResidualVQ.encode` does not call it yet: it will, for
CUDA inputs, once its codes are checked on real latents on the GPU (benchmarks/rvq_real_latents.py).
Set TRITON_INTERPRET=1 before anything imports triton (transformers does) to run the kernel on the CPU
(slowly), as the tests do.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .rvq import residual_codes

# TF32 keeps 10 of float32's 23 mantissa bits: each product x_i c_i is off by at most 2 x 2^-11 of itself,
# so a score x·c by at most 2^-10 x sum |x_i c_i| <= 2^-10 x ‖x‖ ‖c‖; 1.25 covers float32 accumulation
TF32_ERROR_BOUND = 1.25 * 2.0**-10


@triton.jit
def _residual_chunk(
    x_ptr,
    codebooks_ptr,
    rows_64,
    row_ok,
    chosen,
    d0,
    K: tl.constexpr,
    D: tl.constexpr,
    LEVEL: tl.constexpr,
    LEVELS_P2: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """Columns d0 .. d0 + BLOCK_D of the residual that level LEVEL quantises: x minus the codes chosen at
    the levels before it, subtracted in level order (as `ResidualVQ.encode` does), `(BLOCK_N, BLOCK_D)`."""
    dims = tl.arange(0, BLOCK_D)
    level_cols = tl.arange(0, LEVELS_P2)
    residual = tl.load(x_ptr + rows_64[:, None] * D + d0 + dims[None, :], mask=row_ok[:, None], other=0.0)
    for prev in tl.static_range(LEVEL):
        code = tl.sum(tl.where(level_cols[None, :] == prev, chosen, 0), axis=1)
        residual -= tl.load(codebooks_ptr + prev * K * D + code[:, None] * D + d0 + dims[None, :])
    return residual


@triton.jit
def _rvq_encode_kernel(
    x_ptr,
    codebooks_ptr,
    half_norms_ptr,
    max_norms_ptr,
    codes_ptr,
    flags_ptr,
    n_rows,
    error_bound,
    K: tl.constexpr,
    D: tl.constexpr,
    LEVELS: tl.constexpr,
    LEVELS_P2: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < n_rows
    rows_64 = rows.to(tl.int64)
    dims = tl.arange(0, BLOCK_D)
    codes_k = tl.arange(0, BLOCK_K)
    # the codes chosen so far stay in registers: a value stored to global memory by one thread need not
    # be visible to another thread of the same program when it reads it back
    level_cols = tl.arange(0, LEVELS_P2)
    chosen = tl.zeros([BLOCK_N, LEVELS_P2], tl.int32)
    uncertain = tl.zeros([BLOCK_N], tl.int32)
    for level in tl.static_range(LEVELS):
        cb = codebooks_ptr + level * K * D
        best1 = tl.full([BLOCK_N], float("-inf"), tl.float32)
        best2 = tl.full([BLOCK_N], float("-inf"), tl.float32)
        idx1 = tl.zeros([BLOCK_N], tl.int32)
        idx2 = tl.zeros([BLOCK_N], tl.int32)
        for k0 in range(0, K, BLOCK_K):
            scores = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
            for d0 in range(0, D, BLOCK_D):
                residual = _residual_chunk(
                    x_ptr, codebooks_ptr, rows_64, row_ok, chosen, d0, K, D, level, LEVELS_P2, BLOCK_D
                )
                block = tl.load(cb + (k0 + codes_k)[:, None] * D + d0 + dims[None, :])  # (BLOCK_K, BLOCK_D)
                scores += tl.dot(residual, tl.trans(block), input_precision=PRECISION)
            scores -= tl.load(half_norms_ptr + level * K + k0 + codes_k)[None, :]
            # this tile's two best, then merged with the running two best (ties keep the lower index)
            top1 = tl.max(scores, axis=1)
            arg1 = tl.argmax(scores, axis=1).to(tl.int32)
            rest = tl.where(codes_k[None, :] == arg1[:, None], float("-inf"), scores)
            top2 = tl.max(rest, axis=1)
            arg2 = tl.argmax(rest, axis=1).to(tl.int32)
            arg1 += k0
            arg2 += k0
            new_first = top1 > best1
            second = tl.where(
                new_first, tl.where(top2 > best1, top2, best1), tl.where(top1 > best2, top1, best2)
            )
            second_idx = tl.where(
                new_first, tl.where(top2 > best1, arg2, idx1), tl.where(top1 > best2, arg1, idx2)
            )
            best1 = tl.where(new_first, top1, best1)
            idx1 = tl.where(new_first, arg1, idx1)
            best2, idx2 = second, second_idx
        # exact float32 scores of the two candidates
        exact1 = tl.zeros([BLOCK_N], tl.float32)
        exact2 = tl.zeros([BLOCK_N], tl.float32)
        residual_sq = tl.zeros([BLOCK_N], tl.float32)
        for d0 in range(0, D, BLOCK_D):
            residual = _residual_chunk(
                x_ptr, codebooks_ptr, rows_64, row_ok, chosen, d0, K, D, level, LEVELS_P2, BLOCK_D
            )
            exact1 += tl.sum(residual * tl.load(cb + idx1[:, None] * D + d0 + dims[None, :]), axis=1)
            exact2 += tl.sum(residual * tl.load(cb + idx2[:, None] * D + d0 + dims[None, :]), axis=1)
            residual_sq += tl.sum(residual * residual, axis=1)
        exact1 -= tl.load(half_norms_ptr + level * K + idx1)
        exact2 -= tl.load(half_norms_ptr + level * K + idx2)
        take2 = (exact2 > exact1) | ((exact2 == exact1) & (idx2 < idx1))
        # any third code scores at most best2 in TF32, so at most best2 + bound exactly: the choice is
        # certain where the chosen exact score clears that
        bound = error_bound * tl.sqrt(residual_sq) * tl.load(max_norms_ptr + level)
        margin = tl.maximum(exact1, exact2) - best2
        uncertain = tl.where(margin <= bound, 1, uncertain)
        chosen = tl.where(level_cols[None, :] == level, tl.where(take2, idx2, idx1)[:, None], chosen)
    tl.store(
        codes_ptr + rows_64[:, None] * LEVELS + level_cols[None, :],
        chosen,
        mask=row_ok[:, None] & (level_cols[None, :] < LEVELS),
    )
    tl.store(flags_ptr + rows_64, uncertain, mask=row_ok)


def rvq_encode(
    x: torch.Tensor,
    codebooks: torch.Tensor,
    block_n: int = 64,
    block_k: int = 256,
    block_d: int = 32,
    precision: str = "tf32",
    num_warps: int = 8,
    num_stages: int = 2,
    error_bound: float | None = None,
    return_rescored: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Codes `(n, levels)` int64 of x `(n, dim)` under codebooks `(levels, K, dim)`, float32 throughout.
    The default tiles are the fastest of benchmarks/rvq_fused_sweep.py on an H200 (docs/BENCHMARKS.md).

    Rows whose TF32 choice is not certain at some level are encoded again exactly (see the module's
    docstring). `error_bound`: the relative error of a TF32 score (default `TF32_ERROR_BOUND`; 0 with
    precision "ieee"; a negative value turns the check off, as before it existed). `return_rescored`: also
    return the bool mask `(n,)` of the rows encoded again.

    K must be a multiple of `block_k` and dim of `block_d` (both powers of two, at least 16)."""
    if x.dim() != 2 or codebooks.dim() != 3 or x.shape[1] != codebooks.shape[2]:
        raise ValueError(
            f"expected x (n, dim) and codebooks (levels, K, dim), got {tuple(x.shape)}, {tuple(codebooks.shape)}"
        )
    levels, k, d = codebooks.shape
    block_k, block_d = min(block_k, k), min(block_d, d)
    if k % block_k or d % block_d:
        raise ValueError(f"codebook size {k} and dim {d} must be multiples of {block_k} and {block_d}")
    x = x.float().contiguous()
    codebooks = codebooks.float().contiguous()
    if error_bound is None:
        error_bound = TF32_ERROR_BOUND if precision == "tf32" else 0.0
    half_norms = 0.5 * codebooks.pow(2).sum(dim=2)
    max_norms = codebooks.norm(dim=2).amax(dim=1)
    codes = torch.empty(x.shape[0], levels, dtype=torch.int32, device=x.device)
    flags = torch.empty(x.shape[0], dtype=torch.int32, device=x.device)
    grid = (triton.cdiv(x.shape[0], block_n),)
    _rvq_encode_kernel[grid](
        x,
        codebooks,
        half_norms,
        max_norms,
        codes,
        flags,
        x.shape[0],
        float(error_bound),
        K=k,
        D=d,
        LEVELS=levels,
        LEVELS_P2=triton.next_power_of_2(levels),
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        BLOCK_D=block_d,
        PRECISION=precision,
        num_warps=num_warps,
        num_stages=num_stages,
    )
    codes = codes.long()
    rescored = flags.bool() if error_bound >= 0 else torch.zeros_like(flags, dtype=torch.bool)
    rows = rescored.nonzero().squeeze(1)
    if len(rows):  # the exact float32 search of ResidualVQ.encode on these rows
        codes[rows] = residual_codes(x[rows], codebooks)
    return (codes, rescored) if return_rescored else codes
