"""Tokens/s of `lmstack prepare` against `tokenizers`' own batch encoding on the same text and cores.

Both use the same local tokenizer (trained once beforehand, so neither pays for training). lmstack's
figure is the whole prepare (read, clean, exact dedup, tokenize, pack, write Parquet) on Ray Data;
the baseline reads the files and calls `encode_batch` (Rust, all cores) and does nothing else.
Run: .venv/bin/python benchmarks/prepare_throughput.py [--files 400]
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sysconfig
import tempfile
import time

from lmstack import runtime
from lmstack.config import validate_recipe
from lmstack.data.tokenizer import load_tokenizer, train_bpe
from lmstack.tasks import get_spec


def corpus(n: int) -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    files = sorted(p for p in glob.glob(os.path.join(root, "**", "*.py"), recursive=True)
                   if "site-packages" not in p)
    return files[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=400)
    args = ap.parse_args()
    files = corpus(args.files)
    texts = [open(f, encoding="utf-8", errors="replace").read() for f in files]
    with tempfile.TemporaryDirectory() as tmp:
        tok_dir = os.path.join(tmp, "tok")
        train_bpe(texts[:50], 4096).save_pretrained(tok_dir)

        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        tok = load_tokenizer(tok_dir)._tokenizer
        start = time.perf_counter()
        raw = [open(f, encoding="utf-8", errors="replace").read() for f in files]
        n_tokens = sum(len(e.ids) for e in tok.encode_batch(raw))
        plain_s = time.perf_counter() - start

        runtime.connect()
        r = validate_recipe({
            "name": "prepare_throughput", "run_dir": os.path.join(tmp, "run"),
            "data": {"paths": files, "block_size": 256, "dedup": {"exact": True, "near": False}},
            "tokenizer": {"kind": "pretrained", "path": tok_dir},
        })
        start = time.perf_counter()
        m = get_spec("lm").prepare(r, log=lambda *_: None)
        lm_s = time.perf_counter() - start
        lm_tokens = m["tokens"]["train"] + m["tokens"]["val"]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    print(json.dumps({
        "files": len(files), "megabytes": round(mb, 1),
        "plain_tokens_per_s": round(n_tokens / plain_s), "lmstack_tokens_per_s": round(lm_tokens / lm_s),
        "ratio": round((lm_tokens / lm_s) / (n_tokens / plain_s), 3),
        "plain_s": round(plain_s, 2), "lmstack_s": round(lm_s, 2),
    }))


if __name__ == "__main__":
    main()
