"""Machine translation zh<->en: an encoder-decoder from scratch, or a pretrained decoder LM (transfer)."""

from lmstack.config import TaskSection
from lmstack.tasks.translate.config import TranslateConfig

SECTION = TaskSection("translate", "translate", TranslateConfig, required=True)
SPEC = "lmstack.tasks.translate.spec:Translation"
