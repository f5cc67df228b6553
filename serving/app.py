"""The lmstack Serve application for `serve run` / `serve deploy` / KubeRay RayService.

    serve run serving/config.yaml              # from the repository root
    serve run serving.app:app models='[{"name": "shakespeare", "path": "runs/shakespeare_char/model"}]'

`args` are lmstack.api.settings.ServeSettings (models, api_key, feedback_dir, limits, ...).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

# `serve run` imports this file with the repository root on sys.path, not always the package.
_PLATFORM = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "platform")
if os.path.isdir(_PLATFORM) and _PLATFORM not in sys.path:
    sys.path.insert(0, _PLATFORM)

from lmstack.serve.app import build_app  # noqa: E402


def app(args: dict[str, Any]) -> Any:
    """Application builder: Serve calls it with the config's `args` (strings on the command line)."""
    args = {k: json.loads(v) if isinstance(v, str) and v[:1] in "[{" else v for k, v in args.items()}
    return build_app(args)
