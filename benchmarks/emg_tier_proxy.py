"""How far apart generic and personalized keystroke decoding are on a synthetic emg2qwerty tier: a CPU
proxy for issue 18's calibration (generic CER at least twice personalized), before any GPU training.

    python benchmarks/emg_tier_proxy.py --out docs/results/emg_tier_proxy.json

Each keystroke becomes the log energy of its burst per electrode (110 ms before to 40 ms after the key
registers); a nearest-centroid classifier (patterns centred per keystroke) names the key. Generic:
centroids from users 1-7 (all 4 sessions); personalized: user 0's sessions 0-2. Both tested on user 0's
session 3. Key error rates, on the standard and the hard tier (8 users x 4 sessions x 60 s each).
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from data_prep.synthetic import make_emg_session, make_hard_emg_session


def burst_features(session) -> list[tuple[str, np.ndarray]]:
    emg, t0, out = session.emg(), session.time[0], []
    for k in session.keystrokes:
        i = int((k.start - t0) * 2000)
        if 200 < i < emg.shape[1] - 200:
            out.append((k.key, np.log((emg[:, i - 220 : i + 80] ** 2).mean(axis=1))))
    return out


def key_error(train: list, test: list) -> float:
    """Nearest-centroid key error on `test` over the keys `train` has."""
    by_key: dict[str, list] = {}
    for key, feature in train:
        by_key.setdefault(key, []).append(feature)
    names = sorted(by_key)
    centroids = np.stack([np.mean(by_key[k], axis=0) for k in names])
    centroids -= centroids.mean(axis=1, keepdims=True)
    scored = [(key, f - f.mean()) for key, f in test if key in by_key]
    wrong = sum(names[int(np.argmin(((centroids - f) ** 2).sum(axis=1)))] != key for key, f in scored)
    return wrong / len(scored)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    results = {}
    for tier, make in (("standard", make_emg_session), ("hard", make_hard_emg_session)):
        features = {(u, s): burst_features(make(u, s, 60.0)) for u in range(8) for s in range(4)}
        test = features[(0, 3)]
        generic = [x for u in range(1, 8) for s in range(4) for x in features[(u, s)]]
        personal = [x for s in range(3) for x in features[(0, s)]]
        results[tier] = {
            "generic_key_error": round(key_error(generic, test), 3),
            "personalized_key_error": round(key_error(personal, test), 3),
            "test_keystrokes": len(test),
        }
        print(tier, results[tier], flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
