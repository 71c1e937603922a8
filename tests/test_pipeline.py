"""The main job (`biotok run`): every stage end to end on the embedded synthetic data, tiny budgets."""

import json

from finetune.pipeline import RunArgs, run


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
