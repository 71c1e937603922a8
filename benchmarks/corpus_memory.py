"""Peak memory of preparing and of iterating a corpus as it grows (synthetic EEG, default 1x and 10x).

python benchmarks/corpus_memory.py --out runs/corpus_memory [--scales 1,10]

Each step runs in a fresh process that samples its own peak RSS and peak anonymous memory, so the
figures are not polluted by the data generation or by each other. Flat figures across scales = lazy reading.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

STEP = {
    "write": (
        "from data_prep.synthetic import SyntheticConfig, write_default_dataset\n"
        "write_default_dataset('{root}', SyntheticConfig(eeg_subjects={subjects}, emg_users=2, emg_sessions=1,"
        " emg_session_s=10.0, ecg_records=1, ecg_record_s=10.0),"
        " progress=False)"
    ),
    "prepare": (
        "from data_prep.prepare import PrepareArgs, run\n"
        "run(PrepareArgs(sources='synthetic', root='{root}', out='{out}', corpora=['eeg_synthetic'], progress=False))"
    ),
    "iterate": (
        "from data_prep.corpus import Corpus\n"
        "corpus = Corpus('{out}/eeg_synthetic')\n"
        "total = sum(float(abs(row['signal']).sum()) for row in corpus)\n"
        "print(len(corpus), 'windows')"
    ),
}


# memory-mapped corpus pages count in RSS while they are resident (file-backed, reclaimable); the
# anonymous part is what the process itself holds, so both peaks are sampled from /proc every 20 ms
SAMPLER = """
import json, threading, time
peaks = {"VmRSS": 0.0, "RssAnon": 0.0}
def _sample():
    while True:
        for line in open("/proc/self/status"):
            key = line.split(":")[0]
            if key in peaks:
                peaks[key] = max(peaks[key], int(line.split()[1]) / 1024)
        time.sleep(0.02)
threading.Thread(target=_sample, daemon=True).start()
"""
REPORT = """
time.sleep(0.05)
print("PEAKS" + json.dumps({k: round(v, 1) for k, v in peaks.items()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/corpus_memory")
    parser.add_argument("--scales", default="1,10")
    args = parser.parse_args()
    results = []
    for scale in (int(s) for s in args.scales.split(",")):
        root, out = Path(args.out) / f"x{scale}" / "data", Path(args.out) / f"x{scale}" / "corpora"
        subprocess.run(
            [sys.executable, "-c", STEP["write"].format(root=root, subjects=4 * scale)], check=True
        )
        row = {"scale": scale, "eeg_subjects": 4 * scale}
        for step in ("prepare", "iterate"):
            done = subprocess.run(
                [sys.executable, "-c", SAMPLER + STEP[step].format(root=root, out=out) + REPORT],
                check=True,
                capture_output=True,
                text=True,
            )
            peaks = json.loads(done.stdout.split("PEAKS")[-1])
            row[f"{step}_peak_rss_mib"] = peaks["VmRSS"]
            row[f"{step}_peak_anon_mib"] = peaks["RssAnon"]
        row["corpus_mib"] = round(sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20, 1)
        results.append(row)
        print(row, flush=True)
    Path(args.out, "corpus_memory.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
