import pytest
import torch

from tokenizer.rvq import ResidualVQ, allocate_levels, nearest_codes


def trained_rvq(dropout=0.0, steps=20, seed=0):
    torch.manual_seed(seed)
    rvq = ResidualVQ(8, 32, 4, quantizer_dropout=dropout, kmeans_iters=5)
    data = torch.randn(1024, 8) * torch.linspace(0.5, 3, 8)
    for _ in range(steps):
        rvq(data[torch.randint(0, 1024, (256,))])
    return rvq, data


def test_codes_are_true_nearest_neighbours_level_by_level():
    rvq, data = trained_rvq()
    rvq.eval()
    codes = rvq.encode(data)
    residual = data.double()
    for level in range(rvq.n_levels):
        book = rvq.codebooks[level].double()
        distances = torch.cdist(residual, book)
        exact = distances.argmin(dim=1)
        chosen = distances.gather(1, codes[:, level : level + 1]).squeeze(1)
        # identical up to exact ties in float64
        assert torch.allclose(chosen, distances.min(dim=1).values, rtol=1e-6, atol=1e-9)
        assert (codes[:, level] == exact).float().mean() > 0.999
        residual = residual - book[codes[:, level]]
    assert torch.equal(nearest_codes(data, rvq.codebooks[0]), codes[:, 0])
    # a bf16 autocast region (mixed-precision training) does not lower the lookup's precision
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(rvq.encode(data), codes)


def test_residuals_are_true_residuals_and_more_levels_reconstruct_better():
    rvq, data = trained_rvq(dropout=0.5)
    rvq.eval()
    codes = rvq.encode(data)
    errors = [((rvq.decode(codes[:, :n]) - data) ** 2).mean().item() for n in range(1, 5)]
    assert errors == sorted(errors, reverse=True) and errors[-1] < 0.6 * errors[0]
    out = rvq(data)
    assert torch.allclose(out.quantized, rvq.decode(out.codes), atol=1e-5)
    # norms are kept (no per-level re-normalisation): quantized norm tracks the input norm
    ratio = out.quantized.norm(dim=1) / data.norm(dim=1)
    assert 0.7 < ratio.median() < 1.3


def test_quantizer_dropout_decodes_rows_with_fewer_levels():
    rvq, data = trained_rvq(dropout=0.5, steps=5)
    torch.manual_seed(1)
    books = rvq.codebooks.clone()  # the step's EMA update changes them after the lookup
    out = rvq(data)  # training mode: half the rows use a random prefix of the levels
    chosen = torch.stack([books[level][out.codes[:, level]] for level in range(4)])
    prefixes = chosen.cumsum(dim=0)  # (levels, n, dim)
    match = (prefixes - out.quantized.detach()[None]).abs().amax(dim=2) < 1e-4  # (levels, n)
    assert match.any(dim=0).all()  # every row is exactly some prefix of its codes
    used_levels = match.float().argmax(dim=0) + 1
    assert 0.3 < (used_levels < 4).float().mean() < 0.5  # ~ p * (L-1)/L of the rows stop early


def test_dead_codes_are_restarted_from_recent_residuals():
    torch.manual_seed(0)
    rvq = ResidualVQ(4, 16, 1, dead_code_threshold=0.5, kmeans_iters=3)
    data = torch.randn(512, 4)
    rvq(data)
    rvq.codebooks[0, 3] = 1000.0  # a code no input will ever pick
    rvq.ema_sum[0, 3] = 1000.0
    rvq.ema_count[0, 3] = 1e-3
    out = rvq(data)
    assert out.expired[0] >= 1
    assert rvq.codebooks[0, 3].abs().max() < 10  # replaced by one of the batch's residuals
    assert torch.cdist(rvq.codebooks[0, 3:4], data).min() < 1e-4


def test_eval_mode_never_changes_state():
    rvq, data = trained_rvq()
    rvq.eval()
    before = {k: v.clone() for k, v in rvq.state_dict().items()}
    rvq(data)
    rvq.encode(data)
    assert all(torch.equal(before[k], v) for k, v in rvq.state_dict().items())
    rvq.train()
    rvq(data)
    assert not torch.equal(before["ema_count"], rvq.state_dict()["ema_count"])


def test_padding_rows_do_not_update_codebooks():
    torch.manual_seed(0)
    rvq = ResidualVQ(4, 8, 2, kmeans_iters=3)
    data = torch.randn(256, 4)
    weights = torch.ones(256)
    weights[128:] = 0
    data[128:] = 1e6  # garbage in padded rows
    rvq(data, weights)
    assert rvq.codebooks.abs().max() < 100


def test_output_commitment_pulls_toward_all_levels_not_the_first_code():
    """ "levels" commits every level's residual: its gradient pulls the input toward the first code
    (the collapse measured in docs/BENCHMARKS.md); "output" commits the input to all levels' sum."""
    import copy

    rvq, data = trained_rvq()
    x = data[:256].clone().requires_grad_(True)
    grads, losses = {}, {}
    for kind in ("levels", "output"):
        fresh = copy.deepcopy(rvq)  # a training forward moves the EMA codebooks
        fresh.commitment = kind
        out = fresh(x)
        (grad,) = torch.autograd.grad(out.commit_loss, x)
        grads[kind], losses[kind] = grad, float(out.commit_loss)
    rvq.eval()
    full = rvq.decode(rvq.encode(data[:256]))
    first = rvq.codebooks[0][rvq.encode(data[:256], 1)[:, 0]]
    # "output": the loss is what all levels leave, its gradient points from the full quantization
    assert losses["output"] == pytest.approx(float((data[:256] - full).pow(2).mean()), rel=1e-4)
    assert torch.allclose(grads["output"], 2 * (data[:256] - full) / (8 * 256), atol=1e-6)
    # "levels": dominated by the first level's pull toward its code, far larger than "output"'s
    toward_first = 2 * (data[:256] - first) / (8 * 256)
    cosine = torch.nn.functional.cosine_similarity(grads["levels"].flatten(), toward_first.flatten(), dim=0)
    assert cosine > 0.8 and grads["levels"].norm() > 3 * grads["output"].norm()
    with pytest.raises(ValueError, match="commitment"):
        ResidualVQ(8, 32, 4, commitment="first")


def test_variable_depth_codes_decode_as_their_own_prefixes_and_gains_are_residual_drops():
    rvq, data = trained_rvq(dropout=0.5)
    rvq.eval()
    codes, gains = rvq.residual_gains(data)
    assert torch.equal(codes, rvq.encode(data))
    before = data.pow(2).sum(-1)
    for n in range(1, rvq.n_levels + 1):
        after = (data - rvq.decode(codes[:, :n])).pow(2).sum(-1)
        torch.testing.assert_close(before - after, gains[:, :n].sum(-1), rtol=1e-4, atol=1e-4)
    # -1 marks a level a token does not have: it decodes as that token's shorter prefix
    depths = torch.arange(len(data)) % (rvq.n_levels + 1)
    ragged = codes.masked_fill(torch.arange(rvq.n_levels) >= depths[:, None], -1)
    expected = torch.stack(
        [rvq.decode(codes[i : i + 1, : int(d)])[0] if d else torch.zeros(8) for i, d in enumerate(depths)]
    )
    torch.testing.assert_close(rvq.decode(ragged), expected)


def test_levels_go_to_the_largest_gains_as_prefixes_within_each_budget():
    # group 0: token 1's gains dominate; group 1: equal tokens split the budget; -inf is never chosen
    gains = torch.tensor(
        [
            [[1.0, 0.5, 0.2], [9.0, 8.0, 0.1], [2.0, 0.1, 0.0]],
            [[3.0, 2.0, 1.0], [3.0, 2.0, 1.0], [-float("inf")] * 3],
        ]
    )
    depths = allocate_levels(gains, torch.tensor([4, 5]))
    assert depths.tolist() == [[1, 2, 1], [3, 2, 0]] or depths.tolist() == [[1, 2, 1], [2, 3, 0]]
    assert depths.sum(dim=1).tolist() == [4, 5]
    # a later level's larger gain does not jump the queue: levels stay a prefix
    assert allocate_levels(torch.tensor([[[0.1, 5.0], [1.0, 0.0]]]), torch.tensor([1])).tolist() == [[0, 1]]
