"""What a newcomer meets first: package exports, transformers' Auto classes, and help for every flag."""

import dataclasses
import importlib
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[1] / "pretrained_models"


def test_packages_export_their_public_classes():
    import finetune
    from foundation import BiotokFoundation, FoundationConfig  # noqa: F401
    from tokenizer import BiotokTokenizer, Encoding, ResidualVQ, TokenizerConfig  # noqa: F401

    assert {"EmgCTCModel", "BiotokClassifier"} <= set(finetune.__all__)


@pytest.mark.parametrize("folder", sorted(p.name for p in MODELS.iterdir() if p.is_dir()))
def test_auto_model_loads_every_shipped_model(folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoConfig, AutoModel

    import finetune  # noqa: F401  (importing the packages registers their models)
    import foundation  # noqa: F401
    import tokenizer  # noqa: F401

    config = AutoConfig.from_pretrained(MODELS / folder)
    model, info = AutoModel.from_pretrained(MODELS / folder, output_loading_info=True)
    assert type(model).config_class is type(config)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def _command_dataclasses():
    from biotok.cli import COMMANDS

    for words, (target, _) in COMMANDS.items():
        module = importlib.import_module(target.partition(":")[0])
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and dataclasses.is_dataclass(value)
                and value.__module__ == module.__name__
                and value.__name__.endswith("Args")
            ):
                yield " ".join(words), value


def test_every_flag_of_every_command_has_help():
    from data_prep.config import build_parser

    seen, missing = 0, []
    for command, args_type in _command_dataclasses():
        for action in build_parser(args_type)._actions:
            if action.dest != "help":
                seen += 1
                if not (action.help or "").strip():
                    missing.append(f"biotok {command} --{action.dest}")
    assert seen > 150 and not missing, missing
