"""Model factories (transformers classes built from recipe fields), local loading, parameter bookkeeping."""

from lmstack.models.factory import build_causal_lm, load_causal_lm
from lmstack.models.params import count_params, default_param_groups

__all__ = ["build_causal_lm", "count_params", "default_param_groups", "load_causal_lm"]
