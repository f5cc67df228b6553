"""`lmstack compress`: an exported model -> an int8 or pruned model directory + compress_report.json.

The original and the compressed model are measured by the same code on the same fixed batch and
data; the compressed one is measured after it has been written and loaded back, so the report
describes the directory that is served, not an in-memory object.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Literal

from lmstack.compress import report
from lmstack.compress.evaldata import read_eval_data
from lmstack.compress.load import (
    MODEL_MANIFEST,
    context_length,
    copy_side_files,
    is_quantized,
    load_model,
    load_tokenizer,
    model_kind,
    weight_bytes,
)

REPORT = "compress_report.json"


def _lineage(src: str, dst: str, facts: dict[str, Any]) -> None:
    """lmstack_model.json of the output: the source's lineage plus what was done to it."""
    path = os.path.join(src, MODEL_MANIFEST)
    lineage = json.load(open(path)) if os.path.exists(path) else {}
    lineage["compression"] = {"source": os.path.abspath(src), **facts}
    with open(os.path.join(dst, MODEL_MANIFEST), "w") as f:
        json.dump(lineage, f, indent=2, default=str)


def compress(model_dir: str, method: Literal["int8", "prune"], output: str, amount: float = 0.3,
             structured: bool = False, data: str | None = None, text_field: str = "text",
             label_field: str = "label", batch_size: int = 8, seq_len: int = 64, runs: int = 20,
             log=print) -> dict[str, Any]:
    started = time.time()
    if method not in ("int8", "prune"):
        raise ValueError(f"--method must be int8 or prune, got {method!r}")
    if not os.path.isdir(model_dir):
        raise FileNotFoundError(f"--model {model_dir!r} does not exist")
    if is_quantized(model_dir):
        raise ValueError(f"{model_dir} is already int8; compress a float model directory")
    if os.path.abspath(output) == os.path.abspath(model_dir):
        raise ValueError("--output must differ from --model")
    kind = model_kind(model_dir)
    tok = load_tokenizer(model_dir)
    original = load_model(model_dir)
    pad_id = original.config.pad_token_id if original.config.pad_token_id is not None else tok.pad_token_id
    seq_len = min(seq_len, context_length(original))
    evaldata = None
    if data:
        evaldata = read_eval_data(data, kind, tok, original.config, text_field, label_field,
                                  block_size=min(128, context_length(original)))
    batch = report.latency_batch(original, evaldata, batch_size, seq_len, pad_id)
    before = report.measure(original, kind, weight_bytes(model_dir), evaldata, batch, pad_id, runs)

    tmp = output.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if method == "int8":
        from lmstack.compress.quantize import quantize, save_quantized

        qmodel, facts = quantize(original)
        save_quantized(qmodel, facts, model_dir, tmp)
        facts = {"method": "int8_dynamic", "dtype": "qint8", "quantized_layers": len(facts["modules"]),
                 "conv1d_converted": facts["conv1d_converted"]}
    else:
        from lmstack.compress.prune import prune_model

        facts = prune_model(original, amount, structured)
        original.save_pretrained(tmp, safe_serialization=True)
        copy_side_files(model_dir, tmp, skip=("config.json", "generation_config.json"))  # saved just now
    _lineage(model_dir, tmp, {k: v for k, v in facts.items() if k != "sparsity_by_layer"})
    shutil.rmtree(output, ignore_errors=True)
    os.replace(tmp, output)  # readers never see a half-written directory

    compressed = load_model(output)  # measured as loaded back from disk
    after = report.measure(compressed, kind, weight_bytes(output), evaldata, batch, pad_id, runs)
    result = {
        "verb": "compress",
        "kind": kind,
        "source": os.path.abspath(model_dir),
        "model_dir": os.path.abspath(output),
        **facts,
        "data": data,
        "data_rows": len(evaldata.rows) if evaldata else 0,
        "rejected": len(evaldata.rejects) if evaldata else 0,
        "original": {k: v for k, v in before.items() if k != "predictions"},
        "compressed": {k: v for k, v in after.items() if k != "predictions"},
        "delta": report.delta(before, after),
        "wall_time_s": round(time.time() - started, 2),
    }
    if evaldata and evaldata.rejects:
        with open(os.path.join(output, "rejects.jsonl"), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in evaldata.rejects)
    with open(os.path.join(output, REPORT), "w") as f:
        json.dump(result, f, indent=2)
    d = result["delta"]
    log(f"compressed {model_dir} ({method}) -> {output}: weights x{d['weight_bytes_ratio']:.2f}, "
        f"nonzero params x{d['nonzero_params_ratio']:.2f}, latency speed-up x{d['latency_speedup']:.2f}")
    return result
