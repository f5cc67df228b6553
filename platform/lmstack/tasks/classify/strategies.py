"""Transfer a pretrained lmstack LM to classification: full, freeze/LLRD, LoRA, features, multi-task,
and the TF-IDF / bag-of-words baselines, behind `lmstack finetune` (see lmstack.tasks.classify.run)."""

TORCH_STRATEGIES = ("full", "freeze", "lora", "multitask")
SKLEARN_STRATEGIES = ("features", "tfidf", "bow")
