"""Time and peak memory of `biotok prepare` on the shared real recordings (CPU).

    python benchmarks/prepare_real.py --real ../shared/data/real --repeats 3
Each repeat prepares into a fresh folder in a child process; peak memory is the child's max RSS.
"""

from __future__ import annotations

import argparse
import platform
import resource
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", default="../shared/data/real")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times, peaks = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            code = (
                "import resource, sys; from data_prep.prepare import main; rc = main(sys.argv[1:]); "
                "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
            )
            cmd = [
                sys.executable,
                "-c",
                code,
                "--sources",
                "shared_real",
                "--root",
                args.real,
                "--out",
                out,
                "--no_progress",
            ]
            start = time.perf_counter()
            result = subprocess.run(cmd, capture_output=True, text=True, check=True)
            times.append(time.perf_counter() - start)
            peaks.append(int(result.stdout.split("MAXRSS")[-1]) / 1024)
    print(result.stdout.rsplit("MAXRSS", 1)[0].strip())
    print(
        f"machine: {platform.processor() or platform.machine()}, {resource.getpagesize()} B pages, python {platform.python_version()}"
    )
    print(f"wall time (s): median {sorted(times)[len(times) // 2]:.1f}, all {[round(t, 1) for t in times]}")
    print(f"peak RSS (MiB): max {max(peaks):.0f}")


if __name__ == "__main__":
    main()
