"""lmstack: raw text to a served language model, on Ray."""

__version__ = "0.1.0"
