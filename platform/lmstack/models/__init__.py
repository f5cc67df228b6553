"""Model factories (transformers classes built from recipe fields) and local loading."""

from lmstack.models.factory import build_causal_lm, count_parameters, load_causal_lm

__all__ = ["build_causal_lm", "count_parameters", "load_causal_lm"]
