"""core: the shared layer below the stages: neural building blocks (`core.blocks`), channel
vocabularies (`core.channels`) and the training machinery every Accelerate loop uses (`core.training`:
safetensors checkpoints with exact resume, weight-decay groups, the learning-rate schedule, the end of
training). It imports nothing of the stages; `tokenizer`, `foundation` and `finetune` build on it."""
