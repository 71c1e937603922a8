"""The README's Python examples run as written, in order, and do what their comments say."""

import re
from pathlib import Path

import numpy as np
import pytest

from data_prep.prepare import PrepareArgs, run

ROOT = Path(__file__).resolve().parents[1]


def test_readme_python_examples_run(real, synthetic_root, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 3, "the README lost its Python examples"
    # the README is read from the repository root: its corpora under biotok_out/, the shipped models,
    # the real recordings at ../shared/data/real
    run(
        PrepareArgs(
            sources="synthetic",
            root=str(synthetic_root),
            out=str(tmp_path / "biotok_out" / "corpora"),
            progress=False,
        )
    )
    (tmp_path / "pretrained_models").symlink_to(ROOT / "pretrained_models")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(block.replace("../shared/data/real", str(real)), namespace)

    signal, enc, rebuilt, hidden = (namespace[k] for k in ("signal_uv", "enc", "rebuilt", "hidden"))
    assert enc.codes.shape == (1, 64, 8, 4, 8)  # 8 s = 8 patches of 1 s, 4 scales x 8 levels
    assert rebuilt.shape == signal.shape  # back at the input's rate and length
    pcc = np.mean([np.corrcoef(rebuilt[0, c], signal[0, c])[0, 1] for c in range(signal.shape[1])])
    assert pcc > 0.4, pcc  # the shipped tokenizer rebuilds real EEG (0.62 measured)
    assert hidden.shape == (1, 64, 8, 200)
    assert sorted(namespace["batches"].names) == ["ecg_synthetic", "eeg_synthetic", "emg_synthetic"]
    # the EDF's own names ("Fc5.") are refused with the way out, not a bare KeyError
    with pytest.raises(ValueError, match=r"\['Fc5\.'.*as preprocessing maps them"):
        namespace["fm"].channel_ids([namespace["names"]], "eeg")
