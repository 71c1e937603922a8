"""emg2qwerty fine-tuning: charset, labels, CER, CTC guard, decoding, models, streaming, training."""

from __future__ import annotations

import json
import math
import string

import numpy as np
import pytest
import torch

from data_prep.errors import ConfigError
from data_prep.synthetic import SyntheticConfig, write_default_dataset
from finetune.cer import cer, edit_counts
from finetune.charset import (
    BACKSPACE,
    BLANK,
    N_CLASSES,
    SHIFT,
    SPACE,
    key_to_label,
    keystroke_labels,
    labels_to_text,
    text_to_labels,
)
from finetune.ctc import ctc_loss, distillation_loss, frames_needed
from finetune.decoding import beam_search, greedy_decode
from finetune.emg_data import PAD_LABEL, WindowSampler, load_split
from finetune.emg_models import DEPTHS, WIDTHS, EmgCTCConfig, EmgCTCModel, SpectrogramNorm
from finetune.lm import VISIBLE, CharNGramLM


@pytest.fixture(scope="module")
def emg_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("emg2qwerty")
    config = SyntheticConfig(eeg_subjects=0, ecg_records=0, emg_users=3, emg_sessions=3, emg_session_s=12.0)
    write_default_dataset(root, config, progress=False)
    return root / "emg2qwerty"


# ---------------------------------------------------------------- charset and labels


def test_charset_matches_emg2qwerty():
    assert N_CLASSES == 99 and BLANK == 98
    assert text_to_labels("\n\r\b\x7f") == [95, 95, 94, 94]  # emg2qwerty's test cases
    assert text_to_labels("’“”—") == [68, 63, 63, 74]
    printable = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    assert text_to_labels(printable) == list(range(94))
    assert labels_to_text(text_to_labels(printable + " ")) == printable + " "
    every = list(range(BLANK))
    assert text_to_labels(labels_to_text(every)) == every
    assert key_to_label("Key.space") == SPACE and key_to_label("Key.shift_r") == SHIFT
    assert key_to_label("Key.ctrl") is None and key_to_label("é") is None


def test_labels_from_keystrokes_keep_typos_and_backspace():
    keys = ["t", "e", "w", "Key.backspace", "Key.shift", "S", "Key.ctrl", "Key.enter", "x"]
    times = np.array([0.1, 0.3, 0.5, 0.7, 0.9, 0.95, 1.1, 1.3, 2.5])
    labels = keystroke_labels(keys, times, 0.0, 2.0)
    assert labels_to_text(labels) == "tew⌫⇧S⏎"  # ctrl dropped, x outside the window
    assert keystroke_labels(keys, times, 0.6, 1.0).tolist() == [BACKSPACE, SHIFT, key_to_label("S")]


# ---------------------------------------------------------------- CER


def test_edit_counts_by_hand():
    assert edit_counts("abc", "abc").errors == 0
    c = edit_counts("abc", "abd")
    assert (c.substitutions, c.deletions, c.insertions) == (1, 0, 0)
    c = edit_counts("abcd", "abd")  # the prediction misses a target character: a deletion
    assert (c.substitutions, c.deletions, c.insertions) == (0, 1, 0)
    c = edit_counts("abd", "abcd")  # an extra predicted character: an insertion
    assert (c.substitutions, c.deletions, c.insertions) == (0, 0, 1)
    c = edit_counts("kitten", "sitting")
    assert (c.substitutions, c.deletions, c.insertions) == (2, 0, 1)
    assert edit_counts("", "ab").insertions == 2 and edit_counts("ab", "").deletions == 2


def test_cer_sums_edits_over_sessions():
    # 1 edit in 2 characters and 0 in 8: (1 + 0) / (2 + 8), not the mean of 50% and 0%
    assert cer(["ab", "abcdefgh"], ["a", "abcdefgh"]) == pytest.approx(10.0)


def test_edit_counts_total_is_the_levenshtein_distance():
    rng = np.random.default_rng(0)

    def distance(a, b):
        row = list(range(len(b) + 1))
        for i, ca in enumerate(a, 1):
            prev, row[0] = row[0], i
            for j, cb in enumerate(b, 1):
                prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
        return row[-1]

    for _ in range(50):
        a = list(rng.integers(0, 4, rng.integers(0, 12)))
        b = list(rng.integers(0, 4, rng.integers(0, 12)))
        counts = edit_counts(a, b)
        assert counts.errors == distance(a, b)
        assert len(a) - counts.deletions + counts.insertions == len(b)


# ---------------------------------------------------------------- CTC loss


def test_ctc_length_guard_counts_infeasible_windows():
    targets = torch.tensor([[0, 0, 1], [2, 3, PAD_LABEL]])
    lengths = torch.tensor([3, 2])
    assert frames_needed(targets, lengths).tolist() == [4, 2]  # a repeat needs a blank between
    log_probs = torch.randn(2, 3, N_CLASSES).log_softmax(-1)
    loss, infeasible = ctc_loss(log_probs, torch.tensor([3, 3]), targets, lengths)
    assert infeasible == 1 and math.isfinite(float(loss))
    loss, infeasible = ctc_loss(log_probs.repeat(1, 2, 1), torch.tensor([6, 6]), targets, lengths)
    assert infeasible == 0
    reference = (
        torch.nn.functional.ctc_loss(
            log_probs.repeat(1, 2, 1).transpose(0, 1),
            torch.tensor([0, 0, 1, 2, 3]),
            torch.tensor([6, 6]),
            lengths,
            blank=BLANK,
            reduction="sum",
        )
        / lengths.sum()
    )
    assert float(loss) == pytest.approx(float(reference), rel=1e-5)


def test_distillation_loss():
    logits = torch.randn(2, 5, N_CLASSES)
    assert float(distillation_loss(logits, logits)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_loss(logits, torch.randn(2, 5, N_CLASSES))) > 0
    with pytest.raises(ValueError, match="frame rate"):
        distillation_loss(logits, torch.randn(2, 6, N_CLASSES))


# ---------------------------------------------------------------- decoding and LM


def _emissions(path: list[int], peak: float = 0.9) -> torch.Tensor:
    probs = torch.full((len(path), N_CLASSES), (1 - peak) / (N_CLASSES - 1))
    probs[torch.arange(len(path)), torch.tensor(path)] = peak
    return probs.log()


def test_greedy_and_beam_agree_on_clear_emissions():
    path = [BLANK, 0, 0, BLANK, 0, 1, BLANK, BLANK, 2, 2]
    assert greedy_decode(_emissions(path)) == [0, 0, 1, 2]
    assert beam_search(_emissions(path), beam_size=8, insertion_bonus=0.0) == [0, 0, 1, 2]


def test_lm_is_normalised_and_round_trips(tmp_path):
    lm = CharNGramLM(3).fit(["the cat", "the hat", "a cat"])
    for context in [(), tuple(text_to_labels("th")), tuple(text_to_labels("zz"))]:
        total = sum(math.exp(lm.log_prob(context, c)) for c in VISIBLE)
        assert total == pytest.approx(1.0, abs=1e-9)
    lm.save(tmp_path / "lm.json")
    again = CharNGramLM.load(tmp_path / "lm.json")
    assert again.log_prob(tuple(text_to_labels("th")), key_to_label("e")) == lm.log_prob(
        tuple(text_to_labels("th")), key_to_label("e")
    )


def test_lm_resolves_an_ambiguous_character_and_backspace_restores_context():
    lm = CharNGramLM(4).fit(["the the the then there"] * 5)
    t, h, e, x = (key_to_label(c) for c in "thex")
    path = [t, BLANK, h, BLANK, e, BLANK]
    emissions = _emissions(path)
    emissions[4] = torch.full((N_CLASSES,), math.log(0.02 / 97))
    emissions[4, e], emissions[4, x] = math.log(0.47), math.log(0.51)  # acoustically "thx"
    assert greedy_decode(emissions) == [t, h, x]
    assert beam_search(emissions, lm, beam_size=8, lm_weight=1.0, insertion_bonus=0.0) == [t, h, e]
    # after "thx" + backspace the LM context is "th" again
    context = ()
    for label in [t, h, x, BACKSPACE]:
        context, _ = lm.advance(context, label)
    assert context == (t, h)


@pytest.mark.parametrize("workers", [1, 2])  # 2: the grid's beam searches in forked processes, same result
def test_lm_tuning_picks_the_weight_that_decodes_validation_best(workers):
    from finetune.emg2qwerty import CTCTrainArgs, tune_lm

    lm = CharNGramLM(4).fit(["the the the then there"] * 5)
    t, h, e, x = (key_to_label(c) for c in "thex")
    ambiguous = _emissions([t, BLANK, h, BLANK, e, BLANK])  # acoustically "thx", meant "the"
    ambiguous[4] = torch.full((N_CLASSES,), math.log(0.02 / 97))
    ambiguous[4, e], ambiguous[4, x] = math.log(0.47), math.log(0.51)
    clear = _emissions([t, BLANK, h, BLANK, x, BLANK], peak=0.95)  # clearly "thx", which the LM dislikes

    class Session:  # tune_lm reads a session's labels over its whole signal
        def __init__(self, text: str):
            self.signal, self.target = np.zeros((1, 6)), np.array([key_to_label(c) for c in text])

        def labels(self, start: int, stop: int) -> np.ndarray:
            return self.target

    args = CTCTrainArgs(beam=8, lm_weights="0,0.25,8", insertion_bonuses="0", decode_workers=workers)
    tuned = tune_lm([ambiguous, clear], [Session("the"), Session("thx")], lm, args)
    cer_by_weight = {row["lm_weight"]: row["val_cer_beam_lm"] for row in tuned["grid"]}
    # no LM misreads the ambiguous key, an overweighted LM overrules the clear one; only 0.25 gets both
    assert cer_by_weight[0.0] > 0 and cer_by_weight[8.0] > 0 and cer_by_weight[0.25] == 0
    assert (tuned["lm_weight"], tuned["insertion_bonus"], tuned["val_cer_beam_lm"]) == (0.25, 0.0, 0.0)


# ---------------------------------------------------------------- models


@pytest.mark.parametrize(
    "name, expected",
    [("tiny", 2_217_699), ("small", 5_388_131), ("large", 109_411_939), ("tds", 5_293_315)],
)
def test_parameter_counts_equal_the_papers(name, expected):
    # the TDS-ConvNet as emg2qwerty builds it: one spectrogram statistic per electrode
    overrides = {"spec_norm": "electrode"} if name == "tds" else {}
    with torch.device("meta"):
        model = EmgCTCModel(EmgCTCConfig.named(name, **overrides))
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("name", ["128x2", "tds"])
def test_the_ctc_head_starts_on_the_blank_and_a_saved_head_is_kept(name, tmp_path):
    torch.manual_seed(0)
    emg = torch.randn(2, 32, 4000)
    for prob in (0.5, 0.9):
        model = EmgCTCModel(EmgCTCConfig.named(name, dropout=0.0, blank_init_prob=prob)).eval()
        blank = model(emg).log_probs[..., BLANK].detach().exp()
        assert abs(float(blank.mean()) - prob) < 0.1
    plain = EmgCTCModel(EmgCTCConfig.named(name, dropout=0.0, blank_init_prob=None)).eval()
    assert float(plain(emg).log_probs[..., BLANK].detach().exp().mean()) < 0.05  # near 1 / 99
    # loading keeps the trained bias: the init is for new models only
    with torch.no_grad():
        model.head.bias.normal_()
    model.save_pretrained(tmp_path)
    assert torch.equal(EmgCTCModel.from_pretrained(tmp_path).head.bias, model.head.bias)


def test_the_frequency_spectrogram_norm_gives_every_bin_unit_variation_over_time():
    """A static spectral profile (here 0 to -6 log10 units across bins) with a small variation over
    time: per electrode it dominates the statistic and the variation stays small; per electrode and
    bin every feature varies with unit scale over time."""
    profile = torch.linspace(0.0, -6.0, 33)[None, None, :, None]
    spec = profile + 0.3 * torch.randn(8, 32, 33, 200)
    with torch.no_grad():
        electrode = SpectrogramNorm(32, 33, "electrode").train()(spec)
        frequency = SpectrogramNorm(32, 33, "frequency").train()(spec)
    assert float(electrode.std(dim=-1).mean()) < 0.2
    assert abs(float(frequency.std(dim=-1).mean()) - 1.0) < 0.05
    assert float(frequency.mean(dim=(0, 3)).abs().max()) < 1e-4


def test_every_width_and_depth_builds_and_runs():
    for width in WIDTHS:
        for depth in DEPTHS:
            with torch.device("meta"):
                model = EmgCTCModel(EmgCTCConfig.named(f"{width}x{depth}"))
            assert len(model.backbone.encoder.blocks) == depth
    model = EmgCTCModel(EmgCTCConfig.named("128x2")).eval()
    out = model(torch.randn(2, 32, 10_000))
    assert out.log_probs.shape == (2, 498, N_CLASSES) and int(model.output_lengths(10_000)) == 498
    assert out.log_probs.exp().sum(-1).allclose(torch.ones(2, 498), atol=1e-5)


def test_streaming_equals_full_window_inference():
    torch.manual_seed(0)
    model = EmgCTCModel(EmgCTCConfig.named("128x2", causal=True, rvq_levels=2, rvq_codebook_size=32))
    model(torch.randn(2, 32, 4000))  # k-means initialises the bottleneck's codebooks
    model.eval()
    emg = torch.randn(1, 32, 3000)
    with torch.no_grad():
        full = model(emg)
    frames = full.log_probs.shape[1]
    for max_frames in (0, frames):  # a growing cache, and a preallocated one (fixed shapes, CUDA graphs)
        state = model.start_stream(1, max_frames=max_frames)
        steps = [model.stream(state, emg[:, :, i : i + 20]) for i in range(0, emg.shape[2], 20)]
        streamed = torch.cat(steps, dim=1)
        assert streamed.shape == full.log_probs.shape
        torch.testing.assert_close(streamed, full.log_probs, atol=1e-4, rtol=0)
    # the preallocated cache is full: one more frame is refused, not written out of bounds
    with pytest.raises(ValueError, match="outgrew"):
        for i in range(0, 200, 20):
            model.stream(state, emg[:, :, i : i + 20])
    # the non-causal model sees the future, so it refuses to stream
    with pytest.raises(ValueError, match="causal"):
        EmgCTCModel(EmgCTCConfig.named("128x2")).start_stream(1)


def test_causal_model_ignores_the_future():
    model = EmgCTCModel(EmgCTCConfig.named("128x2", causal=True)).eval()
    emg = torch.randn(1, 32, 4000)
    changed = emg.clone()
    changed[:, :, 3000:] = torch.randn(1, 32, 1000)
    with torch.no_grad():
        a, b = model(emg).log_probs, model(changed).log_probs
    first_touched = (3000 - 41) // 20 + 1  # frames whose samples all precede sample 3000
    torch.testing.assert_close(a[:, :first_touched], b[:, :first_touched])
    assert not torch.allclose(a[:, -1], b[:, -1])


@pytest.mark.parametrize("name", ["128x2", "tds"])
def test_ctc_skips_exactly_the_frames_that_see_only_the_past_context(name):
    """The frames `context_frames` drops see nothing of the labelled span: changing the window from
    sample PAST on leaves their emissions unchanged (causal model), and the next frame sees it."""
    from finetune.emg2qwerty import context_frames
    from finetune.emg_data import PAST

    model = EmgCTCModel(EmgCTCConfig.named(name, causal=True)).eval()
    skip = context_frames(model)
    emg = torch.randn(1, 32, 10000)
    changed = emg.clone()
    changed[:, :, PAST:] = torch.randn(1, 32, 10000 - PAST)
    with torch.no_grad():
        a, b = model(emg).log_probs, model(changed).log_probs
    if name == "tds":  # its first output frame already ends inside the labelled span
        assert skip == 0
    else:
        assert skip == 88
        torch.testing.assert_close(a[:, :skip], b[:, :skip])
    assert not torch.allclose(a[:, skip], b[:, skip])


def test_rvq_bottleneck_exports_nearest_codes_and_reports_compression():
    config = EmgCTCConfig.named("small", rvq_levels=2, rvq_codebook_size=1024)
    assert config.compression() == {"bits_per_frame": 20.0, "vs_latent": 409.6, "vs_raw": 1024.0}
    model = EmgCTCModel(EmgCTCConfig.named("128x2", rvq_levels=2, rvq_codebook_size=16))
    model(torch.randn(2, 32, 4000))
    model.eval()
    codes = model.export_tokens(torch.randn(1, 32, 4000))
    assert codes.shape == (1, int(model.output_lengths(4000)), 2) and codes.max() < 16
    with pytest.raises(ValueError, match="no RVQ"):
        EmgCTCModel(EmgCTCConfig.named("128x2")).export_tokens(torch.randn(1, 32, 4000))


# ---------------------------------------------------------------- data and training


def test_windows_are_reproducible_and_labelled(emg_data):
    _, parts = load_split(emg_data, emg_data / "splits" / "generic.yaml")
    sampler = WindowSampler(parts["train"], batch_size=4, seed=3)
    a, b = sampler.batch(7), sampler.batch(7)
    assert torch.equal(a["emg"], b["emg"]) and torch.equal(a["targets"], b["targets"])
    assert a["emg"].shape == (4, 32, 10_000)
    assert not torch.equal(a["emg"], sampler.batch(8)["emg"])
    # targets: real classes up to the length, padding after, never a class
    for row, n in zip(a["targets"], a["target_lengths"]):
        assert (row[:n] >= 0).all() and (row[:n] < BLANK).all() and (row[n:] == PAD_LABEL).all()
    assert int(a["target_lengths"].sum()) > 0


def _train(emg_data, out, **overrides):
    from finetune.emg2qwerty import CTCTrainArgs, finetune

    args = dict(
        data=str(emg_data),
        model="128x2",
        steps=8,
        batch_size=2,
        warmup_steps=2,
        eval_every=4,
        log_every=1,
        save_every=4,
        beam=4,
        lm_order=3,
        lm_weights="0.5",  # LM tuning runs, over two settings only (time)
        insertion_bonuses="0,0.5",
        out=str(out),
        progress=False,
    )
    return finetune(CTCTrainArgs(**{**args, **overrides}))


def _losses(run) -> list[float]:
    return [
        r["train/loss"]
        for r in map(json.loads, (run / "log.jsonl").read_text().splitlines())
        if "train/loss" in r
    ]


def test_training_resumes_the_same_loss_curve_and_reloads(emg_data, tmp_path):
    whole = _train(emg_data, tmp_path / "whole")
    assert {"cer_greedy", "cer_beam", "cer_beam_lm"} <= set(whole["test"])
    assert len(whole["lm_tuning"]["grid"]) == 2 and whole["test"]["lm_weight"] == 0.5
    _train(emg_data, tmp_path / "split", stop_at=4)
    _train(emg_data, tmp_path / "split")
    assert _losses(tmp_path / "split") == pytest.approx(_losses(tmp_path / "whole"), rel=1e-5)
    assert _losses(tmp_path / "whole")[-1] < _losses(tmp_path / "whole")[0]
    model = EmgCTCModel.from_pretrained(tmp_path / "whole" / "final").eval()
    signal = torch.randn(32, 6000)
    again = EmgCTCModel.from_pretrained(tmp_path / "whole" / "final").eval()
    torch.testing.assert_close(model.session_log_probs(signal), again.session_log_probs(signal))


def test_every_family_trains_end_to_end(emg_data, tmp_path):
    """TDS, RVQ bottleneck, distillation, personalization and the foundation-backed model run through
    the same loop and write their results."""
    from foundation.config import FoundationConfig
    from foundation.model import BiotokFoundation
    from tokenizer.model import BiotokTokenizer

    teacher = tmp_path / "teacher"
    _train(emg_data, teacher, steps=2)
    runs = {
        "tds": dict(model="tds"),
        "rvq": dict(rvq_levels=2, rvq_codebook_size=16),
        "distilled": dict(model="128x2", teacher=str(teacher / "final")),
        "personal": dict(init_from=str(teacher / "final"), split=str(emg_data / "splits" / "user0.yaml")),
    }
    tokenizer = BiotokTokenizer.from_pretrained(
        "pretrained_models/tokenizer-small-v1"
    )  # knows left_*/right_*
    foundation = BiotokFoundation(
        FoundationConfig.from_tokenizer(tokenizer.config, "tiny", n_target_levels=2)
    )
    foundation.save_pretrained(tmp_path / "foundation")
    runs["foundation"] = dict(model="foundation", foundation=str(tmp_path / "foundation"))
    for name, overrides in runs.items():
        results = _train(emg_data, tmp_path / name, steps=2, eval_every=2, **overrides)
        assert "cer_greedy" in results["test"], name
    assert json.loads((tmp_path / "rvq" / "results.json").read_text())["compression"]["bits_per_frame"] == 8
    # the foundation-backed model emits 10 frames per 200 ms patch: 50 Hz, enough for 7 keys/s
    model = EmgCTCModel.from_pretrained(tmp_path / "foundation" / "final")
    assert model.config.frame_rate == 50.0
    frozen = model.backbone.tokenizer.state_dict()
    for key, value in tokenizer.state_dict().items():
        torch.testing.assert_close(frozen[key], value)


def test_table_plan_adds_dependencies_and_puts_them_first():
    from finetune.emg2qwerty_table import TableArgs, _plan, _runs

    args = TableArgs(
        seeds="2", rows="TINY,TINY personalized", runs="TINY distilled from SMALL@1", personal_split=__file__
    )
    plan = _plan(args, _runs(args))
    assert set(plan) == {
        ("TINY", 2),
        ("TINY personalized", 2),
        ("SMALL", 1),
        ("TINY distilled from SMALL", 1),
    }
    assert plan.index(("SMALL", 1)) < plan.index(("TINY distilled from SMALL", 1))
    assert plan.index(("TINY", 2)) < plan.index(("TINY personalized", 2))
    # the LARGE row only where asked for (the hard tier's)
    assert "LARGE" not in {name for name, _, _ in _runs(TableArgs())}
    large = TableArgs(seeds="0,1", rows="LARGE", large=True)
    assert _plan(large, _runs(large)) == [("LARGE", 0), ("LARGE", 1)]
    assert dict((name, flags) for name, flags, _ in _runs(large))["LARGE"][:2] == ["--model", "large"]
    # no foundation folder: no such row to ask for
    with pytest.raises(ConfigError, match="foundation-backed@0"):
        _plan(TableArgs(seeds="", runs="foundation-backed@0"), _runs(TableArgs()))


def test_table_runs_go_to_the_least_busy_gpu():
    from finetune.emg2qwerty_table import GpuPool

    pool = GpuPool("0,1")
    assert [pool.take(), pool.take(), pool.take()] == ["0", "1", "0"]
    pool.give("1")  # GPU 1 is idle again, GPU 0 still runs two
    assert pool.take() == "1"
    assert GpuPool("").take() is None  # no ids: every run sees the default devices


def test_shipping_an_unfinished_ctc_run_is_refused_naming_what_is_missing(tmp_path):
    from data_prep.errors import BiosignalError
    from finetune.ctc_card import CTCCardArgs, ship

    (tmp_path / "run").mkdir()
    with pytest.raises(BiosignalError, match="results.json"):
        ship(CTCCardArgs(run=str(tmp_path / "run"), out=str(tmp_path / "model"), data="synthetic"))
    assert not (tmp_path / "model").exists()
