"""Is one row's lead over another consistent across unseen subjects? (issue 17)

A classify results.json holds each row's balanced accuracy per test subject (mean over seeds). Two rows are
compared subject by subject: the mean difference, on how many subjects the first leads, and the paired
t-test and Wilcoxon signed-rank p-values (two-sided). This judges a difference between rows; whether a row
itself beats chance is benchmarks/loso_chance.py's question.

    python benchmarks/paired_rows.py docs/results/classify_strict_v12_lpft/mi_nofrontal/results.json \
        --out docs/results/paired_rows_mi_nofrontal_v12.json

Several results files may be given (a GPU run's rows and the CPU's classical row, say); each row must be in
one of them.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from scipy import stats


def paired(per_subject: dict[str, dict[str, float]], first: str, second: str) -> dict:
    """Row `first` against row `second` over the subjects both were tested on."""
    subjects = sorted(set(per_subject[first]) & set(per_subject[second]))
    a = np.array([per_subject[first][s] for s in subjects])
    b = np.array([per_subject[second][s] for s in subjects])
    return {
        "rows": [first, second],
        "n_subjects": len(subjects),
        "mean_difference": float(np.mean(a - b)),
        "first_leads_on": int(np.sum(a > b)),
        "t_test_p": float(stats.ttest_rel(a, b).pvalue),
        "wilcoxon_p": float(stats.wilcoxon(a - b).pvalue),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results",
        nargs="+",
        help="results.json files of `biotok finetune classify` (each row in one of them)",
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    per_subject: dict[str, dict[str, float]] = {}
    for path in args.results:
        for row, summary in json.loads(Path(path).read_text())["rows"].items():
            if row in per_subject:
                raise SystemExit(f"{path}: row {row!r} is in an earlier results file too")
            per_subject[row] = summary["summary"]["per_subject_balanced_accuracy"]
    comparisons = [paired(per_subject, a, b) for a, b in itertools.combinations(per_subject, 2)]
    for c in comparisons:
        print(
            f"{c['rows'][0]} - {c['rows'][1]}: {c['mean_difference']:+.3f}, leads on {c['first_leads_on']} of "
            f"{c['n_subjects']}, paired t p = {c['t_test_p']:.3f}, Wilcoxon p = {c['wilcoxon_p']:.3f}"
        )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"results": args.results, "comparisons": comparisons}, indent=1) + "\n"
        )


if __name__ == "__main__":
    main()
