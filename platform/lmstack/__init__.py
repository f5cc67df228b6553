"""lmstack: raw text to a served language model, on Ray."""

__version__ = "0.1.0"

# Task packages register their recipe sections with lmstack.config (pydantic only; specs load lazily).
import lmstack.tasks  # noqa: E402,F401
