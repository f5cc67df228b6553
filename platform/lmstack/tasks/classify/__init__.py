"""Text classification, and transfer of a pretrained lmstack LM to it: full, freeze/LLRD, LoRA,
features, multi-task, and the TF-IDF / bag-of-words baselines (`lmstack finetune`)."""

from lmstack.config import TaskSection
from lmstack.tasks.classify.config import ClassifyConfig, check_recipe

SECTION = TaskSection("classify", "classify", ClassifyConfig, required=True, check=check_recipe,
                      data_keys=("format", "max_files", "val_fraction", "folds", "fold"))
SPEC = "lmstack.tasks.classify.spec:Classification"
