"""The sEMG statistics that the hard synthetic emg2qwerty tier is built from, measured once on GRABMyo.

    python benchmarks/grabmyo_emg_stats.py --root ../shared/data/real

GRABMyo's forearm and wrist electrodes at 2,048 Hz (every record under `<root>/grabmyo`, unused inputs
U1-U4 left out). Prints, as Python to paste into `data_prep/synthetic.py`:
- the mean power spectrum's shape in dB at log-spaced frequencies (relative to its peak), which the
  generator's noise and bursts are filtered to;
- the spread of the 50 ms RMS envelope (standard deviation of its log, per channel, median over
  channels), which sets how much the muscle activity under the electrodes waxes and wanes;
- the spread of RMS across electrodes (standard deviation of log RMS within a record, median).
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np
from scipy import signal as sps

from data_prep.readers import read_wfdb

FREQUENCIES = [
    10,
    20,
    30,
    45,
    70,
    90,
    110,
    130,
    170,
    220,
    280,
    350,
    450,
    600,
    800,
    1000,
]  # clear of 50 / 60 Hz


def measure(root: str) -> dict:
    files = sorted(glob.glob(str(Path(root) / "grabmyo" / "*.hea")))
    if not files:
        raise FileNotFoundError(f"no GRABMyo records (*.hea) under {root}/grabmyo")
    spectra, envelope_spread, channel_spread = [], [], []
    for path in files:
        rec = read_wfdb(path, "emg", exclude=["U1", "U2", "U3", "U4"], annotation=None)
        data = rec.data - rec.data.mean(axis=1, keepdims=True)
        f, power = sps.welch(data, fs=rec.sfreq, nperseg=1024, axis=1)
        spectra.append(np.interp(FREQUENCIES, f, power.mean(axis=0)))
        hop = int(0.05 * rec.sfreq)
        frames = data[:, : data.shape[1] // hop * hop].reshape(data.shape[0], -1, hop)
        rms = np.sqrt((frames**2).mean(axis=2))
        envelope_spread.append(np.median(np.log(rms).std(axis=1)))
        channel_spread.append(np.log(np.sqrt((data**2).mean(axis=1))).std())
    shape = 10 * np.log10(np.mean(spectra, axis=0))
    return {
        "files": len(files),
        "sfreq": rec.sfreq,
        "psd_db": dict(zip(FREQUENCIES, np.round(shape - shape.max(), 1).tolist())),
        "log_envelope_std": round(float(np.median(envelope_spread)), 3),
        "log_channel_rms_std": round(float(np.median(channel_spread)), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--root", default="../shared/data/real")
    stats = measure(parser.parse_args().root)
    print(f"# {stats['files']} GRABMyo records at {stats['sfreq']:.0f} Hz (benchmarks/grabmyo_emg_stats.py)")
    print(f"SEMG_PSD_DB = {stats['psd_db']}")
    print(f"SEMG_LOG_ENVELOPE_STD = {stats['log_envelope_std']}")
    print(f"SEMG_LOG_CHANNEL_RMS_STD = {stats['log_channel_rms_std']}")


if __name__ == "__main__":
    main()
