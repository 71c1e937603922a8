"""How much of CSP + LDA's motor-imagery score rests on its band-pass? (issue 17)

The classical row (`finetune.classify._classical`, "csp_lda") filters the task's signal once more with a
4th-order Butterworth 8-30 Hz (`sosfiltfilt`) before CSP (4 components, log variance) + LDA. This scores the
same pipeline on the same leave-one-subject-out folds with other reasonable filters, subject by subject, to
show which subjects' scores hold and which hang on the filter's edge.

    python benchmarks/mi_csp_band.py --root ../shared/data/real --out docs/results/mi_csp_band.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy import signal as sps

from finetune.classify import csp_lda
from finetune.classify_data import ClassifyTask, group_folds, load_epochs
from finetune.metrics import balanced_accuracy

# (low Hz, high Hz, Butterworth order (0: none), seconds cut from the start and from the end after filtering)
# per variant; None: the task's signal as the tokenizer sees it. The cut ones ask what the window's ends do to
# a score (the per-window filter's transients, or what the first and last 0.5 s after the cue hold)
FILTERS: dict[str, tuple[float, float, int, float, float] | None] = {
    "the task's signal as given (what the tokenizer encodes)": None,
    "the task's signal as given, 0.5 s cut from each end": (0.0, 0.0, 0, 0.5, 0.5),
    "the task's signal as given, its first 0.5 s cut": (0.0, 0.0, 0, 0.5, 0.0),
    "the task's signal as given, its last 0.5 s cut": (0.0, 0.0, 0, 0.0, 0.5),
    "Butterworth 8-30 Hz, order 4 (the classical row)": (8.0, 30.0, 4, 0.0, 0.0),
    "Butterworth 8-30 Hz, order 8": (8.0, 30.0, 8, 0.0, 0.0),
    "Butterworth 10-30 Hz, order 4": (10.0, 30.0, 4, 0.0, 0.0),
    "Butterworth 8-13 Hz, order 4": (8.0, 13.0, 4, 0.0, 0.0),
    "Butterworth 13-30 Hz, order 4": (13.0, 30.0, 4, 0.0, 0.0),
    "Butterworth 8-30 Hz, order 4, 0.5 s cut from each end": (8.0, 30.0, 4, 0.5, 0.5),
    "Butterworth 8-30 Hz, order 8, 0.5 s cut from each end": (8.0, 30.0, 8, 0.5, 0.5),
}


def leave_one_subject_out(data: np.ndarray, labels: np.ndarray, subjects: np.ndarray) -> dict[str, float]:
    """CSP + LDA balanced accuracy per held-out subject. `data`: (windows, channels, times)."""
    scores = {}
    for train, test in group_folds(subjects):  # the classify command's folds
        probabilities = csp_lda(data[train], labels[train], data[test])
        scores[str(subjects[test][0])] = balanced_accuracy(labels[test], probabilities.argmax(axis=1), 2)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the real recordings (eegbci/, eegbci-more/)")
    parser.add_argument("--task", default="eegbci_mi_mu_nofrontal")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    epochs = load_epochs(ClassifyTask.load(args.task), args.root)
    signal = epochs.data.astype(np.float64)
    rows = {}
    for name, band in FILTERS.items():
        data = signal
        if band is not None:
            low, high, order, cut_start_s, cut_end_s = band
            if order:  # order 0: no further filter, only the cut
                sos = sps.butter(order, (low, high), btype="bandpass", fs=epochs.sfreq, output="sos")
                data = sps.sosfiltfilt(sos, signal, axis=-1)
            start, end = (int(round(cut * epochs.sfreq)) for cut in (cut_start_s, cut_end_s))
            data = data[..., start : data.shape[-1] - end]
        per_subject = leave_one_subject_out(data, epochs.labels, epochs.subjects)
        rows[name] = {"mean": float(np.mean(list(per_subject.values()))), "per_subject": per_subject}
        shown = " ".join(f"{s} {v:.2f}" for s, v in per_subject.items())
        print(f"{name}: {rows[name]['mean']:.3f} | {shown}", flush=True)
    result = {"task": args.task, "sfreq": epochs.sfreq, "n_windows": len(epochs), "rows": rows}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
