"""finetune: stage 3, downstream tasks (emg2qwerty CTC keystroke decoding, classification).

Importing the package registers its saved models (CTC models, classifiers) with transformers' Auto
classes (see `tokenizer`).
"""

from transformers import AutoConfig, AutoModel

from .classifier import BiotokClassifier, ClassifierConfig
from .emg_models import EmgCTCConfig, EmgCTCModel

for _config, _model in ((EmgCTCConfig, EmgCTCModel), (ClassifierConfig, BiotokClassifier)):
    AutoConfig.register(_config.model_type, _config, exist_ok=True)
    AutoModel.register(_config, _model, exist_ok=True)

__all__ = ["BiotokClassifier", "ClassifierConfig", "EmgCTCConfig", "EmgCTCModel"]
