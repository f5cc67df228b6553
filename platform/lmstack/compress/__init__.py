"""Smaller models from exported ones: dynamic int8 quantization and pruning, with a measured report."""

from lmstack.compress.load import load_model, model_kind, predict
from lmstack.compress.run import compress

__all__ = ["compress", "load_model", "model_kind", "predict"]
