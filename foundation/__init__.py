"""foundation: stage 2, the BERT-style masked-token model over a frozen tokenizer's codes.

    from foundation import BiotokFoundation
    fm = BiotokFoundation.from_pretrained("pretrained_models/foundation-small")

Importing the package registers the model with transformers' Auto classes (see `tokenizer`).
"""

from transformers import AutoConfig, AutoModel

from .config import FoundationConfig
from .model import BiotokFoundation
from .tokens import TokenCorpus, load_token_corpora, tokenize_corpus

AutoConfig.register(FoundationConfig.model_type, FoundationConfig, exist_ok=True)
AutoModel.register(FoundationConfig, BiotokFoundation, exist_ok=True)

__all__ = ["BiotokFoundation", "FoundationConfig", "TokenCorpus", "load_token_corpora", "tokenize_corpus"]
