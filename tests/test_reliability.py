"""Crash safety: a pretraining run killed with SIGKILL at a random step resumes from its last checkpoint
and reproduces the uninterrupted run's loss curve; a truncated checkpoint is refused. Determinism: one
seed fixes data order, initialisation and masking (two runs are identical on CPU)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from data_prep.corpus import Corpus, load_sources, prepare_corpus
from data_prep.prepare import resolve_sources
from foundation.tokens import tokenize_corpus
from tokenizer.model import BiotokTokenizer

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "pretrained_models" / "tokenizer-small"


@pytest.fixture(scope="module")
def myo_tokens(tmp_path_factory, real):
    root = tmp_path_factory.mktemp("myo")
    spec = next(s for s in load_sources(resolve_sources("shared_real")) if s.name == "myo")
    report = prepare_corpus(spec, real, root / "corpora", progress=False)
    tokenizer = BiotokTokenizer.from_pretrained(SHIPPED).eval()
    tokenize_corpus(tokenizer, Corpus(report.path), root / "tokens", batch_size=32, progress=False)
    return root / "tokens"


def _command(tokens: Path, out: Path) -> list[str]:
    flags = dict(
        tokens=tokens, size="tiny", target_levels=2, out=out, steps=30, batch_size=8, lr=2e-3,
        warmup_steps=5, eval_every=100, log_every=1, save_every=4, progress="false",
    )  # fmt: skip
    return [sys.executable, "-m", "foundation.pretrain"] + [
        x for k, v in flags.items() for x in (f"--{k}", str(v))
    ]


def _losses(out: Path) -> dict[int, list[float]]:
    """step -> every loss logged for it (a killed run's steps after its last checkpoint run twice)."""
    found: dict[int, list[float]] = {}
    for line in (out / "log.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "train/loss" in row:
            found.setdefault(row["step"], []).append(row["train/loss"])
    return found


def test_sigkill_at_a_random_step_resumes_the_same_loss_curve(myo_tokens, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run(_command(myo_tokens, straight), check=True, env=env, cwd=ROOT, capture_output=True)

    kill_after = int(np.random.default_rng().integers(6, 25))  # a random step, past the first checkpoint
    process = subprocess.Popen(
        _command(myo_tokens, killed), env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if (killed / "log.jsonl").exists() and max(_losses(killed), default=0) >= kill_after:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    assert process.wait() == -signal.SIGKILL, f"the run ended before step {kill_after}"
    assert not (killed / "final").exists()
    last_logged = max(_losses(killed))  # the run may have gone a step or two past kill_after
    subprocess.run(_command(myo_tokens, killed), check=True, env=env, cwd=ROOT, capture_output=True)

    reference, resumed = _losses(straight), _losses(killed)
    assert sorted(resumed) == sorted(reference) == list(range(1, 31))
    for step, values in resumed.items():
        assert values == pytest.approx([reference[step][0]] * len(values), abs=0, rel=0), (kill_after, step)
    # steps after the last checkpoint really re-ran, unless the kill came right after one was written
    assert any(len(v) == 2 for v in resumed.values()) or last_logged % 4 == 0, (kill_after, last_logged)


def test_a_truncated_checkpoint_is_refused(myo_tokens, tmp_path):
    from data_prep.errors import BiosignalError
    from foundation.pretrain import PretrainArgs, pretrain

    out = tmp_path / "run"
    args = dict(
        tokens=[str(myo_tokens)], size="tiny", target_levels=2, out=str(out), steps=4, batch_size=8,
        eval_every=100, log_every=1, save_every=2, progress=False,
    )  # fmt: skip
    pretrain(PretrainArgs(**args, stop_at=2))
    weights = next((out / "checkpoints").rglob("model.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(BiosignalError, match="corrupt or truncated"):
        pretrain(PretrainArgs(**args))


def test_one_seed_gives_identical_runs(myo_tokens, tmp_path):
    from safetensors.torch import load_file

    from foundation.pretrain import PretrainArgs, pretrain
    from tokenizer.train import TokenizerTrainArgs, train

    def weights(folder: Path) -> dict:
        return load_file(folder / "model.safetensors")

    runs = []
    for name in ("a", "b"):
        tokenizer = train(
            TokenizerTrainArgs(
                corpora=[str(myo_tokens.parent / "corpora" / "myo")], size="tiny", out=str(tmp_path / f"tok_{name}"),
                steps=3, batch_size=4, eval_every=3, save_every=3, log_every=1, progress=False, seed=7,
            )
        )  # fmt: skip
        foundation = pretrain(
            PretrainArgs(
                tokens=[str(myo_tokens)], size="tiny", target_levels=2, out=str(tmp_path / f"fm_{name}"), steps=3,
                batch_size=4, eval_every=3, log_every=1, save_every=3, progress=False, seed=7,
            )
        )  # fmt: skip
        runs.append(
            (weights(tokenizer), weights(foundation), (tmp_path / f"fm_{name}" / "log.jsonl").read_text())
        )
    (tok_a, fm_a, log_a), (tok_b, fm_b, log_b) = runs
    for a, b in ((tok_a, tok_b), (fm_a, fm_b)):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)

    def untimed(log: str) -> list[dict]:  # wall times and throughputs differ between runs
        return [
            {k: v for k, v in json.loads(line).items() if "seconds" not in k and "per_s" not in k}
            for line in log.splitlines()
        ]

    assert untimed(log_a) == untimed(log_b)


@pytest.mark.parametrize(
    "case", ["edf_empty", "edf_header_only", "wfdb_empty_dat", "csv_empty", "npy_no_samples"]
)
def test_zero_length_files_are_refused_by_name(case, real, tmp_path):
    import shutil

    from data_prep.errors import BiosignalError
    from data_prep.readers import read_array, read_mne, read_wfdb

    myo = dict(sfreq=200, ch_names=[f"myo_{i}" for i in range(1, 9)], unit="adu", modality="emg")
    if case == "edf_empty":
        path = tmp_path / "x.edf"
        path.write_bytes(b"")
        read, expected = lambda: read_mne(path, "eeg"), "empty"
    elif case == "edf_header_only":
        path = tmp_path / "x.edf"
        path.write_bytes((real / "eegbci" / "S001R01.edf").read_bytes()[: 256 * 66])
        read, expected = lambda: read_mne(path, "eeg"), "truncated"
    elif case == "wfdb_empty_dat":
        shutil.copy(real / "mitdb" / "100.hea", tmp_path / "100.hea")
        (path := tmp_path / "100.dat").write_bytes(b"")
        read, expected = lambda: read_wfdb(tmp_path / "100.hea", "ecg", annotation=None), "truncated"
    elif case == "csv_empty":
        (path := tmp_path / "x.csv").write_text("")
        read, expected = lambda: read_array(path, **myo), "empty"
    else:
        np.save(path := tmp_path / "x.npy", np.zeros((8, 0), np.float32))
        read, expected = lambda: read_array(path, **myo), "zero-length"
    with pytest.raises(BiosignalError, match=expected) as err:
        read()
    assert path.name in str(err.value)


@pytest.mark.parametrize(
    "flags, field",
    [
        ({}, "sfreq"),
        ({"sfreq": 0}, "sfreq"),
        ({"sfreq": float("nan")}, "sfreq"),
        ({"sfreq": 200, "unit": None}, "unit"),
    ],
)
def test_missing_or_wrong_sampling_rate_of_an_array_file(flags, field, tmp_path):
    from data_prep.errors import BiosignalError
    from data_prep.readers import read_array

    np.save(path := tmp_path / "x.npy", np.ones((400, 8), np.float32))
    args = {"ch_names": [f"myo_{i}" for i in range(1, 9)], "unit": "adu", "modality": "emg", **flags}
    with pytest.raises(BiosignalError) as err:
        read_array(path, **args)
    assert err.value.field == field and "x.npy" in str(err.value)
