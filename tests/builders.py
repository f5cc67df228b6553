"""Tiny deterministic data and models the tests build for themselves (no shared data sets needed)."""

from __future__ import annotations

import json
import random
import socket
import string
from pathlib import Path

from lmstack.config import validate_recipe

WORDS = (
    "the model reads text and learns which token comes next while the cluster shares the work "
    "across workers so every stage writes its result to storage for the next stage"
).split()


def make_corpus(root: Path, docs: int = 60, seed: int = 0) -> Path:
    """A small deterministic text corpus: one JSONL file and one directory of .txt files."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(docs):
        words = [rng.choice(WORDS) for _ in range(rng.randint(30, 80))]
        lines.append('{"text": "' + " ".join(words) + '."}')
    (root / "docs.jsonl").write_text("\n".join(lines) + "\n")
    txt = root / "txt"
    txt.mkdir(exist_ok=True)
    for i in range(5):
        words = [rng.choice(WORDS) for _ in range(120)]
        (txt / f"{i}.txt").write_text(" ".join(words) + "\n")
    return root


def tiny_recipe(tmp: Path, data: Path, **train) -> object:
    raw = {
        "name": "tiny",
        "run_dir": str(tmp / "run"),
        "data": {"paths": [str(data)], "block_size": 32, "val_fraction": 0.2},
        "tokenizer": {"kind": "char"},
        "model": {"family": "gpt2", "n_layer": 1, "n_head": 2, "n_embd": 16},
        "tracking": False,  # MLflow costs seconds per run; tests whose subject it is turn it on
        "train": {
            "num_workers": 2, "batch_size": 4, "max_steps": 20, "lr": 3e-3, "min_lr": 3e-4,
            "warmup_steps": 2, "eval_every": 10, "eval_batches": 4, "log_every": 5, **train,
        },
    }
    return validate_recipe(raw, "test")


ALPHABETS = {"red": "abcdefg", "green": "hijklmn", "blue": "opqrstu"}


def make_labelled(root: Path, n: int = 150, seed: int = 0) -> Path:
    """Three classes, each drawing most characters from its own alphabet; one JSONL file."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        label = list(ALPHABETS)[i % 3]
        chars = ALPHABETS[label] + "xyz "
        text = "".join(rng.choice(chars) for _ in range(rng.randint(10, 30)))
        lines.append(json.dumps({"id": f"r{i}", "text": text, "label": label, "mood": ["up", "down"][i % 2]}))
    (root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return root


def classify_recipe(tmp: Path, data_path: Path, **sections) -> object:
    raw = {
        "name": "tiny_cls", "task": "classify", "run_dir": str(tmp / "run"),
        "data": {"paths": [str(data_path)], "val_fraction": 0.25},
        "tokenizer": {"kind": "char"},
        "classify": {"max_length": 24},
        "tracking": False,
        "model": {"family": "gpt2", "n_layer": 2, "n_head": 2, "n_embd": 16},
        # In process: these tests are about the task; Ray Train's worker group is tested in test_train.py.
        "train": {"num_workers": 1, "in_process": True, "batch_size": 8, "max_steps": 8, "lr": 3e-3, "min_lr": 3e-4,
                  "warmup_steps": 1, "eval_every": 8, "eval_batches": 10, "log_every": 4, "keep_checkpoints": 1},
    }
    for key, value in sections.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) else value
    return validate_recipe(raw, "test")


def make_tiny_lm(out, seed: int) -> str:
    """A 2-layer GPT-2 on the char tokenizer, saved as safetensors: seconds, not a training run."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from lmstack.data.tokenizer import char_tokenizer

    torch.manual_seed(seed)
    tok = char_tokenizer(string.printable)
    eos = tok.eos_token_id
    cfg = GPT2Config(vocab_size=len(tok), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                     bos_token_id=eos, eos_token_id=eos, pad_token_id=eos)
    GPT2LMHeadModel(cfg).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return str(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]




def make_finished_run(root: Path, name: str = "tiny", steps: int = 20, seed: int = 0) -> Path:
    """A run directory as `lmstack train` leaves it (summary.json, metrics.jsonl, model/ with lineage,
    data/manifest.json), with a real tiny exported LM but no training: for report and tracking tests."""
    import math

    from lmstack.config import validate_recipe

    run = root / name
    (run / "data").mkdir(parents=True, exist_ok=True)
    model_dir = make_tiny_lm(run / "model", seed)
    recipe = validate_recipe({"name": name, "run_dir": str(run), "data": {"paths": [str(root / "corpus")]},
                              "tokenizer": {"kind": "char"}, "train": {"max_steps": steps, "warmup_steps": 2}},
                             "test")
    manifest = {"recipe": name, "task": "lm", "recipe_hash": "d" * 16, "prepare_hash": f"p{seed:015d}",
                "inputs": [str(root / "corpus")],
                "documents": {"read": 60, "rejected": 3, "rejected_by_reason": {"empty": 2, "not_utf8": 1},
                              "dropped_by_rule": {}, "duplicates_exact": 4, "duplicates_near": 1, "kept": 52},
                "tokenizer": {"kind": "char", "dir": str(run / "data" / "tokenizer"), "vocab_size": 100},
                "tokens": {"train": 9000, "val": 1000}, "blocks": {"train": 280, "val": 31}, "block_size": 32}
    (run / "data" / "manifest.json").write_text(json.dumps(manifest))
    lineage = {"task": "lm", "recipe": recipe.model_dump(mode="json"), "recipe_hash": recipe.fingerprint(),
               "data_manifest": str(run / "data" / "manifest.json"), "checkpoint": str(run / "train" / "ckpt")}
    (run / "model" / "lmstack_model.json").write_text(json.dumps(lineage))
    rows = []
    for step in range(5, steps + 1, 5):
        row = {"epoch": 0, "tokens_seen": step * 128, "step": step, "train_loss": 4.0 - 0.1 * step + seed * 0.01,
               "lr": 1e-3 * (1 - step / (steps + 1)), "tokens_per_s": 1000.0 + step}
        if step % 10 == 0:
            loss = 4.1 - 0.09 * step + seed * 0.01
            row.update(val_loss=loss, val_ppl=math.exp(loss), val_bpb=loss / math.log(2))
        rows.append(row)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    last = rows[-1]
    summary = {"verb": "train", "val_loss": last["val_loss"], "val_ppl": last["val_ppl"], "steps": steps,
               "best_step": steps, "model_dir": model_dir, "checkpoint": lineage["checkpoint"], "wall_time_s": 12.5}
    (run / "summary.json").write_text(json.dumps(summary))
    return run
