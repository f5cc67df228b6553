"""classify task: metrics vs scikit-learn, prepare (rejects, splits, k-fold), the model interface."""

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from builders import ALPHABETS, classify_recipe, make_labelled  # noqa: F401
from lmstack.config import RecipeError, validate_recipe
from lmstack.tasks import get_spec
from lmstack.tasks.classify.metrics import confusion, flat_metrics, report
from lmstack.tasks.classify.records import assign_split

quiet = lambda *_: None  # noqa: E731
# -- metrics -----------------------------------------------------------------------------------

def test_metrics_agree_with_scikit_learn():
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 3, 200))  # class 3 never predicted
    y_pred[:5] = 3 - y_true[:5] % 2
    cm = confusion(y_true, y_pred, 5)  # class 4: neither true nor predicted
    assert (cm == confusion_matrix(y_true, y_pred, labels=range(5))).all()
    # Counts summed in pieces (as the loop sums batches and workers) give the same matrix.
    assert (confusion(y_true[:70], y_pred[:70], 5) + confusion(y_true[70:], y_pred[70:], 5) == cm).all()
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(5), zero_division=0)
    rep = report(cm, ["a", "b", "c", "d", "e"])
    assert rep["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    for i, label in enumerate("abcde"):
        assert rep["per_class"][label]["precision"] == pytest.approx(p[i])
        assert rep["per_class"][label]["recall"] == pytest.approx(r[i])
        assert rep["per_class"][label]["f1"] == pytest.approx(f[i])
        assert rep["per_class"][label]["support"] == s[i]
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, labels=range(5), average="macro",
                                                    zero_division=0)
    flat = flat_metrics(cm)
    assert flat["val_macro_f1"] == pytest.approx(mf)
    assert flat["val_macro_precision"] == pytest.approx(mp)
    assert flat["val_macro_recall"] == pytest.approx(mr)
    assert confusion(np.array([0, -100, 1]), np.array([0, 1, 1]), 2).sum() == 2  # ignored labels skipped


# -- recipe ------------------------------------------------------------------------------------

def test_recipe_sections_validate_before_any_work(tmp_path):
    base = {"name": "x", "task": "classify", "data": {"paths": ["a"]}}
    with pytest.raises(RecipeError, match="r.yaml: classify: task .classify. needs a classify: section"):
        validate_recipe(base, "r.yaml")
    with pytest.raises(RecipeError, match="r.yaml: finetune: .*lora needs from_model"):
        validate_recipe({**base, "classify": {}, "finetune": {"strategy": "lora"}}, "r.yaml")
    with pytest.raises(RecipeError, match="multitask needs classify.extra_label_fields"):
        validate_recipe({**base, "classify": {}, "finetune": {"strategy": "multitask"}}, "r.yaml")
    with pytest.raises(RecipeError, match="finetune.strategy"):
        validate_recipe({**base, "classify": {}, "finetune": {"strategy": "magic"}}, "r.yaml")
    with pytest.raises(RecipeError, match="classify.class_weights"):
        validate_recipe({**base, "classify": {"class_weights": "sometimes"}}, "r.yaml")


# -- prepare -----------------------------------------------------------------------------------

def test_prepare_sets_aside_and_counts_rejects(tmp_path):
    data = make_labelled(tmp_path / "data", n=60)
    with open(data / "data.jsonl", "a") as f:
        f.write("{broken json\n")                                 # malformed line
        f.write(json.dumps({"id": "nolabel", "text": "abc"}) + "\n")  # missing label
        f.write(json.dumps({"id": "notext", "label": "red"}) + "\n")  # missing text
        f.write(json.dumps({"id": "empty", "text": "  ", "label": "red"}) + "\n")  # empty text
        f.write("[1, 2]\n")                                       # not an object
    (data / "more.csv").write_text('text,label\n"hhhiii jjj",green\n"aab",red,extra\n')
    (data / "README.md").write_text("# not data\n")
    recipe = classify_recipe(tmp_path, data)
    info = get_spec("classify").prepare(recipe, log=quiet)
    assert info["rejected"] == 7 and info["records"] == 60 + 1 + 7
    assert info["rejected_by_reason"] == {"malformed JSON": 1, "missing label field label": 1,
                                          "missing text field text": 2, "record is not an object": 1,
                                          "malformed CSV row": 1, "unsupported file type (json, jsonl, csv, parquet are read)": 1}
    rejects = [json.loads(line) for line in open(info["rejects"])]
    assert len(rejects) == 7
    assert {(Path(r["source"]).name, r["record"]) for r in rejects} >= {("data.jsonl", 60), ("more.csv", 1),
                                                                         ("README.md", None)}
    assert sum(info["examples"].values()) == 61
    assert info["labels"] == ["blue", "green", "red"]
    tables = {s: pq.read_table(Path(recipe.data_dir()) / s) for s in ("train", "val")}
    ids = {s: set(t.column("id").to_pylist()) for s, t in tables.items()}
    assert not ids["train"] & ids["val"] and len(ids["train"] | ids["val"]) == 61
    t = tables["train"]
    assert t.column("input_ids").type.list_size == info["max_length"] == 24
    assert set(t.column("labels").to_pylist()) <= {0, 1, 2}
    assert info["tokenizer"]["dir"].endswith("tokenizer")

    # Balanced class weights: n / (C * n_c) over the training examples.
    recipe.classify.class_weights = "balanced"
    info = get_spec("classify").prepare(recipe, log=quiet)
    counts = [info["class_counts"]["train"][label] for label in info["labels"]]
    assert info["class_weights"] == pytest.approx([sum(counts) / (3 * c) for c in counts])


def test_split_is_stable_and_kfold_folds_are_disjoint(tmp_path):
    data = make_labelled(tmp_path / "data", n=90)
    recipe = classify_recipe(tmp_path, data, data={"folds": 4, "fold": 0}, classify={"test_fraction": 0.1})
    info = get_spec("classify").prepare(recipe, log=quiet)
    cv = pq.read_table(Path(recipe.data_dir()) / "cv").to_pydict()
    test = pq.read_table(Path(recipe.data_dir()) / "test").column("id").to_pylist()
    val_sets = [{i for i, f in zip(cv["id"], cv["fold"], strict=True) if f == k} for k in range(4)]
    assert all(val_sets) and sum(len(v) for v in val_sets) == len(cv["id"])
    assert set().union(*val_sets) == set(cv["id"]) and not set(test) & set(cv["id"])
    assert len(cv["id"]) + len(test) == 90 and info["folds"] == 4
    assert sorted(info["class_counts"]["folds"].values()) == sorted(len(v) for v in val_sets)
    # A record's fold is a function of its id alone (records added elsewhere do not move it).
    assert all(assign_split(i, 0.1, 0.25, 4) == ("cv", f) for i, f in zip(cv["id"], cv["fold"], strict=True))


def test_lm_text_holds_every_train_split_text_and_no_held_out_one(tmp_path):
    data = make_labelled(tmp_path / "data", n=120)
    recipe = classify_recipe(tmp_path, data, classify={"test_fraction": 0.2, "max_per_class": 20, "lm_text": True})
    info = get_spec("classify").prepare(recipe, log=quiet)
    d = Path(recipe.data_dir())
    lm = pq.read_table(d / "lm_text").column("text").to_pylist()
    split_ids = {s: pq.read_table(d / s).column("id").to_pylist() for s in ("train", "val", "test")}
    texts = {json.loads(line)["id"]: json.loads(line)["text"].strip() for line in open(data / "data.jsonl")}
    expected = [texts[i] for i in texts if assign_split(i, 0.2, 0.25, None)[0] == "train"]
    assert sorted(lm) == sorted(expected)
    # Records left out of the labelled subsample still pretrain; held-out ones never do.
    assert info["subsampled_out"] > 0 and len(lm) > len(split_ids["train"])
    assert {texts[i] for i in split_ids["train"]} <= set(lm)
    assert not {texts[i] for i in split_ids["val"] + split_ids["test"]} & set(lm)
    assert info["lm_text"] == {"records": len(lm), "chars": sum(map(len, lm))}
    with pytest.raises(RecipeError, match="lm_text needs a validation split"):
        classify_recipe(tmp_path, data, data={"folds": 3}, classify={"lm_text": True})


# -- model interface (no Ray) -------------------------------------------------------------------

def test_logits_loss_and_counts_on_a_batch(tmp_path):
    data = make_labelled(tmp_path / "data", n=30)
    recipe = classify_recipe(tmp_path, data, classify={"class_weights": "balanced"})
    task = get_spec("classify")
    info = task.prepare(recipe, log=quiet)
    torch.manual_seed(0)
    model = task.build_model(recipe, info)
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    assert model.config.pad_token_id == info["pad_id"]
    t = pq.read_table(Path(recipe.data_dir()) / "train").slice(0, 6).to_pydict()
    batch = {"input_ids": torch.tensor(t["input_ids"]), "attention_mask": torch.tensor(t["attention_mask"]),
             "labels": torch.tensor(t["labels"])}
    logits = task.logits(model, batch)
    assert logits.shape == (6, 3)
    loss, n = task.loss(model, batch)
    assert n == 6 and loss.item() > 0
    weights = torch.tensor(info["class_weights"], dtype=torch.float32)
    expected = torch.nn.functional.cross_entropy(logits, batch["labels"], weight=weights)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    counts = task.eval_counts(model, batch)
    assert counts.sum() == 6 and counts.shape == (9,)
    m = task.metrics(loss.item() * 6, 6, info, counts=counts)
    assert set(m) >= {"val_loss", "val_accuracy", "val_macro_f1"}
