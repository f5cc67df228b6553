"""Translation task: TSV reader, leak-free split, a tiny Marian model trained on Ray, decoding, CLI."""

from __future__ import annotations

import io
import json
import random
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import torch

from lmstack.config import RecipeError, validate_recipe
from lmstack.tasks.translate import data as tdata

# A deterministic word-substitution "language": every English word has one Chinese character.
LEXICON = {
    "tom": "汤", "mary": "玛", "cat": "猫", "dog": "狗", "eats": "吃", "sees": "看", "big": "大",
    "small": "小", "red": "红", "fish": "鱼", "book": "书", "reads": "读", "likes": "喜", "the": "这",
    "old": "老", "new": "新",
}
BROKEN = [
    "just english and no tab at all",
    "\t空的英文。\tCC-BY",
    "Too\tmany\tfields\there",
    "No Chinese here.\tnot chinese either\tCC-BY",
]


def synthetic_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    words = sorted(LEXICON)
    seen, pairs = set(), []
    while len(pairs) < n:
        sent = [rng.choice(words) for _ in range(rng.randint(3, 6))]
        if tuple(sent) in seen:
            continue
        seen.add(tuple(sent))
        pairs.append((" ".join(sent) + ".", "".join(LEXICON[w] for w in sent) + "。"))
    return pairs


def write_corpus(path: Path, n: int = 400) -> dict[str, int]:
    lines = [f"{en}\t{zh}\tCC-BY 2.0 (France) Attribution: synthetic #{i}" for i, (en, zh) in
             enumerate(synthetic_pairs(n))]
    lines.insert(5, "tom sees the cat.    汤看这猫。\tCC-BY 2.0 (France) Attribution: spaces for the tab")
    broken_at = {}
    for k, raw in enumerate(BROKEN):
        at = 20 + 7 * k
        lines.insert(at, raw)
        broken_at[raw] = at + 1  # 1-based line numbers
    lines.append(lines[10])  # an exact duplicate pair
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return broken_at


def recipe_for(tmp: Path, data: Path, **train):
    return validate_recipe({
        "name": "tiny_translate",
        "task": "translate",
        "run_dir": str(tmp / "run"),
        "data": {"paths": [str(data)]},
        "tokenizer": {"vocab_size": 300},
        "translate": {"directions": ["zh-en"], "zh_tokens": "char", "max_length": 16, "test_size": 40,
                      "val_size": 40, "decode": {"num_beams": 4, "max_new_tokens": 16}},
        "model": {"n_layer": 2, "n_head": 4, "n_embd": 128, "intermediate_size": 256, "dropout": 0.0},
        "train": {"num_workers": 1, "in_process": True, "batch_size": 32, "max_steps": 300, "lr": 3e-3, "min_lr": 1e-3,
                  "warmup_steps": 30, "weight_decay": 0.0, "eval_every": 150, "eval_batches": 4,
                  "log_every": 75, "keep_checkpoints": 1, **train},
    }, "test")


@pytest.fixture(scope="module")
def trained(ray_cluster, tmp_path_factory):
    from lmstack.tasks import get_spec
    from lmstack.train.trainer import train

    tmp = tmp_path_factory.mktemp("translate")
    corpus = tmp / "pairs.txt"
    broken_at = write_corpus(corpus)
    recipe = recipe_for(tmp, corpus)
    manifest = get_spec("translate").prepare(recipe, log=lambda *a: None)
    summary = train(recipe, log=lambda *a: None)
    return {"recipe": recipe, "manifest": manifest, "summary": summary, "broken_at": broken_at,
            "data_dir": Path(recipe.data_dir()), "model_dir": summary["model_dir"], "tmp": tmp}


def test_reader_recovers_space_for_tab_and_sets_broken_lines_aside():
    good = "Ask Tom.    去问汤姆。\tCC-BY 2.0 (France) Attribution: tatoeba.org #1954263 (CK)"
    assert tdata.parse_line(good) == ("Ask Tom.", "去问汤姆。")
    assert tdata.parse_line("We try. 我们来试试。\tCC-BY") == ("We try.", "我们来试试。")
    assert tdata.parse_line("Hi.\t嗨。\tCC-BY") == ("Hi.", "嗨。")
    assert tdata.parse_line("Hi.\t嗨。") == ("Hi.", "嗨。")  # no attribution column
    pairs, rejects = tdata.read_pairs("f.txt", [good, *BROKEN, ""])
    assert [p["line"] for p in pairs] == [1]
    assert [(r["source"], r["line"]) for r in rejects] == [("f.txt", n) for n in range(2, 7)]
    assert all(r["reason"] for r in rejects)
    assert rejects[-1]["reason"] == "empty line"


def test_recipe_needs_translate_section():
    with pytest.raises(RecipeError, match="translate"):
        validate_recipe({"name": "x", "task": "translate", "data": {"paths": ["a"]}}, "r.yaml")


def test_label_smoothing_is_a_training_loss_only(tmp_path):
    from lmstack.tasks.translate.spec import Translation

    recipe = recipe_for(tmp_path, tmp_path / "unused.txt")
    recipe.translate.label_smoothing = 0.2
    info = {"tokenizer": {"vocab_size": 50}, "max_length": 12, "pad_id": 0, "eos_id": 1}
    task = Translation()
    torch.manual_seed(0)
    model = task.build_model(recipe, info)  # dropout 0: train and eval forwards agree
    assert task.label_smoothing == 0.2
    labels = torch.randint(2, 50, (4, 12))
    labels[:, 9:] = -100
    batch = {"input_ids": torch.randint(2, 50, (4, 12)), "attention_mask": torch.ones(4, 12, dtype=torch.long),
             "labels": labels}
    model.train()
    smoothed, n = task.loss(model, batch)
    logits = model(**batch).logits
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100,
                                                 label_smoothing=0.2)
    assert n == 36 and torch.allclose(smoothed, expected)
    model.eval()
    plain, _ = task.loss(model, batch)  # validation: plain cross-entropy, comparable across runs
    assert torch.allclose(plain, torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten()))
    assert not torch.allclose(plain, smoothed)


def test_noise_is_deterministic_and_keeps_a_token():
    from lmstack.tasks.translate.augment import noisy

    a = noisy("the old cat reads the new book", "en", random.Random(1), 0.3, 0.3, 0.3)
    b = noisy("the old cat reads the new book", "en", random.Random(1), 0.3, 0.3, 0.3)
    assert a == b and a != "the old cat reads the new book"
    assert noisy("猫", "zh", random.Random(0), 0.99, 0.0, 0.0) == "猫"


def test_prepare_counts_rejects_and_holds_out_test(trained):
    manifest, data_dir = trained["manifest"], trained["data_dir"]
    assert manifest["records"]["rejected"] == len(BROKEN)
    assert manifest["records"]["duplicates"] == 1
    rejects = [json.loads(x) for x in (data_dir / "rejects" / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["line"] for r in rejects) == sorted(trained["broken_at"].values())
    assert all(r["source"].endswith("pairs.txt") and r["reason"] for r in rejects)
    train_pairs, _ = tdata.read_pairs("train", (data_dir / "train.tsv").read_text().splitlines())
    test_pairs, _ = tdata.read_pairs("test", (data_dir / "test.tsv").read_text().splitlines())
    assert len(test_pairs) == 40 and manifest["splits"]["test"]["rows"] == 40
    assert ("tom sees the cat.", "汤看这猫。") in {(p["en"], p["zh"]) for p in train_pairs + test_pairs} | {
        (p["en"], p["zh"]) for p in tdata.read_pairs("v", (data_dir / "val.tsv").read_text().splitlines())[0]}
    train_sides = {p["en"] for p in train_pairs} | {p["zh"] for p in train_pairs}
    assert not any(p["en"] in train_sides or p["zh"] in train_sides for p in test_pairs)


def test_tiny_model_learns_bleu_above_floor(trained):
    from lmstack.tasks.translate.decode import translate
    from lmstack.tasks.translate.metrics import score
    from lmstack.tasks.translate.model import build_seq2seq
    from lmstack.tasks.translate.serving import load
    from lmstack.tasks.translate.spec import evaluate_file

    test_file = str(trained["data_dir"] / "test.tsv")
    result = evaluate_file(trained["model_dir"], test_file, num_beams=1)
    pairs, _ = tdata.read_pairs(test_file)
    torch.manual_seed(0)
    untrained = build_seq2seq(trained["recipe"].model, trained["manifest"])
    _, tok, max_length = load(trained["model_dir"])
    hyps = translate(untrained, tok, [p["zh"] for p in pairs], "zh-en", num_beams=1, max_new_tokens=16,
                     max_length=max_length)
    before = score(hyps, [p["en"] for p in pairs], "en")
    assert result["pairs"] == 40
    assert result["bleu"] > 40.0, result
    assert result["bleu"] > before["bleu"] + 30.0, (before, result)
    assert result["chrf"] > before["chrf"] + 20.0, (before, result)


def test_beam_search_returns_its_highest_scoring_beam(trained):
    from lmstack.tasks.translate.decode import beams, sequence_score, translate
    from lmstack.tasks.translate.serving import load

    model, tok, max_length = load(trained["model_dir"])
    pairs, _ = tdata.read_pairs("t", (trained["data_dir"] / "test.tsv").read_text().splitlines())
    for p in pairs[:3]:
        for lp in (1.0, 0.0):
            found = beams(model, tok, p["zh"], "zh-en", num_beams=4, length_penalty=lp, max_new_tokens=16)
            assert len(found) == 4
            # Rescore every returned beam independently (teacher forcing) with the same length penalty.
            rescored = [sequence_score(model, tok, p["zh"], "zh-en", b["ids"], lp) for b in found]
            for b, s in zip(found, rescored, strict=True):
                assert b["score"] == pytest.approx(s, abs=1e-3)
            assert max(range(4), key=lambda i: rescored[i]) == 0
            best = translate(model, tok, [p["zh"]], "zh-en", num_beams=4, length_penalty=lp, max_new_tokens=16)
            assert best == [found[0]["text"]]


def test_predict_and_evaluate_round_trip_through_cli(trained, tmp_path):
    from lmstack.cli import main

    model_dir = trained["model_dir"]
    test_file = trained["data_dir"] / "test.tsv"
    sources = [line.split("\t")[1] for line in test_file.read_text(encoding="utf-8").splitlines()[:5]]
    inp, out = tmp_path / "in.txt", tmp_path / "out" / "pred.jsonl"
    inp.write_text("\n".join(sources) + "\n", encoding="utf-8")
    assert main(["predict", "--model", model_dir, "--input", str(inp), "--output", str(out),
                 "--direction", "zh-en"]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["source"] for r in rows] == sources
    assert all(r["direction"] == "zh-en" and r["translation"] for r in rows)

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["evaluate", "--model", model_dir, "--data", str(test_file)]) == 0
    metrics = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert set(metrics) >= {"bleu", "chrf"} and metrics["pairs"] == 40
    assert metrics["bleu"] > 40.0
    # Bad input is one line on stderr, exit 2, not a traceback.
    assert main(["evaluate", "--model", model_dir, "--data", str(tmp_path / "missing.tsv")]) == 2
    assert main(["predict", "--model", str(tmp_path), "--input", str(inp), "--output", str(out)]) == 2


def test_served_translations_match_predict_over_http(trained):
    import socket

    import requests
    from ray import serve

    from lmstack.serve.app import deploy
    from lmstack.tasks import get_spec

    model_dir = trained["model_dir"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    deploy({"models": [{"name": "zh2en", "path": model_dir, "version": "v1", "num_cpus": 0.5}],
            "feedback_dir": str(trained["tmp"] / "feedback")}, port=port)
    try:
        base = f"http://127.0.0.1:{port}"
        pairs, _ = tdata.read_pairs("t", (trained["data_dir"] / "test.tsv").read_text().splitlines())
        texts = [p["zh"] for p in pairs[:4]]
        expected = get_spec("translate").predict(model_dir, texts, num_beams=2)
        r = requests.post(f"{base}/v1/translate", json={"model": "zh2en", "input": texts, "num_beams": 2},
                          timeout=120)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "translation" and body["version"] == "v1"
        assert [d["translation"] for d in body["data"]] == [e["translation"] for e in expected]
        one = requests.post(f"{base}/v1/translate", json={"model": "zh2en", "input": texts[0]}, timeout=120)
        assert one.status_code == 200 and one.json()["data"][0]["direction"] == "zh-en"
        wrong = requests.post(f"{base}/v1/translate", json={"model": "zh2en", "input": "tom.", "direction": "en-zh"},
                              timeout=120)
        assert wrong.status_code == 400 and "direction" in wrong.json()["error"]["message"]
        empty = requests.post(f"{base}/v1/translate", json={"model": "zh2en", "input": " "}, timeout=60)
        assert empty.status_code == 400
        models = requests.get(f"{base}/v1/models", timeout=60).json()["data"]
        assert [(m["id"], m["task"]) for m in models] == [("zh2en", "translate")]
    finally:
        serve.shutdown()


def test_max_train_pairs_keeps_test_and_val_and_sets_the_rest_aside():
    pairs = [{"en": en, "zh": zh, "source": "p", "line": i} for i, (en, zh) in enumerate(synthetic_pairs(300))]
    pairs.append({**pairs[7], "zh": "汤汤。", "line": 300})  # shares pair 7's English: one group of two
    full = tdata.split_pairs(pairs, 40, 30, seed=3)
    capped = tdata.split_pairs(pairs, 40, 30, seed=3, max_train=100)
    assert capped["test"] == full["test"] and capped["val"] == full["val"]
    assert len(capped["train"]) == 100 and not full["unused"]
    key = lambda p: p["line"]  # noqa: E731
    assert sorted(capped["train"] + capped["unused"], key=key) == sorted(full["train"], key=key)
    english = {p["en"]: s for s in ("train", "unused") for p in capped[s]}
    assert all(english[p["en"]] == s for s in ("train", "unused") for p in capped[s])  # groups stay whole


def test_decoder_transfer_route_pretrains_on_lm_text_and_translates(ray_cluster, tmp_path):
    """prepare writes lm_text/ (train sentences only); an LM pretrained on it with the translate tokenizer
    is fine-tuned as a decoder-only translator (translate.arch: decoder) that predict/evaluate serve."""
    import pyarrow.parquet as pq

    from lmstack.cli import main
    from lmstack.config import load_recipe
    from lmstack.tasks import get_spec
    from lmstack.tasks.translate.decoder import check_fits
    from lmstack.train.trainer import train

    corpus = tmp_path / "pairs.txt"
    write_corpus(corpus)
    raw = recipe_for(tmp_path, corpus).model_dump(mode="json")
    raw["translate"].update({"lm_text": True, "max_train_pairs": 250})
    recipe = validate_recipe(raw, "test")
    manifest = get_spec("translate").prepare(recipe, log=lambda *a: None)
    data_dir = Path(recipe.data_dir())
    read = lambda split: tdata.read_pairs(split, (data_dir / split).read_text().splitlines())[0]  # noqa: E731
    train_pairs, unused = read("train.tsv"), read("train_unused.tsv")
    held_out = read("test.tsv") + read("val.tsv")
    lm_text = set(pq.read_table(data_dir / "lm_text").column("text").to_pylist())
    assert manifest["examples"]["train"] == 250 and manifest["unused_train_pairs"] == len(unused) > 0
    assert lm_text == {p[lang] for p in train_pairs + unused for lang in ("en", "zh")}
    assert not lm_text & {p[lang] for p in held_out for lang in ("en", "zh")}

    lm_recipe = tmp_path / "lm.yaml"
    lm_recipe.write_text(
        f"name: tiny_translate_lm\nrun_dir: {tmp_path / 'lm'}\n"
        f"data: {{paths: ['{data_dir / 'lm_text'}'], format: parquet, split: hash, val_fraction: 0.05, block_size: 32}}\n"
        f"tokenizer: {{kind: pretrained, path: '{data_dir / 'tokenizer'}'}}\n"
        "model: {n_layer: 2, n_head: 4, n_embd: 64}\n"
        "train: {num_workers: 1, in_process: true, batch_size: 16, max_steps: 60, lr: 3.0e-3, warmup_steps: 10, eval_every: 60, "
        "eval_batches: 2, log_every: 30, keep_checkpoints: 1}\n", encoding="utf-8")
    lm = load_recipe(lm_recipe)
    get_spec("lm").prepare(lm, log=lambda *a: None)
    lm_dir = train(lm, log=lambda *a: None)["model_dir"]

    raw["run_dir"] = str(tmp_path / "dec")
    raw["translate"]["arch"] = "decoder"
    raw["model"] = {"path": lm_dir}
    raw["data"]["output"] = str(data_dir)
    raw["train"]["max_steps"] = 250
    summary = train(validate_recipe(raw, "test"), log=lambda *a: None)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["evaluate", "--model", summary["model_dir"], "--data", str(data_dir / "test.tsv")]) == 0
    metrics = json.loads(buf.getvalue().strip().splitlines()[-1])
    assert metrics["pairs"] == 40 and metrics["bleu"] > 30.0, metrics

    # An LM of another vocabulary or too short a context is refused, naming model.path.
    import shutil

    from transformers import AutoConfig

    from lmstack.tasks.translate.tokenizer import train_tokenizer

    config = AutoConfig.from_pretrained(lm_dir)
    with pytest.raises(ValueError, match="vocabulary"):
        check_fits(config, config.vocab_size + 1, 32, lm_dir)
    with pytest.raises(ValueError, match="block_size >= 64"):
        check_fits(config, config.vocab_size, 64, lm_dir)
    # Same vocabulary size, other tokenizer: refused by train() on the driver, before any cluster work.
    other = tmp_path / "other_lm"
    shutil.copytree(lm_dir, other)
    texts = [w for p in synthetic_pairs(200, seed=9) for w in (p[0].upper(), p[1][::-1])]
    train_tokenizer(texts, config.vocab_size, zh_chars=False).save_pretrained(other)
    raw["model"] = {"path": str(other)}
    raw["run_dir"] = str(tmp_path / "dec_other")
    with pytest.raises(ValueError, match="tokenizer is not the translate data's"):
        train(validate_recipe(raw, "test"), log=lambda *a: None)
    assert not (tmp_path / "dec_other").exists()  # nothing written: the corrected recipe may use this run dir


def test_back_translation_rows_come_from_the_reverse_model(trained, tmp_path):
    """Monolingual Chinese + a zh->en reverse model -> en->zh rows: synthetic English source, real target."""
    from lmstack.tasks import get_spec
    from lmstack.tasks.translate.augment import back_translated_rows
    from lmstack.tasks.translate.spec import predict

    chinese = ["汤看这猫。", "玛吃红鱼。", "老狗读新书。", "这小猫喜大鱼。"]
    mono = tmp_path / "mono_zh.txt"
    mono.write_text("\n".join(chinese) + "\n\n", encoding="utf-8")  # a blank line is skipped
    rows = back_translated_rows(str(mono), "zh", trained["model_dir"], None, {"num_beams": 2}).take_all()
    expected = [r["translation"] for r in predict(trained["model_dir"], chinese, num_beams=2)]
    assert [r["tgt"] for r in rows] == chinese and [r["src"] for r in rows] == expected
    assert {r["direction"] for r in rows} == {"en-zh"}

    raw = trained["recipe"].model_dump(mode="json")
    raw["run_dir"] = str(tmp_path / "bt")
    raw["translate"]["directions"] = ["en-zh"]
    raw["translate"]["augment"] = {"monolingual": str(mono), "monolingual_lang": "zh",
                                   "reverse_model": trained["model_dir"], "max_sentences": 3}
    manifest = get_spec("translate").prepare(validate_recipe(raw, "test"), log=lambda *a: None)
    assert manifest["augmented"]["back_translated"] == 3
    assert manifest["examples"]["train"] == trained["manifest"]["examples"]["train"] + 3
    # Back-translating into a language no direction targets is refused when the recipe is read.
    raw["translate"]["directions"] = ["zh-en"]
    with pytest.raises(RecipeError, match="monolingual_lang"):
        validate_recipe(raw, "test")
