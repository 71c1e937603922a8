"""biotok: the orchestration above the stages: the `biotok` command (`biotok.cli`) and the main job
that runs every stage end to end (`biotok.pipeline`, `biotok run`). The stages themselves are the
packages `data_prep`, `tokenizer`, `foundation` and `finetune`, on the shared layer `core`."""
