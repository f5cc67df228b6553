"""Machine translation zh<->en: an encoder-decoder from scratch, or a pretrained decoder LM (transfer)."""

from lmstack.config import TaskSection
from lmstack.tasks.translate.config import TranslateConfig

# Pairs are read whole (cmn.txt format), deduplicated as pairs and split by translate.test_size/val_size.
SECTION = TaskSection("translate", "translate", TranslateConfig, required=True, data_keys=())
SPEC = "lmstack.tasks.translate.spec:Translation"
