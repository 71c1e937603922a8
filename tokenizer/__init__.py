"""tokenizer: stage 1, the multi-scale RVQ patch tokenizer (signal -> integer codes -> signal).

    from tokenizer import BiotokTokenizer
    tok = BiotokTokenizer.from_pretrained("pretrained_models/tokenizer-small")

Importing the package registers the model with transformers' Auto classes, so that
`transformers.AutoModel.from_pretrained(folder)` loads a saved tokenizer (no trust_remote_code).
"""

from transformers import AutoConfig, AutoModel

from .config import TokenizerConfig
from .model import BiotokTokenizer, Encoding
from .rvq import ResidualVQ

AutoConfig.register(TokenizerConfig.model_type, TokenizerConfig, exist_ok=True)
AutoModel.register(TokenizerConfig, BiotokTokenizer, exist_ok=True)

__all__ = ["BiotokTokenizer", "Encoding", "ResidualVQ", "TokenizerConfig"]
