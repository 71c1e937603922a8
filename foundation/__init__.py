"""foundation: stage 2, the BERT-style masked-token model over a frozen tokenizer's codes.

    from foundation import BiotokFoundation
    fm = BiotokFoundation.from_pretrained("pretrained_models/foundation-small")

Importing the package registers the model with transformers' Auto classes (see `tokenizer`).
"""

from transformers import AutoConfig, AutoModel

from .config import FoundationConfig
from .model import BiotokFoundation

AutoConfig.register(FoundationConfig.model_type, FoundationConfig, exist_ok=True)
AutoModel.register(FoundationConfig, BiotokFoundation, exist_ok=True)
TOKEN_HELPERS = ("TokenCorpus", "load_token_corpora", "tokenize_corpus")


def __getattr__(name: str):
    # imported on first use, not with the package: `python -m foundation.tokens` then runs the module
    # once, as __main__, instead of importing it and running a second copy (runpy's RuntimeWarning)
    if name in TOKEN_HELPERS:
        from . import tokens

        return getattr(tokens, name)
    raise AttributeError(f"module 'foundation' has no attribute {name!r}")


__all__ = ["BiotokFoundation", "FoundationConfig", *TOKEN_HELPERS]
