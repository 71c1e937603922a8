"""Foundation stage: token corpora, masking, save/load, pretraining that learns, exact resume."""

import json
from pathlib import Path

import pytest
import torch

from core.channels import channel_vectors
from data_prep.corpus import Corpus, load_sources, prepare_corpus, split_corpora
from data_prep.errors import BiosignalError, ConfigError
from data_prep.prepare import resolve_sources
from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation, kept_positions, masked_positions, random_mask
from foundation.pretrain import PretrainArgs, pretrain
from foundation.tokens import TokenCorpus, collate_tokens, load_token_corpora, tokenize_corpus
from tokenizer.model import BiotokTokenizer

# v1: these tests tokenize the synthetic emg2qwerty-format EMG too, whose electrodes only v1 knows
SHIPPED = Path(__file__).resolve().parents[1] / "pretrained_models" / "tokenizer-small-v1"


@pytest.fixture(scope="module")
def tokenizer():
    return BiotokTokenizer.from_pretrained(SHIPPED).eval()


@pytest.fixture(scope="module")
def token_root(tmp_path_factory, tokenizer, real, synthetic_root, real_work):
    """Real EEGBCI (every second window: v1's conv stems take 0.12 s a window on 2 cores) + Myo and the
    synthetic EEG/EMG corpora, tokenized by tokenizer-small-v1. The real corpora are prepared in the
    session's `real_work` (the model-card test reuses them) and linked here."""
    root = tmp_path_factory.mktemp("tokens")
    specs = {
        s.name: (s, real, real_work)
        for s in load_sources(resolve_sources("shared_real"))
        if s.name in ("eegbci", "myo")
    }
    specs |= {
        s.name: (s, synthetic_root, root)
        for s in load_sources(resolve_sources("synthetic"))
        if s.name != "ecg_synthetic"
    }
    for name, (spec, data_root, work) in specs.items():
        report = prepare_corpus(spec, data_root, work / "corpora", progress=False)
        corpus = Corpus(report.path)
        windows = range(0, len(corpus), 2) if name == "eegbci" else None
        tokenize_corpus(tokenizer, corpus, work / "tokens", progress=False, windows=windows)
        if work != root:
            for kind in ("corpora", "tokens"):
                (root / kind).mkdir(exist_ok=True)
                (root / kind / name).symlink_to(work / kind / name, target_is_directory=True)
    return root


def test_token_corpus_holds_the_tokenizers_codes(token_root, tokenizer):
    corpus = Corpus(token_root / "corpora" / "myo")
    tokens = TokenCorpus(token_root / "tokens" / "myo", expect_hash=tokenizer.config.config_hash())
    assert len(tokens) == len(corpus)
    for i in (0, len(corpus) - 1):
        window = corpus[i]
        patches = torch.from_numpy(window["signal"]).view(
            1, window["signal"].shape[0], -1, corpus.preset.patch_len
        )
        codes = tokenizer.encode_patches(
            patches, tokenizer.channel_ids(window["ch_names"], "emg_200hz"), "emg_200hz"
        )
        assert torch.equal(torch.from_numpy(tokens[i]["codes"]), codes[0])
        assert tokens[i]["subject"] == window["subject"] and tokens[i]["window_index"] == i
    # a re-run reuses every shard
    _, written, reused = tokenize_corpus(tokenizer, corpus, token_root / "tokens", progress=False)
    assert written == 0 and reused == len(corpus.info["shards"])
    # some windows only (the model card's sample): the same codes, each at its own window_index
    last = len(corpus) - 1
    tokenize_corpus(tokenizer, corpus, token_root / "some", progress=False, windows=[last, 0])
    some = TokenCorpus(token_root / "some" / "myo")
    assert len(some) == 2 and [some[j]["window_index"] for j in range(2)] == [0, last]
    assert torch.equal(torch.from_numpy(some[1]["codes"]), torch.from_numpy(tokens[last]["codes"]))
    # codes of another tokenizer are refused with a clear error
    with pytest.raises(BiosignalError, match="re-run `biotok tokenize`"):
        TokenCorpus(token_root / "tokens" / "myo", expect_hash="0123456789abcdef")


def test_random_mask_counts_and_padding():
    channel_mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    mask = random_mask(channel_mask, 4, 0.5, torch.Generator().manual_seed(0))
    assert mask.shape == (2, 4, 4)
    assert mask[0].sum() == 6 and mask[1].sum() == 2  # half of 12 and of 4 valid positions
    assert not mask[0, 3].any() and not mask[1, 1:].any()  # padding channels never masked
    again = random_mask(channel_mask, 4, 0.5, torch.Generator().manual_seed(0))
    assert torch.equal(mask, again)


def _random_masked_batch(config: FoundationConfig, batch: int, n_patches: int):
    """An untrained model, random codes on 4 EEG channels, their channel ids, half the positions masked,
    and the generator that drew them."""
    model = BiotokFoundation(config).eval()
    g = torch.Generator().manual_seed(0)
    shape = (batch, 4, n_patches, config.n_scales, config.n_levels)
    codes = torch.randint(0, config.codebook_size, shape, generator=g)
    names = [n.split(":", 1)[1] for n in config.channel_vocab if n.startswith("eeg:")][:4]
    ids = model.channel_ids([names] * batch, "eeg")
    mask = random_mask(torch.ones(batch, 4, dtype=torch.bool), n_patches, 0.5, g)
    return model, codes, ids, mask, g


def test_masked_positions_given_by_the_caller_give_the_boolean_mask_loss(tokenizer):
    config = FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2)
    model, codes, ids, mask, _ = _random_masked_batch(config, batch=3, n_patches=5)
    out = model(codes, ids, "eeg", mask, masked_index=masked_positions(mask))
    # reference: the masked positions picked by boolean indexing, in its order
    logits = model.head(out.hidden_states[mask]).view(-1, config.n_scales, 2, config.codebook_size)
    targets = codes[mask][..., :2]
    per_token = torch.nn.functional.cross_entropy(logits.permute(0, 3, 1, 2), targets, reduction="none")
    assert int(out.n_masked) == int(mask.sum()) == 30
    torch.testing.assert_close(out.loss_sum, per_token.mean(dim=(1, 2)).sum())
    assert torch.equal(out.head_correct, (logits.argmax(-1) == targets).sum(0))


def test_kept_positions_are_predicted_from_their_own_visible_input(tokenizer):
    # BERT's unchanged share: a kept position counts in the loss like a hidden one, but the network reads
    # its codes; every other position is exactly as without keeping
    config = FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2, keep_ratio=0.3)
    model, codes, ids, mask, g = _random_masked_batch(config, batch=4, n_patches=8)
    kept = kept_positions(mask, config.keep_ratio, g)
    assert not (kept & ~mask).any() and 0.15 < kept.sum() / mask.sum() < 0.45
    assert kept_positions(mask, 0.0, g) is None
    out = model(codes, ids, "eeg", mask, kept=kept)
    hidden = model(codes, ids, "eeg", mask).hidden_states
    assert int(out.n_masked) == int(mask.sum())  # kept positions are still predicted
    reference = model.encode(ids, "eeg", codes=codes, mask=mask & ~kept)
    torch.testing.assert_close(out.hidden_states, reference)
    assert not torch.allclose(out.hidden_states[kept], hidden[kept])


def test_save_load_round_trip(tmp_path, tokenizer):
    config = FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2)
    model = BiotokFoundation(config).eval()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["tokenizer_hash"] == tokenizer.config.config_hash()
    loaded, info = BiotokFoundation.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    codes = torch.randint(0, config.codebook_size, (1, 3, 4, config.n_scales, config.n_levels))
    ids = model.channel_ids([["C3", "Cz", "C4"]], "eeg")
    assert torch.equal(model.encode(ids, "eeg", codes=codes), loaded.eval().encode(ids, "eeg", codes=codes))


def test_electrode_positions_make_neighbouring_channels_alike(tmp_path, tokenizer):
    # a channel's vector from its 10-05 position alone (learned name embeddings zeroed): an electrode's
    # neighbour is nearer to it than a far electrode is, so copying a neighbour is easy to learn
    torch.manual_seed(0)
    config = FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2, position_embed=True)
    model = BiotokFoundation(config).eval()
    assert not FoundationConfig().position_embed  # saved configs without the field load as trained
    torch.nn.init.zeros_(model.channel_embed.weight)
    ids = model.channel_ids([["C3", "C1", "O2"]], "eeg")
    with torch.no_grad():
        c3, c1, o2 = channel_vectors(model, ids)[0]
    assert float((c3 - c1).norm()) < 0.6 * float((c3 - o2).norm())
    model.save_pretrained(tmp_path)
    loaded, info = BiotokFoundation.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(channel_vectors(loaded.eval(), ids), channel_vectors(model, ids))


def test_spatial_bias_favours_near_electrodes_and_round_trips(tmp_path, tokenizer):
    # ALiBi over the scalp: every head's logit toward a key is lowered by its slope x the electrodes'
    # distance, so a masked patch starts out looking at its neighbours; padding keys are never attended
    torch.manual_seed(0)
    with pytest.raises(ValueError, match="spatial_bias .* needs position_embed"):
        FoundationConfig(spatial_bias=True)
    config = FoundationConfig.from_tokenizer(
        tokenizer.config, "tiny", n_target_levels=2, position_embed=True, spatial_bias=True
    )
    model = BiotokFoundation(config).eval()
    ids = torch.cat([model.channel_ids([["C3", "C1", "O2"]], "eeg"), torch.zeros(1, 1, dtype=torch.long)], 1)
    n_patches = 2
    attend = (ids > 0)[:, :, None].expand(1, 4, n_patches).reshape(1, 1, 1, -1)
    bias = model.spatial_attention_bias(ids, n_patches, attend).detach()  # (1, heads, 8, 8)
    c3, c1, o2, pad = 0, 2, 4, 6  # the first patch of each channel
    assert (bias[0, :, c3, c3] == 0).all() and (bias[0, :, c3, c3 + 1] < 0).all()  # one patch later
    assert (bias[0, :, c3, c1] < 0).all() and (bias[0, :, c3, o2] < 3 * bias[0, :, c3, c1]).all()
    assert torch.isinf(bias[0, :, :, pad]).all()
    steep, shallow = bias[0, :, c3, o2].argmin(), bias[0, :, c3, o2].argmax()
    assert steep != shallow  # heads start with different reaches
    codes = torch.randint(0, config.codebook_size, (1, 4, n_patches, config.n_scales, config.n_levels))
    mask = torch.zeros(1, 4, n_patches, dtype=torch.bool)
    mask[0, 0, 0] = True
    model.train()(codes, ids, "eeg", mask).loss.backward()
    assert model.spatial_log_slope.grad.abs().sum() > 0 and model.time_log_slope.grad.abs().sum() > 0
    model.save_pretrained(tmp_path)
    loaded = BiotokFoundation.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        want = model.eval().encode(ids, "eeg", codes=codes, mask=mask)
        assert torch.allclose(loaded.encode(ids, "eeg", codes=codes, mask=mask), want, atol=1e-6)


def test_frozen_code_embeddings_stay_random_while_the_rest_trains(tokenizer):
    # pretraining folded trainable code embeddings into a few directions per head (foundation-small: 95%
    # of codes read back from an input sum at initialisation, 1% after pretraining); frozen ones keep
    # every code identifiable, so a tied head can copy a neighbour's code
    torch.manual_seed(0)
    config = FoundationConfig.from_tokenizer(
        tokenizer.config, "tiny", n_target_levels=2, tie_heads=True, frozen_code_embed=True
    )
    model = BiotokFoundation(config)
    before = model.code_embed.weight.detach().clone()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    codes = torch.randint(0, config.codebook_size, (2, 3, 4, config.n_scales, config.n_levels))
    ids = model.channel_ids([["C3", "Cz", "C4"]] * 2, "eeg")
    mask = random_mask(ids > 0, 4, 0.5, torch.Generator().manual_seed(0))
    first = model(codes, ids, "eeg", mask)
    first.loss.backward()
    optimizer.step()
    assert torch.equal(model.code_embed.weight, before) and model.code_embed.weight.grad is None
    assert float(model(codes, ids, "eeg", mask).loss) < float(first.loss)  # the rest of the model learns
    assert not FoundationConfig().frozen_code_embed  # saved configs without the field load as trained


def test_tied_heads_score_codes_by_their_input_embedding(tmp_path, tokenizer):
    # every visible code is 0, the masked position's target is code 5: only a tied head's loss reaches
    # code 5's embedding row (an untied model has a separate output row for it)
    torch.manual_seed(0)
    grads = {}
    for tie in (True, False):
        config = FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2, tie_heads=tie)
        model = BiotokFoundation(config)
        codes = torch.zeros(1, 3, 4, config.n_scales, config.n_levels, dtype=torch.long)
        codes[0, 1, 2, 0, 0] = 5
        mask = torch.zeros(1, 3, 4, dtype=torch.bool)
        mask[0, 1, 2] = True
        model(codes, model.channel_ids([["C3", "Cz", "C4"]], "eeg"), "eeg", mask).loss.backward()
        grads[tie] = float(model.code_embed.weight.grad[5].norm())  # row of (scale 0, level 0, code 5)
        assert hasattr(model, "head") != tie
    assert grads[True] > 0 and grads[False] == 0
    with pytest.raises(ValueError, match="tie_heads .* needs input_kind 'tokens'"):
        FoundationConfig(input_kind="patches", tie_heads=True)
    model = BiotokFoundation(FoundationConfig.from_tokenizer(tokenizer.config, "tiny", tie_heads=True))
    model.save_pretrained(tmp_path)
    _, info = BiotokFoundation.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_codebook_init_makes_a_tokens_embedding_a_linear_map_of_its_quantized_latent(tokenizer):
    # every token's summed code embedding is one fixed linear map of its per-scale quantized latents (the
    # tokenizer's codebook vectors summed over the levels read), so codes that decode alike start alike;
    # the usual random start is no such map
    config = FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2)
    codes = torch.randint(0, config.codebook_size, (4, 8, 16, config.n_scales, config.n_levels))
    flat = codes.view(-1, config.n_scales, config.n_levels)[..., :2]
    latents = torch.cat([q.decode(flat[:, i]) for i, q in enumerate(tokenizer.quantizers)], dim=1)
    ones = torch.ones(len(latents), 1)  # (tokens, scales x code_dim + 1): fewer columns than tokens

    def residual(model: BiotokFoundation) -> float:
        with torch.no_grad():
            embedded = model._inputs(codes, None, "eeg").reshape(len(latents), -1)
        fit = torch.linalg.lstsq(torch.cat([latents, ones], 1).double(), embedded.double()).solution
        return float((torch.cat([latents, ones], 1).double() @ fit - embedded).norm() / embedded.norm())

    torch.manual_seed(0)
    learnt, mapped = BiotokFoundation(config), BiotokFoundation(config)
    mapped.init_code_embed_from_codebooks(tokenizer)
    assert residual(mapped) < 1e-4 < 0.5 < residual(learnt)
    assert float(mapped.code_embed.weight.std()) == pytest.approx(0.02, rel=1e-3)
    # split_scales: still that linear map, each scale's rows confined to its own slice of the width
    split = BiotokFoundation(config)
    split.init_code_embed_from_codebooks(tokenizer, split_scales=True)
    assert residual(split) < 1e-4
    d, rows = config.d_model, 2 * config.codebook_size
    for scale, block in enumerate(split.code_embed.weight.detach().split(rows)):
        inside = torch.zeros(d, dtype=torch.bool)
        inside[scale * d // config.n_scales : (scale + 1) * d // config.n_scales] = True
        assert block[:, ~inside].abs().max() == 0
        assert block[:, inside].norm() > 0
    other = FoundationConfig.from_tokenizer(tokenizer.config, "tiny")
    other.tokenizer_hash = "another"
    with pytest.raises(ValueError, match="tokenizer hash"):
        BiotokFoundation(other).init_code_embed_from_codebooks(tokenizer)


def test_deeper_input_levels_change_the_input_and_keep_the_targets(tmp_path, tokenizer):
    # read 8 levels, predict 2: a code at level 5 changes the visible positions' input (hence the masked
    # position's logits), while the loss still scores 2 levels per scale; a tied head scores the target
    # levels' own input embeddings
    torch.manual_seed(0)
    config = FoundationConfig.from_tokenizer(
        tokenizer.config, "tiny", n_target_levels=2, n_input_levels=8, tie_heads=True
    )
    model = BiotokFoundation(config).eval()
    assert (config.n_input_levels, config.n_target_levels, config.n_read_levels) == (8, 2, 8)
    assert model.code_embed.weight.shape[0] == config.n_scales * 8 * config.codebook_size
    codes = torch.randint(0, config.codebook_size, (1, 3, 4, config.n_scales, config.n_levels))
    ids = model.channel_ids([["C3", "Cz", "C4"]], "eeg")
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, 1, 2] = True
    deeper = codes.clone()
    deeper[0, 0, 2, 1, 5] = (codes[0, 0, 2, 1, 5] + 1) % config.codebook_size  # a visible level-5 code
    with torch.no_grad():
        out, changed = model(codes, ids, "eeg", mask), model(deeper, ids, "eeg", mask)
        shallow = BiotokFoundation(
            FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2)
        )
        same = shallow.eval()(codes, ids, "eeg", mask).loss, shallow(deeper, ids, "eeg", mask).loss
    assert out.head_loss.shape == (config.n_scales, 2) and float(out.loss) != float(changed.loss)
    assert float(same[0]) == float(same[1])  # a 2-level reader never sees level 5
    weight = model.code_embed.weight.view(config.n_scales, 8, config.codebook_size, -1)
    hidden = torch.randn(1, config.d_model)
    expected = hidden @ weight[:, :2].reshape(-1, config.d_model).T + model.head_bias
    assert torch.allclose(model.code_logits(hidden).flatten(1), expected, atol=1e-5)
    model.save_pretrained(tmp_path)
    assert BiotokFoundation.from_pretrained(tmp_path).config.n_input_levels == 8
    assert FoundationConfig(n_target_levels=2).n_input_levels == 2  # saved configs without the field
    with pytest.raises(ValueError, match="n_input_levels .* must be >= n_target_levels"):
        FoundationConfig(n_target_levels=4, n_input_levels=2, tie_heads=True)


def _args(token_root, out, **overrides):
    base = dict(
        tokens=[str(token_root / "tokens")],
        size="tiny",
        target_levels=2,
        out=str(out),
        batch_size=8,
        lr=2e-3,
        warmup_steps=10,
        eval_batches=4,
        log_every=5,
        progress=False,
    )
    return PretrainArgs(**{**base, **overrides})


def test_pretraining_can_start_from_the_tokenizers_codebooks(token_root, tokenizer, tmp_path):
    # `--code_init_tokenizer`: step 0's code embeddings are init_code_embed_from_codebooks's; two AdamW
    # steps move a weight by at most ~2 x lr, while the random start is ~0.02 away everywhere
    lr = 1e-4
    for flag, close in (("", False), (str(SHIPPED), True)):
        out = tmp_path / f"run_{bool(flag)}"
        args = _args(
            token_root, out, steps=2, lr=lr, eval_every=100, code_init_tokenizer=flag, keep_ratio=0.2
        )
        model = BiotokFoundation.from_pretrained(str(pretrain(args)))
        assert model.config.keep_ratio == 0.2
        reference = BiotokFoundation(model.config)
        reference.init_code_embed_from_codebooks(tokenizer, seed=0)
        assert torch.allclose(model.code_embed.weight, reference.code_embed.weight, atol=3 * lr) is close


def test_pretraining_beats_the_unigram_baseline(token_root, tmp_path):
    out = tmp_path / "run"
    pretrain(_args(token_root, out, steps=250, eval_every=250, save_every=250))
    final = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()][-1]
    for name in ("eegbci", "myo"):  # real held-out subjects
        held = final[name]
        assert held["masked_loss"] < held["unigram_loss"] - 0.1, (name, held)
    overall = final["all"]
    assert overall["masked_loss"] < overall["unigram_loss"] - 0.3, overall
    # 1024-way codes: exact-code accuracy is small for both, but the model's is clearly higher
    assert overall["masked_accuracy"] > 1.5 * overall["unigram_accuracy"], overall
    assert (out / "final" / "model.safetensors").exists()


def test_named_subjects_are_held_out_of_pretraining(token_root, tmp_path):
    # the strict protocol: the subjects a downstream fold tests on are never in its pretraining data
    corpora = load_token_corpora([token_root / "tokens"])
    last = sorted(set(corpora["eegbci"].column("subject")))[-1]
    train, held = split_corpora(corpora, 0.25, json.dumps({"eegbci": [last]}))
    assert set(held["eegbci"].column("subject")) == {last}
    assert last not in set(train["eegbci"].column("subject"))
    hashed = corpora["myo"].split_by_subject(0.25)[1]  # corpora not named keep the hash split
    assert held["myo"].column("subject") == hashed.column("subject")
    with pytest.raises(ConfigError, match=r"holdout_subjects\.eegbci.*'999'"):
        split_corpora(corpora, 0.25, {"eegbci": ["999"]})
    out = tmp_path / "run"
    held_out = f'{{"eegbci": ["{last}"]}}'
    pretrain(
        _args(token_root, out, steps=4, eval_every=4, save_every=4, holdout_subjects=held_out, profile="1:2")
    )
    final = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()][-1]
    assert final["eegbci"]["n_masked"] > 0
    # the profiled steps' ops, slowest first, and their trace
    profile = (out / "profile" / "rank0.txt").read_text()
    assert profile.startswith("2 profiled steps, rank 0") and "aten::" in profile
    assert json.loads((out / "profile" / "rank0.trace.json").read_text())["traceEvents"]
    with pytest.raises(ConfigError, match="profile"):
        pretrain(_args(token_root, tmp_path / "bad", steps=4, profile="first:2"))
    assert (
        json.loads((out / "pretrain_args.json").read_text())["holdout_subjects"]
        == f'{{"eegbci": ["{last}"]}}'
    )


@pytest.mark.parametrize("fused_optimizer", [False, True])
def test_resume_continues_the_same_loss_curve(token_root, tmp_path, fused_optimizer):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    # one loss per step
    common = dict(steps=12, eval_every=100, log_every=1, grad_accum=2, fused_optimizer=fused_optimizer)
    pretrain(_args(token_root, straight, save_every=100, **common))
    pretrain(_args(token_root, resumed, save_every=6, stop_at=6, **common))
    assert not (resumed / "final").exists()
    pretrain(_args(token_root, resumed, save_every=6, **common))

    def losses(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]

    assert [step for step, _ in losses(resumed)] == list(range(1, 13))
    assert losses(straight) == losses(resumed)
    a, b = (
        BiotokFoundation.from_pretrained(straight / "final"),
        BiotokFoundation.from_pretrained(resumed / "final"),
    )
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key


def test_compiled_blocks_train_as_the_eager_model_and_save_under_its_names(token_root, tmp_path):
    # one corpus: one shape to compile (each new channel count is a recompilation, minutes on 2 cores)
    myo = [str(token_root / "tokens" / "myo")]
    common = dict(tokens=myo, steps=3, eval_every=100, save_every=100, log_every=1)
    pretrain(_args(token_root, tmp_path / "eager", **common))
    pretrain(_args(token_root, tmp_path / "compiled", compile=True, **common))

    def losses(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [r["train/loss"] for r in rows if "train/loss" in r]

    assert losses(tmp_path / "compiled") == pytest.approx(losses(tmp_path / "eager"), rel=1e-4)
    eager = BiotokFoundation.from_pretrained(tmp_path / "eager" / "final").state_dict()
    compiled = BiotokFoundation.from_pretrained(tmp_path / "compiled" / "final").state_dict()
    assert compiled.keys() == eager.keys()
    for key, value in eager.items():
        assert torch.allclose(value, compiled[key], atol=1e-4), key


def test_raw_patch_input_trains(token_root, tmp_path):
    out = tmp_path / "patches"
    pretrain(
        _args(
            token_root,
            out,
            input_kind="patches",
            steps=30,
            eval_every=30,
            save_every=30,
            symmetric_masking=True,
        )
    )
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if "train/loss" in line]
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    model = BiotokFoundation.from_pretrained(out / "final")
    assert model.config.input_kind == "patches" and model.config.symmetric_masking
    tokens = TokenCorpus(token_root / "tokens" / "eegbci")
    batch = collate_tokens([tokens[0], tokens[1]])
    with pytest.raises(ValueError, match="reads raw patches"):
        model.encode(model.channel_ids(batch["ch_names"], "eeg"), "eeg", codes=batch["codes"])


def _launch_ddp(token_root, out, **flags):
    """2-process DDP on CPU (gloo): torchrun + Accelerate's CPU mode."""
    import os
    import subprocess
    import sys

    args = _args(token_root, out, steps=8, eval_every=100, log_every=1, save_every=4, **flags)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "foundation.pretrain"]
    for key, value in vars(args).items():
        cmd += [f"--{key}", *map(str, value)] if isinstance(value, list) else [f"--{key}", str(value)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]


def test_two_process_ddp_resumes_the_same_loss_curve(token_root, tmp_path):
    import shutil

    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    _launch_ddp(token_root, straight)  # 8 steps, a checkpoint at step 4
    state = json.loads((straight / "checkpoints" / "step_000004" / "state.json").read_text())
    assert len(state["samplers"]) == 2  # each rank's data position is kept
    # ... and it is one position: the ranks drew disjoint parts of the same global batches
    assert state["samplers"][0] == state["samplers"][1]
    # a new run folder holding only the step-4 checkpoint: the resume starts there (two launches, not three)
    shutil.copytree(straight / "checkpoints" / "step_000004", resumed / "checkpoints" / "step_000004")
    _launch_ddp(token_root, resumed)

    def losses(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
        return [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]

    assert [s for s, _ in losses(straight)] == list(range(1, 9))
    assert [s for s, _ in losses(resumed)] == list(range(5, 9))
    assert losses(straight)[4:] == losses(resumed)


def test_copy_neighbour_baselines_take_the_nearest_unmasked_patch_and_electrode():
    from foundation.pretrain import copy_neighbour

    # one window, channels Cz, Fp1, C1 (C1 is Cz's neighbour, Fp1 far), 4 patches, 1 scale x 1 level;
    # each code says where it came from: 10 x channel + patch
    codes = (10 * torch.arange(3)[:, None] + torch.arange(4)[None, :])[None, :, :, None, None]
    mask = torch.zeros(1, 3, 4, dtype=torch.bool)
    mask[0, 0, 1:3] = True  # Cz patches 1 and 2
    mask[0, 2, :] = True  # all of C1
    copies = copy_neighbour(codes, mask, torch.ones(1, 3, dtype=torch.bool), [["Cz", "Fp1", "C1"]], "eeg")
    # time: Cz patch 1 <- patch 0 (the earlier of two at distance 1), patch 2 <- patch 3; C1 has none
    assert copies["time"][0, 0, 1, 0, 0] == 0 and copies["time"][0, 0, 2, 0, 0] == 3
    assert copies["time_valid"][0, 0, 1] and not copies["time_valid"][0, 2].any()
    # space: C1 is masked at every patch, so Cz copies Fp1; C1 copies Cz (nearer than Fp1) where Cz is open
    assert copies["space"][0, 0, 1, 0, 0] == 11
    assert copies["space"][0, 2, 0, 0, 0] == 0 and copies["space"][0, 2, 1, 0, 0] == 11
    assert copies["space_valid"][0, 2].all()
