"""The main job (`biotok run`): every stage end to end on the embedded synthetic data, tiny budgets."""

import json
from pathlib import Path

import pytest

import data_prep
from biotok.pipeline import RunArgs, run
from data_prep.errors import ConfigError


def test_main_job_runs_every_stage_and_reports_real_numbers(tmp_path):
    out = tmp_path / "out"
    args = RunArgs(
        out=str(out), tokenizer_steps=4, pretrain_steps=4, classify_epochs=1, ctc_steps=1, ctc_batch_size=2,
        batch_size=4, progress=False,
    )  # fmt: skip
    summary = run(args)
    measures = dict(summary["rows"])
    assert "reconstruction SNR / PCC, held-out eeg_synthetic" in measures
    assert "masked-token accuracy, held out (unigram baseline)" in measures
    assert "synthetic_mi balanced accuracy, classical" in measures
    # the demo's foundation saw every synthetic subject in pretraining: its rows say so
    assert "synthetic_mi balanced accuracy, foundation (linear probe), transductive" in measures
    assert "emg2qwerty test CER greedy / beam" in measures
    # the numbers are the stages' own outputs, not canned
    tokenizer_eval = [json.loads(line) for line in (out / "tokenizer" / "log.jsonl").read_text().splitlines()]
    held_out = next(r["eval"]["eeg_synthetic"] for r in tokenizer_eval if "eval" in r)
    expected = f"{held_out['snr_db']:.1f} dB / {held_out['pcc']:.2f}"
    assert measures["reconstruction SNR / PCC, held-out eeg_synthetic"] == expected
    ctc = json.loads((out / "emg2qwerty" / "results.json").read_text())
    assert f"{ctc['test']['cer_greedy']:.1f}%" in measures["emg2qwerty test CER greedy / beam"]
    for name in ("summary.md", "summary.json", "classify_confusion.png", "classify_per_subject.png"):
        assert (out / "report" / name).exists(), name
    assert set(summary["seconds"]) == {
        "1/6 prepare corpora", "2/6 train the tokenizer", "3/6 tokenize", "4/6 pretrain the foundation model",
        "5/6 fine-tune: EEG classification", "6/6 fine-tune: emg2qwerty CTC",
    }  # fmt: skip


SHIPPED = Path(__file__).resolve().parents[1] / "pretrained_models"


def test_main_job_with_the_shipped_models_measures_them_instead_of_training(synthetic_root, tmp_path):
    import yaml

    # the shipped tokenizer knows EEG sites, GRABMyo/Myo electrodes and ECG leads, not the synthetic
    # wristband's: the synthetic EEG and ECG only
    sources = yaml.safe_load((Path(data_prep.__file__).parent / "sources" / "synthetic.yaml").read_text())
    del sources["corpora"]["emg_synthetic"]
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(sources))
    out = tmp_path / "given"
    args = RunArgs(
        out=str(out), data=str(synthetic_root), sources=str(tmp_path / "sources.yaml"),
        tokenizer=str(SHIPPED / "tokenizer-small"), foundation=str(SHIPPED / "foundation-small"),
        emg2qwerty="none", classify_epochs=1, progress=False,
    )  # fmt: skip
    summary = run(args)
    assert not (out / "tokenizer").exists() and not (out / "foundation").exists()  # nothing trained
    assert set(summary["seconds"]) == {
        "1/6 prepare corpora", "2/6 evaluate the given tokenizer", "3/6 tokenize",
        "4/6 evaluate the given foundation model", "5/6 fine-tune: EEG classification",
    }  # fmt: skip
    measures = dict(summary["rows"])
    snr = {k: v for k, v in measures.items() if k.startswith("reconstruction SNR")}
    assert snr, measures
    # the shipped tokenizer rebuilds held-out synthetic EEG (0.47 measured; an untrained one gives ~0)
    pcc = float(snr["reconstruction SNR / PCC, held-out eeg_synthetic"].split("/ ")[1])
    assert pcc > 0.3, snr
    accuracy, unigram = (
        measures["masked-token accuracy, held out (unigram baseline)"].replace(")", "").split(" (")
    )
    assert float(accuracy) > float(unigram)


def test_main_job_refuses_a_foundation_model_without_its_tokenizer(tmp_path):
    with pytest.raises(ConfigError, match="pass it as --tokenizer"):
        run(RunArgs(out=str(tmp_path), foundation=str(SHIPPED / "foundation-small")))
    other = tmp_path / "other-tokenizer"
    other.mkdir()
    config = json.loads((SHIPPED / "tokenizer-small" / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "codebook_size": 512}))
    with pytest.raises(ConfigError, match="pretrained on codes of tokenizer"):
        run(RunArgs(out=str(tmp_path), tokenizer=str(other), foundation=str(SHIPPED / "foundation-small")))
    assert not (tmp_path / "corpora").exists()  # refused before any stage ran
