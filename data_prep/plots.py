"""Figures of data: real vs synthetic windows and their spectra.

python -m data_prep.plots --real ../shared/data/real --out docs/figures/real_vs_synthetic.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import signal as sps


def _panel(
    ax_time, ax_psd, data: np.ndarray, sfreq: float, names: list[str], title: str, unit: str, color: str
) -> None:
    t = np.arange(data.shape[1]) / sfreq
    offset = 4 * np.median(np.std(data, axis=1))
    for i, row in enumerate(data):
        ax_time.plot(t, row - i * offset, lw=0.6, color=color)
    ax_time.set_yticks([-i * offset for i in range(len(names))], names, fontsize=7)
    ax_time.set_title(f"{title}: {data.shape[1] / sfreq:.0f} s, {sfreq:.0f} Hz ({unit})", fontsize=9)
    ax_time.set_xlabel("time (s)", fontsize=8)
    freqs, psd = sps.welch(data, sfreq, nperseg=min(data.shape[1], int(sfreq)))
    ax_psd.semilogy(freqs, psd.mean(axis=0), color=color)
    ax_psd.set_xlabel("frequency (Hz)", fontsize=8)
    ax_psd.set_ylabel(f"PSD ({unit}²/Hz)", fontsize=8)
    ax_psd.set_title(f"{title}: mean spectrum", fontsize=9)
    ax_psd.grid(alpha=0.3)


def plot_real_vs_synthetic(real_root: str | Path, out: str | Path) -> Path:
    """Real EEG (EEGBCI) and sEMG (GRABMyo) windows beside their synthetic counterparts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .presets import standardize_eeg_names
    from .readers import read_mne, read_wfdb
    from .synthetic import make_eeg_run, make_emg_session

    real_root = Path(real_root)
    eeg_channels = ["Fz", "C3", "Cz", "C4", "Pz", "Oz"]
    real_eeg = read_mne(real_root / "eegbci" / "S001R02.edf", "eeg")
    names = standardize_eeg_names(real_eeg.ch_names)
    real_eeg_win = real_eeg.data[
        [names.index(n) for n in eeg_channels], int(20 * real_eeg.sfreq) : int(24 * real_eeg.sfreq)
    ]
    synth_eeg = make_eeg_run(0, 100, "eyes_closed", 30.0)
    synth_eeg_win = synth_eeg.data_uv[
        [synth_eeg.ch_names.index(n) for n in eeg_channels],
        int(20 * synth_eeg.sfreq) : int(24 * synth_eeg.sfreq),
    ]
    real_emg = read_wfdb(
        real_root / "grabmyo" / "session1_participant1_gesture15_trial1",
        "emg",
        exclude=["U1", "U2", "U3", "U4"],
    )
    emg_channels = ["F1", "F5", "F9", "F13", "W1", "W7"]
    real_emg_win = real_emg.data[
        [real_emg.ch_names.index(n) for n in emg_channels], int(2 * real_emg.sfreq) : int(3 * real_emg.sfreq)
    ]
    session = make_emg_session(0, 0, 20.0)
    synth_emg = session.emg()
    synth_emg_win = synth_emg[[0, 5, 10, 16, 21, 26], int(4 * 2000) : int(5 * 2000)]

    fig, axes = plt.subplots(4, 2, figsize=(12, 13), gridspec_kw={"width_ratios": [2, 1]})
    _panel(
        *axes[0],
        real_eeg_win,
        real_eeg.sfreq,
        eeg_channels,
        "real EEG (EEGBCI S001 eyes closed)",
        "µV",
        "tab:blue",
    )
    _panel(
        *axes[1],
        synth_eeg_win,
        synth_eeg.sfreq,
        eeg_channels,
        "synthetic EEG (eyes closed)",
        "µV",
        "tab:orange",
    )
    _panel(
        *axes[2],
        real_emg_win,
        real_emg.sfreq,
        emg_channels,
        "real sEMG (GRABMyo hand open)",
        "µV",
        "tab:blue",
    )
    _panel(
        *axes[3],
        synth_emg_win,
        2000.0,
        ["L0", "L5", "L10", "R0", "R5", "R10"],
        "synthetic sEMG (emg2qwerty typing)",
        "a.u.",
        "tab:orange",
    )
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", default="../shared/data/real")
    parser.add_argument("--out", default="docs/figures/real_vs_synthetic.png")
    args = parser.parse_args(argv)
    print(plot_real_vs_synthetic(args.real, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
