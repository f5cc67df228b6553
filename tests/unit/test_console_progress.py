"""The driver's training progress (lmstack.train.progress) and --quiet, without Ray."""

from __future__ import annotations

import json
import time

from builders import make_tiny_lm
from lmstack.cli import main
from lmstack.train.progress import follow, format_row


def test_follow_prints_new_rows_once_and_skips_a_resumed_runs_history(tmp_path, monkeypatch):
    monkeypatch.setattr("lmstack.train.progress.POLL_S", 0.05)
    path = tmp_path / "metrics.jsonl"
    old = {"step": 5, "train_loss": 3.0, "lr": 1e-3, "tokens_per_s": 100.0}
    path.write_text(json.dumps(old) + "\n")  # written by the run this one resumes
    lines: list[str] = []
    with follow(str(tmp_path), 20, lines.append):
        rows = [old, {"step": 10, "train_loss": 2.5, "lr": 5e-4, "tokens_per_s": 1234.0, "val_loss": 2.4}]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        time.sleep(0.3)
        rows.append({"step": 20, "train_loss": 2.0, "lr": 1e-4, "tokens_per_s": 2000.0, "val_loss": 2.1})
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert [line.split(" · ")[0] for line in lines] == ["step 10/20", "step 20/20"]
    assert "loss 2.5000" in lines[0] and "1,234 items/s" in lines[0] and "eval: val_loss 2.4000" in lines[0]
    assert "ETA" in lines[0] and "ETA" not in lines[1]  # nothing left to wait for at the last step


def test_format_row_without_training_figures():
    assert format_row({"step": 3, "val_wer": 0.25}, 10, time.time(), 2) .startswith("step 3/10 · ")
    assert "eval: val_wer 0.2500" in format_row({"step": 3, "val_wer": 0.25}, 10, time.time(), 2)


def test_quiet_still_prints_the_verbs_result(tmp_path, capsys):
    """--quiet silences stdout while the verb runs; the result goes to the real stdout (print_result)."""
    model = make_tiny_lm(tmp_path / "lm", seed=0)
    argv = ["generate", model, "--prompt", "ab", "--max-new-tokens", "5", "--seed", "1"]
    assert main(argv) == 0
    loud = capsys.readouterr().out
    assert main([*argv, "-q"]) == 0
    assert capsys.readouterr().out == loud and loud.strip()
