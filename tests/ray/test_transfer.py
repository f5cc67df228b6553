"""Transfer strategies on tiny synthetic data, each a real run on the session's Ray cluster."""

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from builders import ALPHABETS, classify_recipe, make_labelled
from lmstack.config import ModelConfig
from lmstack.data.tokenizer import char_tokenizer
from lmstack.models.factory import causal_lm_config
from lmstack.tasks import get_spec
from lmstack.tasks.classify.models import build_classifier, layer_decay_groups
from lmstack.train.finetune import finetune, kfold

pytestmark = pytest.mark.usefixtures("ray_cluster")
quiet = lambda *_: None  # noqa: E731
TEXTS = ["abcdefg abc", "hijklmn hij", "opqrstu opq", "axhyoz", "zzz"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Labelled data and a tiny 'pretrained' lmstack LM directory (a causal GPT-2 + char tokenizer)."""
    root = tmp_path_factory.mktemp("transfer")
    data = make_labelled(root / "data", n=120)
    tok = char_tokenizer("".join(ALPHABETS.values()) + "xyz ")
    torch.manual_seed(0)
    cfg = causal_lm_config(ModelConfig(n_layer=2, n_head=2, n_embd=16), len(tok), 32, tok.eos_token_id)
    lm = AutoModelForCausalLM.from_config(cfg)
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    return root, data, str(root / "lm")


def recipe_for(corpus, tmp_path, name, **finetune_fields):
    root, data, lm = corpus
    ft = {"strategy": name, **finetune_fields}
    if name in ("lora", "features", "freeze", "full"):
        ft.setdefault("from_model", lm)
    classify = {"max_length": 24, "extra_label_fields": ["mood"]}
    return classify_recipe(tmp_path, data, classify=classify, finetune=ft)


def initial_probs(recipe, texts):
    """What the model built for the recipe (seeded as the train loop seeds it) predicts before training."""
    from lmstack.data.tokenizer import load_tokenizer
    from lmstack.tasks.classify.prepare import encode

    info = json.load(open(os.path.join(recipe.data_dir(), "manifest.json")))
    torch.manual_seed(recipe.train.seed)
    model = build_classifier(recipe, info).eval()
    ids, mask = encode(load_tokenizer(info["tokenizer"]["dir"]), texts, info["max_length"])
    batch = {"input_ids": torch.as_tensor(ids), "attention_mask": torch.as_tensor(mask)}
    with torch.no_grad():
        return torch.softmax(get_spec("classify").logits(model, batch), -1).numpy()


def predicted(model_dir, texts):
    out = get_spec("classify").predict(model_dir, texts)
    assert all(set(o["scores"]) == set(ALPHABETS) and abs(sum(o["scores"].values()) - 1) < 1e-5 for o in out)
    return np.asarray([[o["scores"][k] for k in sorted(ALPHABETS)] for o in out])


SUMMARY_KEYS = {"strategy", "val_accuracy", "val_macro_f1", "trainable_params", "total_params", "wall_time_s",
                "model_dir"}


def test_full_finetune_from_pretrained(corpus, tmp_path):
    recipe = recipe_for(corpus, tmp_path, "full")
    summary = finetune(recipe, log=quiet)
    assert SUMMARY_KEYS <= set(summary) and summary["trainable_params"] == summary["total_params"]
    assert summary["export_macro_f1"] == pytest.approx(summary["val_macro_f1"])  # export predicts as trained
    model = AutoModelForSequenceClassification.from_pretrained(summary["model_dir"], local_files_only=True)
    assert model.config.id2label == {0: "blue", 1: "green", 2: "red"}
    after = predicted(summary["model_dir"], TEXTS)
    assert not np.allclose(after, initial_probs(recipe, TEXTS), atol=1e-4)
    rep = json.load(open(os.path.join(recipe.run_dir, "evaluate", "metrics.json")))
    assert np.asarray(rep["confusion"]).shape == (3, 3)
    # evaluate_file on a labelled file agrees with predict() on the same texts.
    path = os.path.join(corpus[1], "data.jsonl")
    ev = get_spec("classify").evaluate_file(summary["model_dir"], path)
    assert ev["examples"] == 120 and 0 <= ev["macro_f1"] <= 1


def test_freeze_leaves_frozen_weights_bit_identical(corpus, tmp_path):
    recipe = recipe_for(corpus, tmp_path, "freeze", freeze_layers=1, layer_lr_decay=0.5)
    summary = finetune(recipe, log=quiet)
    assert summary["trainable_params"] < summary["total_params"]
    before = load_file(os.path.join(corpus[2], "model.safetensors"))
    after = load_file(os.path.join(summary["model_dir"], "model.safetensors"))
    frozen = [k for k in after if k.startswith(("transformer.h.0.", "transformer.wte", "transformer.wpe"))]
    trained = [k for k in after if k.startswith("transformer.h.1.") and k.endswith("weight")]
    assert frozen and trained
    assert all(torch.equal(after[k], before[k]) for k in frozen)
    assert not all(torch.equal(after[k], before[k]) for k in trained)
    assert not np.allclose(predicted(summary["model_dir"], TEXTS), initial_probs(recipe, TEXTS), atol=1e-4)
    # Layer-wise decay: lr scale 1 for the head, 0.5 for the top block (block 0 and embeddings are frozen).
    info = json.load(open(os.path.join(recipe.data_dir(), "manifest.json")))
    groups = layer_decay_groups(build_classifier(recipe, info), 2, 0.5, 0.1)
    assert sorted({g["lr_scale"] for g in groups}) == [0.5, 1.0]


def test_lora_export_equals_merged_weights(corpus, tmp_path):
    from peft import PeftModel  # noqa: F401 - peft must be importable for this strategy
    from safetensors.torch import load_model

    recipe = recipe_for(corpus, tmp_path, "lora", lora={"r": 4, "alpha": 8})
    recipe.train.lr = 1e-2
    summary = finetune(recipe, log=quiet)
    assert summary["trainable_params"] < summary["total_params"] / 2
    # Rebuild the training module from the checkpoint's own weights, merge, compare with the export.
    info = json.load(open(os.path.join(recipe.data_dir(), "manifest.json")))
    model = build_classifier(recipe, info)
    load_model(model, os.path.join(summary["checkpoint"], "resume_model.safetensors"))
    merged = model.merge_and_unload().state_dict()
    exported = load_file(os.path.join(summary["model_dir"], "model.safetensors"))
    assert set(exported) <= set(merged) and all(torch.equal(exported[k], merged[k]) for k in exported)
    assert not torch.equal(exported["transformer.h.0.attn.c_attn.weight"],
                           load_file(os.path.join(corpus[2], "model.safetensors"))["transformer.h.0.attn.c_attn.weight"])
    assert not np.allclose(predicted(summary["model_dir"], TEXTS), initial_probs(recipe, TEXTS), atol=1e-4)


def test_multitask_shares_one_backbone(corpus, tmp_path):
    recipe = recipe_for(corpus, tmp_path, "multitask")
    summary = finetune(recipe, log=quiet)
    heads = json.load(open(os.path.join(summary["model_dir"], "extra_heads.json")))
    assert heads == {"mood": 2}
    # Every head is scored on validation (the extra one from its own confusion counts).
    assert 0.0 <= summary["val_mood_accuracy"] <= 1.0 and "val_mood_macro_f1" in summary
    assert load_file(os.path.join(summary["model_dir"], "extra_heads.safetensors"))["mood.weight"].shape == (2, 16)
    assert not np.allclose(predicted(summary["model_dir"], TEXTS), initial_probs(recipe, TEXTS), atol=1e-4)


@pytest.mark.parametrize("strategy,classifier", [("tfidf", "logreg"), ("bow", "svm"), ("features", "logreg")])
def test_sklearn_strategies_save_servable_heads(corpus, tmp_path, strategy, classifier):
    recipe = recipe_for(corpus, tmp_path, strategy, classifier=classifier)
    summary = finetune(recipe, log=quiet)
    assert SUMMARY_KEYS <= set(summary) and summary["servable"]
    assert not any(f.endswith((".pkl", ".pickle", ".joblib")) for f in os.listdir(summary["model_dir"]))
    if strategy != "features":
        assert summary["val_macro_f1"] > 0.8  # the classes have disjoint alphabets
    # The pickle-free artifact reproduces the fitted classifier's validation figures.
    rep = json.load(open(os.path.join(recipe.run_dir, "evaluate", "metrics.json")))
    from lmstack.tasks.classify.run import _val_frame

    texts, y = _val_frame(recipe, "val")
    pred = np.asarray(predicted(summary["model_dir"], texts)).argmax(1)
    assert (pred == y).mean() == pytest.approx(rep["accuracy"])
    assert len(set(pred.tolist())) > 1  # a fitted model, not a constant


def test_forest_is_trained_but_not_servable(corpus, tmp_path):
    recipe = recipe_for(corpus, tmp_path, "tfidf", classifier="forest")
    summary = finetune(recipe, log=quiet)
    assert summary["servable"] is False and summary["val_macro_f1"] > 0.5
    with pytest.raises(ValueError, match="not servable"):
        get_spec("classify").predict(summary["model_dir"], TEXTS)


def test_kfold_runs_k_disjoint_folds(corpus, tmp_path):
    recipe = recipe_for(corpus, tmp_path, "tfidf")
    summary = kfold(recipe, 3, log=quiet)
    assert summary["folds"] == 3 and len(summary["per_fold"]) == 3
    assert summary["val_macro_f1_std"] >= 0 and 0 < summary["val_macro_f1"] <= 1
    sizes = [json.load(open(os.path.join(f["run_dir"], "summary.json")))["val_examples"] for f in summary["per_fold"]]
    assert sum(sizes) == 120 and all(sizes)
