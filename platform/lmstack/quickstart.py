"""`lmstack quickstart`: raw text to generated text on the embedded cluster in minutes.

The default corpus is the Python standard library's own source, which every machine with Python
has: the top-level modules only (no site-packages), sorted, each capped in size, so the run is
deterministic and bounded.
"""

from __future__ import annotations

import os
import sysconfig
import time
from typing import Any

from lmstack.config import Recipe, apply_overrides, validate_recipe


def stdlib_glob() -> str:
    return os.path.join(sysconfig.get_paths()["stdlib"], "*.py")


def quickstart_recipe(data: str | None = None, run_dir: str | None = None,
                      overrides: list[str] | None = None) -> Recipe:
    raw: dict[str, Any] = {
        "name": "quickstart",
        "run_dir": run_dir or os.path.join("runs", "quickstart"),
        "data": {
            "paths": [data or stdlib_glob()],
            "max_bytes_per_file": 60_000,
            "max_files": 120,
            "val_fraction": 0.05,
            "block_size": 128,
            "clean": {"min_chars": 200, "max_repeated_line_fraction": 0.5},
            "dedup": {"exact": True, "near": True, "threshold": 0.8},
        },
        "tokenizer": {"kind": "bpe", "vocab_size": 2048},
        "model": {"family": "gpt2", "n_layer": 3, "n_head": 4, "n_embd": 128},
        "train": {
            "num_workers": 1, "threads_per_worker": 2, "batch_size": 16, "max_steps": 600,
            "lr": 2e-3, "min_lr": 2e-4, "warmup_steps": 50, "eval_every": 200, "eval_batches": 20,
            "log_every": 50,
        },
        "generate": {"prompt": "def ", "max_new_tokens": 120, "temperature": 0.7, "top_k": 40},
    }
    return validate_recipe(apply_overrides(raw, overrides or []), "quickstart")


def quickstart(data: str | None = None, run_dir: str | None = None, overrides: list[str] | None = None,
               log=print) -> dict[str, Any]:
    from lmstack import runtime
    from lmstack.models.generate import generate
    from lmstack.tasks import get_spec
    from lmstack.train.prepared import ensure_prepared
    from lmstack.train.trainer import train

    started = time.time()
    recipe = quickstart_recipe(data, run_dir, overrides)
    log(f"[1/3] prepare {recipe.data.paths[0]}")
    manifest = ensure_prepared(recipe, get_spec(recipe.task), log=log)
    log("[2/3] train")
    trained = train(recipe, log=log)
    log("[3/3] generate")
    g = recipe.generate
    text = generate(trained["model_dir"], g.prompt, g.max_new_tokens, g.temperature, g.top_k, seed=0)
    docs = manifest["documents"]
    figures = {
        "documents_read": docs["read"],
        "documents_kept": docs["kept"],
        "documents_rejected": docs["rejected"],
        "dropped_by_rule": docs["dropped_by_rule"],
        "duplicates": {"exact": docs["duplicates_exact"], "near": docs["duplicates_near"]},
        "tokens": manifest["tokens"],
        "steps": trained["steps"],
        "val_loss": trained["val_loss"],
        "val_bpb": trained["val_bpb"],
        "model_dir": trained["model_dir"],
        "sample": g.prompt + text,
    }
    summary = runtime.write_summary(recipe.resolved_run_dir(), "quickstart", figures, started)
    log("\n=== quickstart summary ===")
    log(f"data: {docs['read']} documents read, {docs['kept']} kept, {docs['rejected']} rejected, "
        f"dropped by rule {sum(docs['dropped_by_rule'].values())}, duplicates {docs['duplicates_exact']} exact "
        f"+ {docs['duplicates_near']} near; {manifest['tokens']['train']:,} train tokens")
    log(f"train: {trained['steps']} steps, val loss {trained['val_loss']:.3f}, bpb {trained['val_bpb']:.3f}")
    log(f"model: {trained['model_dir']}  ({summary['wall_time_s']:.0f} s in all)")
    log(f"sample:\n{figures['sample']}")
    return summary
