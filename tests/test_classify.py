"""Classification: subject-independent folds, metrics against scikit-learn, layer-wise lr decay per
block, save/load, and a tiny end-to-end comparison on the shared EEGBCI recordings."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.signal as sps
import torch

from data_prep.errors import BiosignalError, ConfigError
from data_prep.presets import patchify
from finetune.classifier import BiotokClassifier, Head, Pool, Readout, TopBlocks, layer_decay_groups
from finetune.classify import ClassifyArgs, csp_lda, fit, merge_results, run
from finetune.classify_data import ClassifyTask, group_folds, load_epochs
from finetune.metrics import balanced_accuracy, cohen_kappa, confusion_matrix, roc_auc
from foundation.config import FoundationConfig
from foundation.model import BiotokFoundation
from tokenizer.model import BiotokTokenizer

SHIPPED = Path(__file__).resolve().parents[1] / "pretrained_models" / "tokenizer-small"


@pytest.mark.parametrize("n_folds", [0, 2, 3, 5])
def test_folds_never_share_a_group(n_folds):
    groups = np.repeat([f"s{i}" for i in range(7)], [3, 5, 2, 4, 4, 1, 6])
    folds = group_folds(groups, n_folds, seed=1)
    assert len(folds) == (7 if n_folds in (0,) else n_folds)
    tested = np.concatenate([test for _, test in folds])
    assert sorted(tested.tolist()) == list(range(len(groups)))  # every window tested exactly once
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(train) + len(test) == len(groups)


def test_myo_folds_split_by_repetition(real):
    task = ClassifyTask.load("myo_gestures")
    epochs = load_epochs(task, real)
    assert len(set(epochs.groups)) == 12 and epochs.data.shape[1:] == (8, 400)
    for train, test in group_folds(epochs.groups, task.folds):
        assert not set(epochs.groups[train]) & set(epochs.groups[test])
        assert set(epochs.labels[test]) == set(range(5))  # a repetition holds every gesture


def test_band_limited_motor_imagery_keeps_the_trials_and_drops_the_slow_band(real):
    # eegbci_mi_mu: eegbci_mi's trials in 8-30 Hz only (the slow frontal confound, docs/BENCHMARKS.md);
    # one subject's run through the task's own preset, against the full-band task
    from data_prep.corpus import read_source
    from data_prep.presets import get_preset, preprocess

    full, mu = ClassifyTask.load("eegbci_mi"), ClassifyTask.load("eegbci_mi_mu")
    assert (mu.classes, mu.tmin, mu.tmax, mu.folds, mu.group_by) == (full.classes, 0.0, 4.0, 0, "subject")
    assert [s.path for s in mu.source_specs] == [s.path for s in full.source_specs]
    path = real / "eegbci" / "S001R04.edf"
    powers = {}
    for task in (full, mu):
        preset = get_preset(task.preset)
        rec = preprocess(read_source(path, task.source_specs[0], preset.modality, "S001R04.edf"), preset)
        freqs, psd = sps.welch(rec.data, fs=preset.sfreq, nperseg=int(preset.sfreq) * 2, axis=-1)
        powers[task.name] = (
            psd[:, (freqs > 0.5) & (freqs < 4)].mean(),
            psd[:, (freqs > 10) & (freqs < 25)].mean(),
        )
    slow_full, band_full = powers["eegbci_mi"]
    slow_mu, band_mu = powers["eegbci_mi_mu"]
    assert slow_mu < 0.05 * slow_full and band_mu > 0.5 * band_full  # the slow band gone, mu/beta kept
    # and without the frontal electrodes, where the 8-30 Hz band's skirt still leaves the confound
    clean = ClassifyTask.load("eegbci_mi_mu_nofrontal")
    assert (
        clean.preset == mu.preset and len(clean.channels) == 45 and {"C3", "Cz", "C4"} <= set(clean.channels)
    )
    assert not [
        c for c in clean.channels if c.upper().startswith(("FP", "AF", "F")) and not c.startswith("FC")
    ]


def test_mid_window_task_cuts_the_same_trials_without_their_ends(real):
    # eegbci_mi_mu_nofrontal_mid: the same trials at 0.5-3.5 s after the cue (the cue's onset and the trial's
    # end hide one subject's imagery, docs/BENCHMARKS.md): each window is the 0-4 s window's middle 3 s
    from data_prep.corpus import read_source
    from data_prep.presets import get_preset, preprocess
    from finetune.classify_data import _cut

    whole, mid = ClassifyTask.load("eegbci_mi_mu_nofrontal"), ClassifyTask.load("eegbci_mi_mu_nofrontal_mid")
    assert (
        (mid.tmin, mid.tmax) == (0.5, 3.5) and mid.channels == whole.channels and mid.preset == whole.preset
    )
    preset = get_preset(mid.preset)
    source = mid.source_specs[0]
    rec = preprocess(read_source(real / "eegbci" / "S001R04.edf", source, "eeg", "S001R04.edf"), preset)
    rec = rec.pick(mid.channels)
    cut = round(0.5 * preset.sfreq)
    whole_windows = _cut(rec, source, whole, round(4.0 * preset.sfreq))
    mid_windows = _cut(rec, source, mid, round(3.0 * preset.sfreq))
    assert len(mid_windows) == len(whole_windows) == 15
    for (window, label), (full, full_label) in zip(mid_windows, whole_windows):
        assert label == full_label and window.shape[-1] == 3 * preset.patch_len
        np.testing.assert_array_equal(window, full[:, cut:-cut])


def test_metrics_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 200)
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 4, 200))
    assert balanced_accuracy(labels, predictions, 4) == pytest.approx(
        metrics.balanced_accuracy_score(labels, predictions)
    )
    assert cohen_kappa(labels, predictions, 4) == pytest.approx(
        metrics.cohen_kappa_score(labels, predictions)
    )
    assert (confusion_matrix(labels, predictions, 4) == metrics.confusion_matrix(labels, predictions)).all()
    binary = rng.integers(0, 2, 150)
    scores = np.round(binary * 0.3 + rng.random(150), 1)  # rounded: ties must count half
    assert roc_auc(binary, scores) == pytest.approx(metrics.roc_auc_score(binary, scores))


@pytest.fixture(scope="module")
def foundations(tmp_path_factory):
    """Untrained tiny token and raw-patch foundation models over the shipped tokenizer's codes."""
    root = tmp_path_factory.mktemp("foundations")
    tokenizer = BiotokTokenizer.from_pretrained(SHIPPED)
    for kind in ("tokens", "patches"):
        torch.manual_seed(0)
        config = FoundationConfig.from_tokenizer(tokenizer.config, "tiny", input_kind=kind)
        BiotokFoundation(config).save_pretrained(root / kind)
        # the strict protocol's layout: one model per fold group, each pretrained without its subjects
        # (`biotok pretrain --holdout_subjects` writes them into pretrain_args.json beside final/)
        for group, held in (("a", ["001", "002"]), ("b", ["003"])):
            BiotokFoundation(config).save_pretrained(root / f"{kind}_groups" / group / "final")
            (root / f"{kind}_groups" / group / "pretrain_args.json").write_text(
                json.dumps({"holdout_subjects": json.dumps({"eegbci": held}), "holdout_fraction": 0.25})
            )
    return root


def test_layer_decay_is_per_block(foundations):
    model = BiotokClassifier.from_foundation(
        BiotokFoundation.from_pretrained(foundations / "tokens"), ["a", "b"], "eeg"
    )
    n_layers = model.foundation.config.n_layers
    groups = layer_decay_groups(model, lr=1e-3, decay=0.5, weight_decay=0.05)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    for i, block in enumerate(model.foundation.encoder.blocks):
        rates = {lr_of[id(p)] for p in block.parameters()}
        assert len(rates) == 1  # one rate per block, not per tensor
        assert rates.pop() == pytest.approx(1e-3 * 0.5 ** (n_layers - i))
    assert lr_of[id(model.head.linear.weight)] == pytest.approx(1e-3)
    assert lr_of[id(model.foundation.code_embed.weight)] == pytest.approx(1e-3 * 0.5 ** (n_layers + 1))
    assert len(lr_of) == sum(1 for p in model.parameters() if p.requires_grad)


def test_truncated_foundation_reads_a_middle_layer(foundations):
    full = BiotokFoundation.from_pretrained(foundations / "tokens").eval()
    config = full.config
    ids = full.channel_ids([["C3", "Cz", "C4"]], "eeg").expand(2, -1)
    codes = torch.randint(0, config.codebook_size, (2, 3, 4, config.n_scales, config.n_read_levels))
    first_block = []
    full.encoder.blocks[0].register_forward_hook(lambda _, __, out: first_block.append(out))
    with torch.no_grad():
        top = full.encode(ids, "eeg", codes=codes)
        cut = full.truncated(1)
        middle = cut.encode(ids, "eeg", codes=codes)
    # the cut model's states are the full model's after its first block, under the same final norm
    assert cut.config.n_layers == 1 and len(cut.encoder.blocks) == 1 and full.config.n_layers == 2
    assert torch.allclose(middle, full.encoder.ln(first_block[0]).view_as(middle), atol=1e-6)
    assert not torch.allclose(middle, top, atol=1e-3)
    with pytest.raises(ValueError, match="n_blocks 3: expected 1 to the model's 2 blocks"):
        full.truncated(3)


def test_classifier_round_trips(foundations, tmp_path):
    model = BiotokClassifier.from_foundation(
        BiotokFoundation.from_pretrained(foundations / "patches"), ["a", "b", "c"], "eeg"
    ).eval()
    ids = model.foundation.channel_ids([["C3", "Cz", "C4"]], "eeg")
    patches = torch.randn(2, 3, 4, 200)
    model.save_pretrained(tmp_path / "clf")
    loaded = BiotokClassifier.from_pretrained(tmp_path / "clf").eval()
    with torch.no_grad():
        assert torch.equal(
            model(ids.expand(2, -1), patches=patches), loaded(ids.expand(2, -1), patches=patches)
        )
    assert loaded.config.class_names == ["a", "b", "c"]


def test_end_to_end_comparison_on_eegbci_eyes(real, foundations, tmp_path):
    out = tmp_path / "eyes"
    results = run(
        ClassifyArgs(
            task="eegbci_eyes",
            root=str(real),
            tokenizer=str(SHIPPED),
            foundation=str(foundations / "tokens_groups"),
            foundation_patches=str(foundations / "patches_groups"),
            codes_file=str(tmp_path / "eyes_codes.safetensors"),
            out=str(out),
            seeds="0",
            epochs=2,
            rows="foundation (fine-tuned),raw-patch foundation (linear probe),classical",
            progress=False,
        )
    )
    assert set(results["rows"]) == {
        "foundation (fine-tuned)",
        "raw-patch foundation (linear probe)",
        "classical",
    }
    for row, body in results["rows"].items():
        folds = body["seeds"][0]["folds"]
        assert [f["test_groups"] for f in folds] == [["001"], ["002"], ["003"]]  # leave one subject out
        if row != "classical":  # strict protocol: each fold's model never saw its test subject
            assert [Path(f["foundation"]).parent.name for f in folds] == ["a", "a", "b"]
        assert 0.0 <= body["summary"]["balanced_accuracy"]["mean"] <= 1.0
        assert np.array(body["confusion"]).sum() == 90  # every window tested once per seed
    # the eyes-closed alpha rise is strong: log band power + logistic regression finds it across subjects
    assert results["rows"]["classical"]["summary"]["balanced_accuracy"]["mean"] > 0.75
    assert json.loads((out / "results.json").read_text())["n_epochs"] == 90
    # the codes file stands in for the recordings and the tokenizer (what travels to a GPU machine):
    # the same folds, the same fine-tuned result; rows that need the signal are skipped, saying why
    again = run(
        ClassifyArgs(
            task="eegbci_eyes",
            root=str(tmp_path / "no_recordings_here"),
            foundation=str(foundations / "tokens_groups"),
            codes_file=str(tmp_path / "eyes_codes.safetensors"),
            out=str(tmp_path / "again"),
            seeds="0",
            epochs=2,
            rows="foundation (fine-tuned),classical",
            progress=False,
        )
    )
    assert "holds the codes only" in again["skipped"]["classical"]
    # a codes file answers only for the task it was written for
    with pytest.raises(BiosignalError, match="written for task 'eegbci_eyes'"):
        run(
            ClassifyArgs(
                task="eegbci_mi",
                foundation=str(foundations / "tokens_groups"),
                codes_file=str(tmp_path / "eyes_codes.safetensors"),
                out=str(tmp_path / "wrong"),
                progress=False,
            )
        )
    first, second = (r["rows"]["foundation (fine-tuned)"]["seeds"][0]["folds"] for r in (results, again))
    assert [f["balanced_accuracy"] for f in first] == [f["balanced_accuracy"] for f in second]
    assert (
        (out / "table.md").exists()
        and (out / "confusion.png").exists()
        and (out / "per_subject.png").exists()
    )


def test_strict_protocol_refuses_a_model_that_pretrained_on_a_test_subject(real, foundations, tmp_path):
    args = dict(task="eegbci_eyes", root=str(real), tokenizer=str(SHIPPED), seeds="0", epochs=1)
    args |= dict(rows="foundation (linear probe)", out=str(tmp_path / "x"), progress=False)
    # the single untrained model saved no held-out subjects: under the strict default it may test no one
    with pytest.raises(ConfigError, match=r"strict protocol: no model held test subjects \['001'\]"):
        run(ClassifyArgs(foundation=str(foundations / "tokens"), **args))
    # one model for every fold is the transductive variant, and only on request
    with pytest.raises(ConfigError, match="give one foundation model"):
        run(ClassifyArgs(foundation=str(foundations / "tokens_groups"), protocol="transductive", **args))
    results = run(ClassifyArgs(foundation=str(foundations / "tokens"), protocol="transductive", **args))
    assert (
        results["protocol"] == "transductive"
        and "transductive protocol" in (tmp_path / "x" / "table.md").read_text()
    )


def test_held_out_protocol_tests_only_the_subjects_pretraining_never_saw(real, foundations, tmp_path):
    args = dict(task="eegbci_eyes", root=str(real), tokenizer=str(SHIPPED), seeds="0", epochs=1)
    args |= dict(rows="foundation (linear probe)", out=str(tmp_path / "x"), progress=False)
    # group b held out subject 003 only: of the three leave-one-subject-out folds only 003's runs
    results = run(
        ClassifyArgs(foundation=str(foundations / "tokens_groups" / "b"), protocol="held_out", **args)
    )
    folds = results["rows"]["foundation (linear probe)"]["seeds"][0]["folds"]
    assert [list(f["per_subject"]) for f in folds] == [["003"]]
    assert "held_out protocol" in (tmp_path / "x" / "table.md").read_text()
    # a model that held no one out leaves nothing to test
    with pytest.raises(ConfigError, match="held_out: no fold's test subjects"):
        run(ClassifyArgs(foundation=str(foundations / "tokens"), protocol="held_out", **args))


def test_csp_probe_is_csp_on_the_chosen_layers_centred_states(real, foundations, tmp_path):
    args = dict(task="eegbci_eyes", root=str(real), tokenizer=str(SHIPPED), seeds="0,1", epochs=1)
    args |= dict(codes_file=str(tmp_path / "codes.safetensors"))  # tokenized once, by the first run
    args |= dict(rows="foundation (CSP probe)", progress=False, foundation=str(foundations / "tokens_groups"))
    top = run(ClassifyArgs(out=str(tmp_path / "top"), **args))["rows"]["foundation (CSP probe)"]
    cut = run(ClassifyArgs(out=str(tmp_path / "cut"), n_blocks=1, **args))["rows"]["foundation (CSP probe)"]
    # closed form: the seeds agree; strict: each fold reads the model that held its subject out
    assert [f["balanced_accuracy"] for f in top["seeds"][0]["folds"]] == [
        f["balanced_accuracy"] for f in top["seeds"][1]["folds"]
    ]
    fold = next(f for f in cut["seeds"][0]["folds"] if f["test_groups"] == ["003"])
    assert fold["foundation"].endswith("b/final")
    # the cut model's row is CSP + LDA on the centred states after its first block, computed here apart
    task = ClassifyTask.load("eegbci_eyes")
    epochs = load_epochs(task, str(real), progress=False)
    test = epochs.subjects == "003"
    model = (
        BiotokFoundation.from_pretrained(foundations / "tokens_groups" / "b" / "final").truncated(1).eval()
    )
    tokenizer = BiotokTokenizer.from_pretrained(SHIPPED).eval()
    patches = torch.from_numpy(patchify(epochs.data, epochs.preset.patch_len))
    with torch.no_grad():
        ids = tokenizer.channel_ids([epochs.ch_names], "eeg").expand(len(patches), -1)
        codes = tokenizer.encode_patches(patches, ids, "eeg")
        ids = model.channel_ids([epochs.ch_names], "eeg").expand(len(patches), -1)
        hidden = model.encode(ids, "eeg", codes=codes)
    samples = (hidden - hidden.mean(dim=2, keepdim=True)).flatten(2).double().numpy()
    probabilities = csp_lda(samples[~test], epochs.labels[~test], samples[test])
    expected = balanced_accuracy(epochs.labels[test], probabilities.argmax(axis=1), 2)
    assert fold["balanced_accuracy"] == pytest.approx(expected)
    top_scores = [f["balanced_accuracy"] for f in top["seeds"][0]["folds"]]
    assert top_scores != [f["balanced_accuracy"] for f in cut["seeds"][0]["folds"]]  # another layer
    # --csp_init: the probe's spatial_power pooling and head start at CSP (its 8 first filters) + LDA on
    # those same states, so at a probe lr of 0 the row is that closed form, computed here apart
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    from finetune.classify import csp_compact, fit_csp

    init = dict(args, rows="foundation (linear probe)", seeds="0", pooling="spatial_power", probe_lr=0.0)
    started = run(ClassifyArgs(out=str(tmp_path / "init"), n_blocks=1, csp_init=True, **init))["rows"]
    folds = started["foundation (linear probe)"]["seeds"][0]["folds"]
    fold = next(f for f in folds if f["test_groups"] == ["003"])
    csp = fit_csp(csp_compact(samples[~test]), epochs.labels[~test], 8)
    lda = LinearDiscriminantAnalysis().fit(csp.transform(samples[~test]), epochs.labels[~test])
    expected = balanced_accuracy(epochs.labels[test], lda.predict(csp.transform(samples[test])), 2)
    print("csp_init", fold["balanced_accuracy"], expected)
    assert fold["balanced_accuracy"] == pytest.approx(expected)


def test_csp_probe_picks_its_depth_on_the_training_subjects_alone(real, foundations, tmp_path, capsys):
    args = dict(task="eegbci_eyes", root=str(real), tokenizer=str(SHIPPED), seeds="0", epochs=1)
    args |= dict(rows="foundation (CSP probe)", progress=False, foundation=str(foundations / "tokens_groups"))
    args |= dict(codes_file=str(tmp_path / "codes.safetensors"))  # tokenized once, by the first run
    picked = run(ClassifyArgs(out=str(tmp_path / "auto"), n_blocks=-1, **args))
    depths = [
        int(line.split("depth ")[1].split()[0])
        for line in capsys.readouterr().out.splitlines()
        if "depth " in line
    ]
    assert len(depths) == 3 and set(depths) <= {1, 2}  # one choice per fold, among the model's blocks
    # each fold scores as the row run at the depth it chose
    fixed = {
        depth: run(ClassifyArgs(out=str(tmp_path / f"d{depth}"), n_blocks=depth, **args))
        for depth in set(depths)
    }
    for k, depth in enumerate(depths):
        score = fixed[depth]["rows"]["foundation (CSP probe)"]["seeds"][0]["folds"][k]["balanced_accuracy"]
        assert picked["rows"]["foundation (CSP probe)"]["seeds"][0]["folds"][k]["balanced_accuracy"] == score


def test_depth_search_is_refused_for_the_trained_rows(real, foundations, tmp_path):
    args = dict(task="eegbci_eyes", root=str(real), tokenizer=str(SHIPPED), seeds="0", epochs=1, n_blocks=-1)
    args |= dict(out=str(tmp_path / "x"), progress=False, foundation=str(foundations / "tokens_groups"))
    with pytest.raises(
        ConfigError, match=r"-1 for the CSP probe alone \(the trained rows \['foundation \(linear probe\)'\]"
    ):
        run(ClassifyArgs(rows="foundation (linear probe),foundation (CSP probe)", **args))


def test_epochs_from_a_prepared_corpus_and_from_mne(real, tmp_path):
    import mne

    from data_prep.corpus import Corpus, load_sources, prepare_corpus
    from data_prep.prepare import resolve_sources
    from finetune.classify_data import Epochs

    spec = next(s for s in load_sources(resolve_sources("shared_real")) if s.name == "eegbci")
    corpus = Corpus(prepare_corpus(spec, real, tmp_path / "corpora", progress=False).path)
    eyes = Epochs.from_corpus(corpus, classes=["eyes_open", "eyes_closed"])
    assert eyes.data.shape == (90, 64, 800) and np.bincount(eyes.labels).tolist() == [45, 45]
    assert sorted(set(eyes.subjects)) == ["001", "002", "003"]
    # the same windows as the task reader cuts from the files
    task = load_epochs(ClassifyTask.load("eegbci_eyes"), real)
    assert np.allclose(np.sort(eyes.data.ravel())[::997], np.sort(task.data.ravel())[::997], atol=1e-5)

    raw = mne.io.read_raw_edf(real / "eegbci" / "S001R04.edf", preload=True, verbose="error")
    events, event_id = mne.events_from_annotations(raw, verbose="error")
    picked = {name: event_id[name] for name in ("T1", "T2")}
    mne_epochs = mne.Epochs(raw, events, picked, tmin=0.0, tmax=4.0 - 1 / 160, baseline=None, verbose="error")
    epochs = Epochs.from_mne(mne_epochs, subjects="001", preset="eeg")
    assert epochs.classes == ["T1", "T2"] and epochs.data.shape == (15, 64, 800)
    assert np.bincount(epochs.labels).tolist() == [8, 7] and epochs.sfreq == 200.0


def test_label_fractions_keep_part_of_every_training_subjects_labels(real, tmp_path, capsys):
    from finetune.classify import label_subset

    task = ClassifyTask.load("eegbci_mi")
    epochs = load_epochs(task, str(real), progress=False)
    train = np.flatnonzero(epochs.subjects != "001")
    subset = label_subset(train, epochs, 0.1, seed=0)
    assert set(subset) <= set(train) and len(subset) == len(set(subset.tolist()))
    for subject in set(epochs.subjects[train].tolist()):  # every subject and class keeps ~10%
        for label in (0, 1):
            pool = ((epochs.subjects[train] == subject) & (epochs.labels[train] == label)).sum()
            kept = ((epochs.subjects[subset] == subject) & (epochs.labels[subset] == label)).sum()
            assert kept == max(1, round(0.1 * pool))
    assert np.array_equal(subset, label_subset(train, epochs, 0.1, seed=0))  # the same draw per seed
    assert not np.array_equal(subset, label_subset(train, epochs, 0.1, seed=1))
    assert np.array_equal(label_subset(train, epochs, 1.0, seed=0), train)
    # every row at every fraction: the table and the figure of label efficiency
    args = dict(task="eegbci_eyes", root=str(real), rows="classical", seeds="0", progress=False)
    results = run(ClassifyArgs(label_fractions="0.3,1", out=str(tmp_path / "eff"), **args))
    small = results["by_fraction"]["0.3"]["classical"]["seeds"][0]["folds"]
    full = results["rows"]["classical"]["seeds"][0]["folds"]
    assert [f["n_train"] for f in full] == [60, 60, 60]
    # without progress bars (a GPU call's log) every fold is logged as it ends, so a cut run keeps them
    logged = [line for line in capsys.readouterr().out.splitlines() if " | fold " in line]
    assert len(logged) == 2 * 3 and logged[-1].startswith("classical | labels 1 | seed 0 | fold 3/3: ")
    assert f"balanced accuracy {full[2]['balanced_accuracy']:.3f} in " in logged[-1]
    eyes = load_epochs(ClassifyTask.load("eegbci_eyes"), str(real), progress=False)
    for fold in small:  # 30% of each training subject's windows of each class
        pools = [
            ((eyes.subjects == subject) & (eyes.labels == label)).sum()
            for subject in {"001", "002", "003"} - set(fold["test_groups"])
            for label in (0, 1)
        ]
        assert fold["n_train"] == sum(max(1, round(0.3 * n)) for n in pools) < 0.4 * 60
    assert "30% of labels" in (tmp_path / "eff" / "table.md").read_text()
    assert (tmp_path / "eff" / "label_efficiency.png").exists()
    with pytest.raises(ConfigError, match="fractions must lie in"):
        run(ClassifyArgs(label_fractions="0,1", out=str(tmp_path / "bad"), **args))
    # one process per seed, merged: the same table as one run of both seeds
    args["seeds"] = "1"
    run(ClassifyArgs(label_fractions="0.3,1", out=str(tmp_path / "seed1"), **args))
    args["seeds"] = "0,1"
    both = run(ClassifyArgs(label_fractions="0.3,1", out=str(tmp_path / "both"), **args))
    merged = run(ClassifyArgs(merge=f"{tmp_path / 'eff'},{tmp_path / 'seed1'}", out=str(tmp_path / "merged")))
    for got, want in ((merged["rows"], both["rows"]), (merged["by_fraction"], both["by_fraction"])):
        assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True)
    assert (tmp_path / "merged" / "table.md").read_text() == (tmp_path / "both" / "table.md").read_text()
    with pytest.raises(ConfigError, match=r"seeds \[1\] twice"):
        run(ClassifyArgs(merge=f"{tmp_path / 'both'},{tmp_path / 'seed1'}", out=str(tmp_path / "bad")))
    # a classical-only part joins neural parts of another protocol; two neural parts of different protocols
    # do not merge
    neural = json.loads(
        (tmp_path / "seed1" / "results.json").read_text().replace('"classical"', '"from scratch"')
    )
    neural["protocol"] = "strict"
    joined = merge_results([json.loads((tmp_path / "eff" / "results.json").read_text()), neural])
    assert joined["protocol"] == "strict" and set(joined["rows"]) == {"classical", "from scratch"}
    with pytest.raises(ConfigError, match="differ in task or protocol"):
        merge_results([neural, {**neural, "protocol": "transductive"}])


def test_csp_lda_reads_the_mu_and_beta_bands():
    # two classes that differ only in the power of one channel, at 12 Hz or at 2 Hz: CSP + LDA works in
    # the 8-30 Hz band where imagined movement shows, so it finds the first and not the second
    from data_prep.presets import get_preset
    from finetune.classify import _classical
    from finetune.classify_data import Epochs

    rng = np.random.default_rng(0)
    t = np.arange(800) / 200.0
    labels = np.repeat([0, 1], 40)
    train, test = np.arange(0, 80, 2), np.arange(1, 80, 2)
    for hz, separable in ((12.0, True), (2.0, False)):
        data = rng.standard_normal((80, 4, 800))
        amplitude = np.where(labels == 1, 3.0, 0.5)[:, None]
        data[:, 0] += amplitude * np.sin(2 * np.pi * hz * t + rng.uniform(0, 6.3, (80, 1)))
        epochs = Epochs(
            data, labels, np.array(["s"] * 80), np.array(["s"] * 80), ["a", "b"], ["C3", "Cz", "C4", "Pz"],
            200.0, get_preset("eeg"),
        )  # fmt: skip
        accuracy = balanced_accuracy(labels[test], _classical("csp_lda", epochs, train, test, 0).argmax(1), 2)
        assert (accuracy > 0.9) if separable else (accuracy < 0.75), (hz, accuracy)


def test_csp_compact_windows_give_csp_lda_the_same_probabilities():
    # 2C columns per window that keep its mean and second moments (all CSP + LDA reads); the class shows
    # in one channel's offset and another's power, so a compaction that dropped either would differ
    from finetune.classify import csp_compact

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60)
    data = np.einsum("ij,njt->nit", rng.standard_normal((5, 5)), rng.standard_normal((60, 5, 50)))
    data[:, 0] += 0.1 * labels[:, None] + rng.normal(0, 0.2, (60, 1))
    data[:, 1] *= 1 + 0.05 * labels[:, None]
    compact = csp_compact(data, chunk=16)
    assert compact.shape == (60, 5, 10)
    expected = csp_lda(data[:40], labels[:40], data[40:])
    np.testing.assert_allclose(csp_lda(compact[:40], labels[:40], compact[40:]), expected, atol=1e-9)
    assert np.any(np.abs(expected[:, 0] - 0.5) < 0.45)  # not every window saturated: the check has teeth
    centred = csp_compact(data - data.mean(axis=2, keepdims=True))
    assert np.abs(csp_lda(centred[:40], labels[:40], centred[40:]) - expected).max() > 0.05


def test_channel_pooling_keeps_where_on_the_montage_a_state_sits(foundations, tmp_path):
    foundation = BiotokFoundation.from_pretrained(foundations / "tokens")
    torch.manual_seed(0)
    mean = BiotokClassifier.from_foundation(foundation, ["left", "right"], "eeg").eval()
    per_channel = BiotokClassifier.from_foundation(foundation, ["left", "right"], "eeg", "channels", 3).eval()
    ids = foundation.channel_ids([["C3", "Cz", "C4"]], "eeg").expand(2, -1)
    shape = (1, 3, 4, foundation.config.n_scales, foundation.config.n_levels)
    codes = torch.randint(0, foundation.config.codebook_size, shape)
    codes = torch.cat([codes, codes[:, [2, 1, 0]]])  # the second window: C3's and C4's codes swapped
    with torch.no_grad():
        hidden = foundation.eval().encode(ids, "eeg", codes=codes)
        pooled = per_channel.features(ids, codes=codes)
        assert pooled.shape == (2, 3 * foundation.config.d_model) and mean.features(
            ids, codes=codes
        ).shape == (2, foundation.config.d_model)
        torch.testing.assert_close(pooled.view(2, 3, -1), hidden.mean(dim=2))  # each channel in its own slot
    per_channel.save_pretrained(tmp_path / "clf")
    loaded = BiotokClassifier.from_pretrained(tmp_path / "clf").eval()
    assert (loaded.config.pooling, loaded.config.n_channels) == ("channels", 3)
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids, codes=codes), per_channel(ids, codes=codes))
    with pytest.raises(ValueError, match="needs n_channels"):
        BiotokClassifier.from_foundation(foundation, ["a", "b"], "eeg", "channels")


def test_spatial_power_pooling_reads_a_power_difference_that_means_cannot(foundations, tmp_path):
    # CSP's situation: the classes differ only in the power of one mixture of channels (C3 - C4); every
    # state's mean is the same for both, so mean and per-channel pooling see nothing to learn
    generator = torch.Generator().manual_seed(0)
    n, n_channels, n_patches, d = 240, 3, 8, 4
    labels = torch.arange(n) % 2
    hidden = torch.randn(n, n_channels, n_patches, d, generator=generator)
    source = torch.randn(n, n_patches, d, generator=generator) * (1 + 2 * labels[:, None, None])
    hidden[:, 0] += source
    hidden[:, 2] -= source  # in C3 and, sign-flipped, in C4: a spatial filter C3 - C4 finds it
    hidden += 3.0 * torch.randn(n_channels, 1, d, generator=generator)  # a fixed offset per channel
    channel_ids = torch.ones(n, n_channels, dtype=torch.long)
    train, test = torch.arange(n) < 160, torch.arange(n) >= 160
    args = ClassifyArgs(epochs=40, batch_size=32, mixed_precision="no")
    accuracy = {}
    for pooling, width in (("channels", n_channels * d), ("spatial_power", 2)):
        torch.manual_seed(0)
        readout = Readout(Pool(pooling, n_channels, n_filters=2), Head(width, 2, norm=pooling == "channels"))
        inputs = {"hidden": hidden[train], "channel_ids": channel_ids[train]}
        readout = fit(
            readout, inputs, labels[train], [{"params": list(readout.parameters()), "lr": 1e-2}], args, 0
        )
        with torch.no_grad():
            predicted = readout(hidden[test], channel_ids[test]).argmax(-1)
        accuracy[pooling] = balanced_accuracy(labels[test].numpy(), predicted.numpy(), 2)
    assert accuracy["spatial_power"] > 0.85 and accuracy["channels"] < 0.75, accuracy
    # the feature is CSP's: the log power (over patches and dimensions) of the filtered, patch-centred states
    pool = Pool("spatial_power", n_channels, n_filters=2)
    centred = hidden[:5] - hidden[:5].mean(dim=2, keepdim=True)
    filtered = torch.einsum("fc,bcpd->bfpd", pool.spatial_filters.detach(), centred)
    with torch.no_grad():
        torch.testing.assert_close(
            pool(hidden[:5], channel_ids[:5]), filtered.pow(2).mean((2, 3)).add(1e-6).log()
        )
    # and it saves and loads inside a classifier, the filters with it
    foundation = BiotokFoundation.from_pretrained(foundations / "tokens")
    model = BiotokClassifier.from_foundation(
        foundation, ["left", "right"], "eeg", "spatial_power", 3, n_filters=2
    )
    assert model.head.linear.in_features == 2
    model.save_pretrained(tmp_path / "clf")
    loaded = BiotokClassifier.from_pretrained(tmp_path / "clf")
    torch.testing.assert_close(loaded.pool.spatial_filters, model.pool.spatial_filters)


def test_static_batches_for_cuda_graphs_train_exactly_as_the_unpadded_ones():
    # --cuda_graphs pads every batch to batch_size (one shape for the graphs to replay) with rows that weigh
    # nothing: the trained weights must be those of the unpadded run; on a CPU only the padding applies
    generator = torch.Generator().manual_seed(0)
    n, n_channels, d = 70, 3, 4  # 70 = 2 x 32 + 6: the last batch of every epoch is padded
    hidden = torch.randn(n, n_channels, 2, d, generator=generator)
    labels = (hidden[:, 0, :, 0].mean(-1) > 0).long()
    inputs = {"hidden": hidden, "channel_ids": torch.ones(n, n_channels, dtype=torch.long)}
    trained, shapes = {}, {}
    for static in (False, True):
        torch.manual_seed(0)
        readout = Readout(Pool("channels", n_channels, 8), Head(n_channels * d, 2))
        seen = shapes.setdefault(static, set())
        readout.register_forward_hook(lambda module, args, out, seen=seen: seen.add(out.shape[0]))
        args = ClassifyArgs(
            epochs=3, batch_size=32, mixed_precision="no", balance_classes=True, cuda_graphs=static
        )
        groups = [{"params": list(readout.parameters()), "lr": 1e-2}]
        trained[static] = fit(readout, inputs, labels, groups, args, 0).state_dict()
    assert shapes == {False: {32, 6}, True: {32}}
    for key, value in trained[False].items():
        torch.testing.assert_close(trained[True][key], value, rtol=1e-5, atol=1e-6)


def test_a_codes_file_that_did_not_travel_is_named_in_the_error(tmp_path):
    # a missing codes file falls back to the recordings; when those are absent too (a GPU machine), the
    # error must name the codes file, not only the recordings' glob
    missing = tmp_path / "codes" / "eegbci_mi.safetensors"
    args = dict(task="eegbci_mi", root=str(tmp_path), seeds="0", out=str(tmp_path / "out"), progress=False)
    with pytest.raises(
        BiosignalError, match=r"eegbci_mi\.safetensors: codes_file: not found.*no file matches"
    ):
        run(ClassifyArgs(codes_file=str(missing), **args))
    # without a codes file the recordings' own error is unchanged
    with pytest.raises(BiosignalError, match="no file matches this source") as caught:
        run(ClassifyArgs(**args))
    assert caught.value.field == "path"


def _two_subject_codes(foundations):
    """The untrained tiny token foundation, and 8 windows of random codes on 3 channels: subject 001's
    four, then 002's, labels alternating."""
    from data_prep.presets import get_preset
    from finetune.classify import Inputs
    from finetune.classify_data import Epochs

    base = BiotokFoundation.from_pretrained(foundations / "tokens")
    n = 8
    epochs = Epochs(
        data=np.zeros((n, 3, 0), np.float32),
        labels=np.arange(n) % 2,
        subjects=np.array(["001"] * 4 + ["002"] * 4),
        groups=np.array(["001"] * 4 + ["002"] * 4),
        classes=["left", "right"],
        ch_names=["C3", "Cz", "C4"],
        sfreq=200.0,
        preset=get_preset("eeg"),
    )
    torch.manual_seed(0)
    codes = torch.randint(0, base.config.codebook_size, (n, 3, 4, base.config.n_scales, base.config.n_levels))
    return base, epochs, Inputs(epochs, "eeg", None, codes=codes)


def test_probe_first_fine_tunes_from_the_trained_probe(foundations):
    # LP-FT (`--probe_first`): with a fine-tuning learning rate of 0 the fine-tuned row is exactly the
    # linear probe; without it, exactly its untrained head
    from finetune.classify import _neural

    base, epochs, inputs = _two_subject_codes(foundations)
    train, test = np.arange(4), np.arange(4, 8)
    args = ClassifyArgs(epochs=3, batch_size=4, lr=0.0, probe_lr=0.05, progress=False)
    probe, _ = _neural("foundation (linear probe)", base, inputs, epochs, train, test, args, seed=0)
    plain, _ = _neural("foundation (fine-tuned)", base, inputs, epochs, train, test, args, seed=0)
    args.probe_first = True
    first, model = _neural("foundation (fine-tuned)", base, inputs, epochs, train, test, args, seed=0)
    np.testing.assert_array_equal(first, probe)
    assert not np.allclose(plain, probe, atol=1e-3)
    assert all(p.requires_grad for p in model.foundation.parameters())


def test_from_scratch_can_start_its_code_embeddings_from_the_tokenizers_codebooks(foundations):
    # `--scratch_code_init TOKENIZER`: the from-scratch row starts as init_code_embed_from_codebooks
    # makes it (then trains: one step here), not at random
    from finetune.classify import _neural

    tokenizer = BiotokTokenizer.from_pretrained(SHIPPED)
    base, epochs, inputs = _two_subject_codes(foundations)
    n, train, test = 8, np.arange(4), np.arange(4, 8)
    reference = BiotokFoundation(base.config)
    reference.init_code_embed_from_codebooks(tokenizer, seed=0)
    start = reference.code_embed.weight
    for flag, close in (("", False), (str(SHIPPED), True)):
        args = ClassifyArgs(epochs=1, batch_size=n, scratch_code_init=flag, progress=False)
        _, model = _neural("from scratch", base, inputs, epochs, train, test, args, seed=0)
        trained = model.foundation.code_embed.weight.detach().cpu()
        # one AdamW step moves a weight by at most ~lr; the random start is ~0.02 away everywhere
        assert torch.allclose(trained, start, atol=2 * args.lr) is close


def test_train_blocks_fine_tunes_only_the_top_of_the_pretrained_network(foundations):
    # `--train_blocks 1`: the last block, final norm, pooling and head move; the embeddings and every lower
    # block stay exactly as pretrained. The from-scratch row ignores it and trains everything.
    from finetune.classify import _neural

    base, epochs, inputs = _two_subject_codes(foundations)
    train, test = np.arange(4), np.arange(4, 8)
    args = ClassifyArgs(epochs=2, batch_size=4, lr=1e-2, train_blocks=1, progress=False)
    _, model = _neural("foundation (fine-tuned)", base, inputs, epochs, train, test, args, seed=0)
    last = base.config.n_layers - 1
    before = dict(base.named_parameters())
    for name, param in model.foundation.named_parameters():
        moved = not torch.equal(param.detach().cpu(), before[name].detach().cpu())
        if name.startswith(f"encoder.blocks.{last}."):
            assert moved or not name.endswith("weight"), name  # a bias may start and stay at 0
        elif name.startswith(("encoder.blocks.", "code_embed", "channel_embed")):
            assert not moved, name
    # the frozen blocks ran once: the top block on the stream below it gives the whole network's logits and
    # the trained weights' gradients
    model_inputs = inputs.for_model(model, train)
    states = model.foundation.lower_states(
        model_inputs["channel_ids"], model.config.modality, last, codes=model_inputs["codes"]
    )
    gradients = []
    for logits in (
        model(**model_inputs),
        TopBlocks(model, last)(states.detach(), model_inputs["channel_ids"]),
    ):
        model.zero_grad()
        logits.logsumexp(dim=-1).sum().backward()
        gradients.append(model.foundation.encoder.blocks[last].mlp[0].weight.grad.clone())
        assert torch.allclose(logits, model(**model_inputs), atol=1e-5)
    assert gradients[0].abs().sum() > 0 and torch.allclose(*gradients, atol=1e-5)
    _, scratch = _neural("from scratch", base, inputs, epochs, train, test, args, seed=0)
    assert all(p.requires_grad for p in scratch.foundation.parameters())


def test_fine_tuning_keeps_frozen_code_embeddings_frozen(foundations):
    # a `frozen_code_embed` foundation's code embeddings stay as they are through --probe_first's freeze
    # and the fine-tuning after it; everything else trains
    import copy

    from finetune.classify import _neural

    base, epochs, inputs = _two_subject_codes(foundations)
    config = copy.deepcopy(base.config)
    config.frozen_code_embed = True
    frozen = BiotokFoundation(config)
    frozen.load_state_dict(base.state_dict())
    args = ClassifyArgs(epochs=2, batch_size=4, lr=1e-2, probe_first=True, progress=False)
    _, model = _neural(
        "foundation (fine-tuned)", frozen, inputs, epochs, np.arange(4), np.arange(4, 8), args, 0
    )
    assert torch.equal(model.foundation.code_embed.weight.detach().cpu(), frozen.code_embed.weight)
    assert not model.foundation.code_embed.weight.requires_grad
    assert all(
        p.requires_grad for n, p in model.foundation.named_parameters() if not n.startswith("code_embed")
    )


def _flipping_linear() -> tuple[torch.nn.Module, dict, torch.Tensor, tuple]:
    """A 2-class linear model that starts on the validation rule (class 1 when x0 < 0) and is trained on
    the opposite rule: validation accuracy is best early and falls as training goes on."""

    class Linear(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(2, 2, bias=False)
            with torch.no_grad():
                self.proj.weight.copy_(torch.tensor([[1.0, 0.0], [-1.0, 0.0]]))

        def forward(self, x):
            return self.proj(x)

    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0))
    labels = (x[:, 0] > 0).long()
    return Linear(), {"x": x}, labels, ({"x": x}, 1 - labels)


def test_validation_subjects_keep_the_epoch_of_best_validation_accuracy():
    # early stopping (`--val_subjects`): fit keeps the weights of the best validation epoch, not the last
    from finetune.metrics import balanced_accuracy

    args = ClassifyArgs(epochs=10, batch_size=8, progress=False)
    scores = {}
    for use_val in (False, True):
        model, inputs, labels, val = _flipping_linear()
        groups = [{"params": list(model.parameters()), "lr": 0.2, "weight_decay": 0.0}]
        model = fit(model, inputs, labels, groups, args, seed=0, val=val if use_val else None)
        with torch.no_grad():
            predictions = model(**val[0]).argmax(dim=1).numpy()
        scores[use_val] = balanced_accuracy(val[1].numpy(), predictions, 2)
    assert scores[False] < 0.2  # the last epoch learnt the training rule
    assert scores[True] > scores[False] + 0.5  # the kept epoch still held most of the validation rule


def test_validation_split_holds_whole_subjects_out_the_same_way_for_a_seed():
    from finetune.classify import validation_split

    epochs = SimpleNamespace(subjects=np.repeat(np.array(["s1", "s2", "s3", "s4"]), 5))
    train = np.arange(20)
    fit_a, val_a = validation_split(train, epochs, 1, seed=3)
    fit_b, val_b = validation_split(train, epochs, 1, seed=3)
    np.testing.assert_array_equal(val_a, val_b)
    assert len(set(epochs.subjects[val_a])) == 1 and not set(epochs.subjects[val_a]) & set(
        epochs.subjects[fit_a]
    )
    assert sorted(np.concatenate([fit_a, val_a]).tolist()) == train.tolist()
    assert len(validation_split(train, epochs, 0, seed=3)[1]) == 0
    with pytest.raises(ConfigError, match="val_subjects"):
        validation_split(train, epochs, 4, seed=3)


def test_every_neural_row_validates_on_the_same_held_out_subject(foundations):
    # `--val_subjects 1`: the probe and --probe_first's head are chosen on the same validation subject, so
    # at a fine-tuning lr of 0 the fine-tuned row is still exactly the probe; training on both subjects
    # without validation gives another probe
    from finetune.classify import _neural

    base, epochs, inputs = _two_subject_codes(foundations)
    train, test = np.arange(8), np.arange(8)
    args = ClassifyArgs(epochs=3, batch_size=4, lr=0.0, probe_lr=0.05, val_subjects=1, progress=False)
    probe, _ = _neural("foundation (linear probe)", base, inputs, epochs, train, test, args, seed=0)
    args.probe_first = True
    first, _ = _neural("foundation (fine-tuned)", base, inputs, epochs, train, test, args, seed=0)
    np.testing.assert_array_equal(first, probe)
    args.val_subjects = 0
    everyone, _ = _neural("foundation (linear probe)", base, inputs, epochs, train, test, args, seed=0)
    assert not np.allclose(everyone, probe, atol=1e-4)
