"""Shared fixtures: the real recordings beside the project, and a small synthetic dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():
    # Triton kernels run in Triton's interpreter on a CPU-only machine. Set before anything imports
    # triton (transformers does): a kernel's helper functions are bound in the mode of that moment.
    os.environ.setdefault("TRITON_INTERPRET", "1")

from data_prep.synthetic import SyntheticConfig, write_default_dataset

REAL = Path(
    os.environ.get(
        "BIOTOK_REAL_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    )
)

TINY_SYNTHETIC = SyntheticConfig(
    eeg_subjects=2,
    eeg_runs=1,
    eeg_run_s=24.0,
    emg_users=2,
    emg_sessions=3,
    emg_session_s=16.0,
    ecg_records=1,
    ecg_record_s=20.0,
)


@pytest.fixture(scope="session")
def real() -> Path:
    if not (REAL / "README.md").exists():
        pytest.skip(f"real recordings not found at {REAL} (set BIOTOK_REAL_DATA)")
    return REAL


@pytest.fixture(scope="session")
def real_work(tmp_path_factory) -> Path:
    """One folder where the real recordings are prepared (`corpora/`): the foundation tests and the
    model-card test reuse each other's shards instead of making them twice. Tokens go to folders of
    their own (`tokens/`: tokenizer-small-v1's for the foundation tests; the card's sample of the
    shipped tokenizer's in `card_tokens_<hash>/`)."""
    return tmp_path_factory.mktemp("real_work")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    return write_default_dataset(tmp_path_factory.mktemp("synthetic"), TINY_SYNTHETIC, progress=False)


@pytest.fixture(scope="session")
def eegbci_corpus(real, tmp_path_factory) -> Path:
    """Real EEGBCI S001-S003 prepared once (the tokenizer and spatial coding tests share it)."""
    from data_prep.prepare import PrepareArgs, run

    out = tmp_path_factory.mktemp("eegbci")
    run(PrepareArgs(sources="shared_real", root=str(real), out=str(out), corpora=["eegbci"], progress=False))
    return out / "eegbci"
