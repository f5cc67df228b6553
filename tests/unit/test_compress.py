"""lmstack compress: int8 and pruned directories load, predict and are measured; no pickles anywhere."""

import json
import os
import random

import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForSequenceClassification,
)

from lmstack.cli import main
from lmstack.compress import compress, load_model, predict
from lmstack.compress.load import weight_bytes
from lmstack.compress.prune import prunable
from lmstack.data.tokenizer import char_tokenizer

LABELS = ["ci", "qu", "shi"]
ALPHABET = "abcdefghijklmnopqrstuvwxyz ."
quiet = lambda *_: None  # noqa: E731


def texts(n, seed=0):
    rng = random.Random(seed)
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(8, 30))) for _ in range(n)]


def save_dir(model, path):
    tok = char_tokenizer(ALPHABET)
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return str(path)


def gpt2_classifier(path, seed=0):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=30, n_layer=2, n_head=2, n_embd=64, n_positions=64, pad_token_id=28,
                     num_labels=3, id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    return save_dir(GPT2ForSequenceClassification(cfg), path)


def labelled_file(path, n=40):
    rows = [json.dumps({"text": t, "label": LABELS[i % 3]}) for i, t in enumerate(texts(n))]
    rows += ['{"text": "broken', json.dumps({"label": "ci"}), json.dumps({"text": "abc", "label": "fu"})]
    path.write_text("\n".join(rows) + "\n")
    return str(path)


def no_pickles(model_dir):
    return all(f.endswith((".json", ".safetensors", ".jsonl", ".jinja", ".txt")) for f in os.listdir(model_dir))


def test_int8_gpt2_lm_is_smaller_and_close(tmp_path):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=30, n_layer=2, n_head=2, n_embd=64, n_positions=64, eos_token_id=28)
    src = save_dir(GPT2LMHeadModel(cfg), tmp_path / "lm")
    (tmp_path / "text.txt").write_text(" ".join(texts(60)))
    rep = compress(src, "int8", str(tmp_path / "lm_int8"), data=str(tmp_path / "text.txt"), runs=3, log=quiet)

    assert rep["conv1d_converted"] == 8  # c_attn, c_proj, c_fc, mlp.c_proj per block
    assert rep["quantized_layers"] == 8  # lm_head is tied to the embedding: stays float
    assert rep["compressed"]["weight_bytes"] < 0.7 * rep["original"]["weight_bytes"]
    assert rep["compressed"]["params"] == rep["original"]["params"]
    assert abs(rep["delta"]["loss"]) < 0.02 and rep["data_rows"] > 0
    assert no_pickles(tmp_path / "lm_int8")

    original, quant = load_model(src), load_model(str(tmp_path / "lm_int8"))
    ids = torch.randint(0, 28, (4, 32), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = original(input_ids=ids).logits, quant(input_ids=ids).logits
    assert (a - b).abs().max() < 0.05 * a.abs().max()
    assert torch.equal(quant.lm_head.weight, quant.transformer.wte.weight)  # the tie survived the reload


def test_int8_classifier_predicts_and_counts_rejects(tmp_path):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=30, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, max_position_embeddings=64, pad_token_id=28, num_labels=3,
                      id2label=dict(enumerate(LABELS)), label2id={k: i for i, k in enumerate(LABELS)})
    src = save_dir(LlamaForSequenceClassification(cfg), tmp_path / "llama")
    data = labelled_file(tmp_path / "val.jsonl")
    out = str(tmp_path / "llama_int8")
    rep = compress(src, "int8", out, data=data, runs=3, log=quiet)

    assert rep["kind"] == "sequence_classifier" and rep["conv1d_converted"] == 0
    assert rep["quantized_layers"] == 2 * 7 + 1  # q, k, v, o, gate, up, down per block + the score head
    assert rep["data_rows"] == 40 and rep["rejected"] == 3
    reasons = [json.loads(line)["reason"] for line in open(os.path.join(out, "rejects.jsonl"))]
    assert any("not JSON" in r for r in reasons) and any("not in the model's labels" in r for r in reasons)
    assert rep["delta"]["prediction_agreement"] >= 0.9
    assert {"accuracy", "macro_f1"} <= set(rep["compressed"]) and "macro_f1" in rep["delta"]

    sample = texts(6, seed=3)
    got, ref = predict(out, sample), predict(src, sample)
    assert [g["label"] for g in got] == [r["label"] for r in ref]
    assert all(set(g["scores"]) == set(LABELS) and sum(g["scores"].values()) == pytest.approx(1, abs=1e-5)
               for g in got)


@pytest.mark.parametrize("structured", [False, True])
def test_pruned_classifier_has_requested_sparsity_and_loads(tmp_path, structured):
    src = gpt2_classifier(tmp_path / "clf")
    out = str(tmp_path / "pruned")
    rep = compress(src, "prune", out, amount=0.3, structured=structured, data=labelled_file(tmp_path / "v.jsonl"),
                   runs=3, log=quiet)
    assert rep["method"] == ("ln_structured" if structured else "l1_unstructured")
    assert no_pickles(out) and weight_bytes(out) == pytest.approx(weight_bytes(src), rel=0.01)

    # A plain transformers directory: loads without lmstack, and the zeros are really there.
    model = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True, use_safetensors=True)
    zeros = total = 0
    for _, m, dim in prunable(model):
        w = m.weight
        if structured:  # whole output channels are zero: round(0.3 * channels) of them in every layer
            dead = int((w.abs().sum(dim=1 - dim) == 0).sum())
            assert dead == round(0.3 * w.shape[dim])
        zeros, total = zeros + int((w == 0).sum()), total + w.numel()
    assert zeros / total == pytest.approx(0.3, abs=0.01)
    assert rep["sparsity"] == pytest.approx(zeros / total)
    assert rep["compressed"]["nonzero_params"] == rep["original"]["nonzero_params"] - zeros
    assert [p["label"] for p in predict(out, texts(5))] and 0 <= rep["compressed"]["macro_f1"] <= 1


def test_cli_compress_and_bad_input(tmp_path, capsys):
    src = gpt2_classifier(tmp_path / "clf")
    assert main(["compress", "--model", src, "--method", "int8", "--output", str(tmp_path / "q"), "--runs", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["compressed"]["latency"]["runs"] == 2 and printed["method"] == "int8_dynamic"
    assert os.path.exists(tmp_path / "q" / "compress_report.json")

    with pytest.raises(SystemExit) as exit_info:
        main(["compress", "--model", src, "--method", "prune", "--amount", "1.5", "--output", str(tmp_path / "p")])
    assert exit_info.value.code == 2 and "--amount must be between 0 and 1" in capsys.readouterr().err
    assert main(["compress", "--model", str(tmp_path / "none"), "--method", "int8", "--output",
                 str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # int8 of an int8 directory
        main(["compress", "--model", str(tmp_path / "q"), "--method", "int8", "--output", str(tmp_path / "qq")])
    assert "already int8" in capsys.readouterr().err


def test_measured_on_a_prepared_classify_split(tmp_path):
    """--data may be a prepared split (padded input_ids + attention_mask + labels, as classify writes it)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = gpt2_classifier(tmp_path / "clf")
    tok = char_tokenizer(ALPHABET)
    rows = [tok(t, add_special_tokens=False)["input_ids"] for t in texts(24)]
    ids = np.full((24, 32), 28, dtype=np.int32)
    mask = np.zeros((24, 32), dtype=np.int8)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = r, 1
    (tmp_path / "val").mkdir()
    pq.write_table(pa.table({
        "input_ids": pa.FixedSizeListArray.from_arrays(pa.array(ids.ravel()), 32),
        "attention_mask": pa.FixedSizeListArray.from_arrays(pa.array(mask.ravel()), 32),
        "labels": pa.array([i % 3 for i in range(24)], pa.int64()),
    }), tmp_path / "val" / "part-00000.parquet")
    rep = compress(src, "prune", str(tmp_path / "p"), amount=0.5, data=str(tmp_path / "val"), runs=2, log=quiet)
    assert rep["data_rows"] == 24 and rep["rejected"] == 0
    assert rep["original"]["latency"]["batch_shape"] == [8, max(len(r) for r in rows[:8])]
    # The original's figures equal a direct computation with the unpadded rows.
    model = load_model(src)
    with torch.no_grad():
        preds = [int(model(input_ids=torch.tensor([r])).logits.argmax()) for r in rows]
    assert rep["original"]["accuracy"] == pytest.approx(sum(p == i % 3 for i, p in enumerate(preds)) / 24)
