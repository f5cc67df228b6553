"""Causal language modelling: pretraining on raw text, generation, completions."""

from lmstack.config import TaskSection

SECTION = TaskSection("lm")
SPEC = "lmstack.tasks.lm.spec:LanguageModeling"
