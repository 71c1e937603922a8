"""Shared timing helper of the GPU benchmarks: warm-ups, then the median of synchronised repeats."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import torch


def time_call(fn: Callable[[], object], device: torch.device, warmup: int = 3, repeats: int = 10) -> float:
    """Median seconds of one `fn()` call (CUDA events on a GPU, a wall clock elsewhere)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            fn()
            times.append(time.perf_counter() - began)
    return statistics.median(times)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"cpu, torch {torch.__version__}"


def write_results(out: str, device: torch.device, rows: list[dict], **extra) -> None:
    """One benchmark's JSON: hardware, date, anything extra, and its rows."""
    summary = {**extra, "hardware": hardware(device), "date": str(date.today()), "results": rows}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(summary, indent=1))
