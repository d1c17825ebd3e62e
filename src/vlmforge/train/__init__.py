"""Training: recipes, stages (pretrain / finetune, full or LoRA), Trainer glue, LoRA merging."""
