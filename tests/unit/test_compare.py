"""lmstack compare: a table (Markdown + PNG) from run dirs written the way the trainers write them."""

import json
import os
import time

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification

from lmstack import runtime
from lmstack.cli import main
from lmstack.compare import compare
from lmstack.compress import compress

LABELS = ["ci", "qu", "shi"]


def run_dir(root, name, n_embd, figures):
    """A finetune-style run: an exported model + summary.json through runtime.write_summary, as the trainer."""
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=30, n_layer=1, n_head=2, n_embd=n_embd, n_positions=32, pad_token_id=28,
                     num_labels=3, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    path = root / name
    model = GPT2ForSequenceClassification(cfg)
    model.save_pretrained(path / "model", safe_serialization=True)
    from lmstack.data.tokenizer import char_tokenizer

    char_tokenizer("abcdefghijklmnopqrstuvwxyz .").save_pretrained(path / "model")
    total = sum(p.numel() for p in model.parameters())
    started = time.time() - figures.pop("_secs", 1.0)
    runtime.write_summary(str(path), "finetune", {"model_dir": str(path / "model"), "total_params": total,
                                                  **figures}, started)
    return str(path), total


def test_compare_table_chart_and_files(tmp_path):
    # No trainable_params in "full": compare counts the exported weights, as for a plain train run.
    full, full_params = run_dir(tmp_path, "full", 32, {"strategy": "full", "val_accuracy": 0.8, "val_macro_f1": 0.75,
                                                       "_secs": 12.0})
    lora, _ = run_dir(tmp_path, "lora", 32, {"strategy": "lora", "val_accuracy": 0.7, "val_macro_f1": 0.6,
                                             "trainable_params": 1234, "_secs": 8.0})
    student, student_params = run_dir(tmp_path, "student", 16, {"strategy": "distill", "val_macro_f1": 0.55,
                                                                "_secs": 5.0})
    q = str(tmp_path / "full_int8")
    compress(os.path.join(full, "model"), "int8", q, runs=2, log=lambda *_: None)

    out = tmp_path / "cmp"
    result = compare([full, lora, student, q], str(out))
    rows = {r["run"]: r for r in result["rows"]}
    assert result["metric"] == "val_macro_f1"
    assert rows["full"]["metric"] == 0.75 and rows["full"]["trainable_params"] == pytest.approx(full_params, rel=0.05)
    assert rows["lora"]["trainable_params"] == 1234 and rows["lora"]["strategy"] == "lora"
    assert rows["full"]["train_time_s"] == pytest.approx(12.0, abs=0.5)
    assert rows["student"]["model_bytes"] < rows["full"]["model_bytes"]
    assert rows["full_int8"]["strategy"] == "int8" and rows["full_int8"]["metric"] is None  # no data given
    assert rows["full_int8"]["model_bytes"] < rows["full"]["model_bytes"]
    assert student_params < full_params

    md = (out / "compare.md").read_text().splitlines()
    assert md[0].startswith("| run | strategy | val_macro_f1 |") and len(md) == 2 + 4
    assert "| lora | lora | 0.6000 | 1,234 |" in md[3]
    png = (out / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert json.load(open(out / "compare.json"))["metric"] == "val_macro_f1"


def test_compare_cli_and_bad_run_dir(tmp_path, capsys):
    lm, _ = run_dir(tmp_path, "lm", 16, {"val_loss": 2.5, "_secs": 3.0})
    assert main(["compare", lm, "--output", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "val_loss" in printed and "2.5000" in printed
    assert main(["compare", lm, str(tmp_path / "nothing"), "--output", str(tmp_path / "o")]) == 2
    assert "no summary.json" in capsys.readouterr().err
