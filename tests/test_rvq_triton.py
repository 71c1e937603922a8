"""The fused Triton RVQ encode, run on the CPU by Triton's interpreter (skipped where Triton is absent;
the GPU benchmark, benchmarks/rvq_speed.py, checks the compiled kernel the same way)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton")  # conftest.py puts it in its interpreter on a CPU-only machine

from tokenizer.rvq import ResidualVQ, exact_codes  # noqa: E402
from tokenizer.rvq_triton import rvq_encode  # noqa: E402


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check; the GPU runs the compiled kernel")
def test_fused_encode_equals_exact_search_and_the_torch_path():
    g = torch.Generator().manual_seed(0)
    rvq = ResidualVQ(32, 64, 3, kmeans_iters=0)
    rvq.codebooks.copy_(torch.randn(3, 64, 32, generator=g))
    x = 2 * torch.randn(150, 32, generator=g)  # not a multiple of the row block: the tail is masked
    codes = rvq_encode(x, rvq.codebooks, block_n=32, block_k=32, block_d=16)
    assert codes.shape == (150, 3) and codes.dtype == torch.long
    assert torch.equal(codes, exact_codes(x, rvq.codebooks))
    assert torch.equal(codes, rvq.encode(x))


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check; the GPU runs the compiled kernel")
def test_fused_encode_keeps_the_lower_index_of_tied_codes_in_other_tiles():
    g = torch.Generator().manual_seed(1)
    books = torch.randn(1, 64, 16, generator=g)
    books[0, 40] = books[0, 5]  # the same code in the first and the second tile of 32
    x = books[0, 5] + 0.01 * torch.randn(20, 16, generator=g)
    codes = rvq_encode(x, books, block_n=16, block_k=32, block_d=16)
    assert (codes[:, 0] == 5).all()  # torch.argmax's choice: the first of equal maxima


def test_fused_encode_refuses_shapes_it_cannot_tile():
    with pytest.raises(ValueError, match="multiples"):
        rvq_encode(torch.randn(4, 24), torch.randn(1, 64, 24), block_d=16)


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter check; the GPU runs the compiled kernel")
def test_fused_encode_rescores_exactly_the_rows_whose_tf32_choice_is_uncertain():
    # two codes almost equidistant from the first rows (a near-tie TF32 could get wrong), far from the others
    g = torch.Generator().manual_seed(2)
    books = 4 * torch.randn(1, 32, 16, generator=g)
    middle = (books[0, 3] + books[0, 7]) / 2
    tied = middle + 1e-4 * torch.randn(8, 16, generator=g)
    clear = books[0, 11] + 0.01 * torch.randn(8, 16, generator=g)
    x = torch.cat([tied, clear])
    codes, rescored = rvq_encode(x, books, block_n=16, block_k=32, block_d=16, return_rescored=True)
    assert rescored[:8].all() and not rescored[8:].any()
    assert torch.equal(codes, exact_codes(x, books)) and (codes[8:, 0] == 11).all()
    # a bound that doubts every row: every row goes through the exact search, with the same codes
    every, all_rescored = rvq_encode(
        x, books, block_n=16, block_k=32, block_d=16, error_bound=1.0, return_rescored=True
    )
    assert all_rescored.all() and torch.equal(every, codes)
    # a negative bound turns the check off
    _, none = rvq_encode(x, books, block_n=16, block_k=32, block_d=16, error_bound=-1.0, return_rescored=True)
    assert not none.any()
