"""A plain JSON-lines tracker for Accelerate: `accelerator.log` appends `{"step": n, ...}` to log.jsonl."""

from __future__ import annotations

import json
from pathlib import Path

from accelerate.tracking import GeneralTracker, on_main_process


class JSONLinesTracker(GeneralTracker):
    """The default tracker of biotok's training loops; others (tensorboard, wandb...) can be added."""

    name = "jsonl"
    requires_logging_directory = True

    def __init__(self, logging_dir: str, file_name: str = "log.jsonl"):
        super().__init__()
        self.path = Path(logging_dir) / file_name

    @property
    def tracker(self) -> Path:
        return self.path

    @on_main_process
    def store_init_configuration(self, values: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        (self.path.parent / "hparams.json").write_text(json.dumps(values, indent=2, default=str))

    @on_main_process
    def log(self, values: dict, step: int | None = None, **kwargs) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **values}) + "\n")
