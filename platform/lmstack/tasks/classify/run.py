"""Classify's own fits and figures: scikit-learn strategies (features, tfidf, bow) fit on the driver
(features after a Ray Data embedding pass), and the exported model's per-class report on the
validation and held-out test splits (<run>/evaluate/metrics.json), for torch strategies too.
The generic `lmstack finetune` (lmstack.train.finetune) calls these through the classify spec.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

import numpy as np

from lmstack import runtime
from lmstack.config import Recipe


def _lineage(recipe: Recipe, info: dict[str, Any], metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "classify",
        "strategy": recipe.finetune.strategy,
        "recipe": recipe.model_dump(mode="json"),
        "recipe_hash": recipe.fingerprint(),
        "data_manifest": runtime.join(recipe.data_dir(), "manifest.json"),
        "from_model": recipe.finetune.from_model,
        "metrics": metrics,
    }


def _embedding_input(recipe: Recipe):
    """train + val examples with an is_val column, as one Ray Dataset."""
    import ray.data

    data_dir = recipe.data_dir()
    cols = ["input_ids", "attention_mask", "labels"]
    if recipe.data.folds:
        k = recipe.data.fold
        ds = ray.data.read_parquet(runtime.join(data_dir, "cv"), columns=[*cols, "fold"])
        return ds.map_batches(lambda b: {**{c: b[c] for c in cols}, "is_val": b["fold"] == k}, batch_format="numpy")
    paths = [runtime.join(data_dir, s) for s in ("train", "val")]
    ds = ray.data.read_parquet(paths, columns=cols, include_paths=True)
    val_dir = paths[1].rstrip("/") + "/"
    return ds.map_batches(lambda b: {**{c: b[c] for c in cols},
                                     "is_val": np.asarray([val_dir in str(p) for p in b["path"]])},
                          batch_format="numpy")


def _val_frame(recipe: Recipe, split: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels of a split (k-fold aware), read with Ray Data."""
    rows = _split_dataset_with_text(recipe, split)
    return [r["text"] for r in rows], np.asarray([r["labels"] for r in rows], dtype=np.int64)


def _split_dataset_with_text(recipe: Recipe, split: str) -> list[dict[str, Any]]:
    """Read on the driver with pyarrow: a few thousand rows, below a Ray Data job's start-up cost."""
    import pyarrow.dataset as pads

    data_dir = recipe.data_dir()
    in_cv = bool(recipe.data.folds) and split != "test"  # with folds, train and val are slices of cv/
    fs, path = runtime.filesystem(runtime.join(data_dir, "cv" if in_cv else split))
    cols = ["text", "labels", "fold"]
    rows = pads.dataset(path, filesystem=fs, format="parquet").to_table(columns=cols).to_pylist()
    if in_cv:
        k = recipe.data.fold
        rows = [r for r in rows if (r["fold"] == k) == (split == "val")]
    return rows


def _evaluate_written(model_dir: str, run_dir: str, recipe: Recipe, labels: list[str],
                      split: str = "val") -> dict[str, Any]:
    """Per-class figures and confusion on a split, with the exported model (as served)."""
    from lmstack.tasks.classify.metrics import confusion, report
    from lmstack.tasks.classify.predict import predict_proba

    texts, y = _val_frame(recipe, split)
    _, probs = predict_proba(model_dir, texts)
    rep = report(confusion(y, probs.argmax(1), len(labels)), labels)
    name = "metrics.json" if split == "val" else f"{split}_metrics.json"
    runtime.write_json(runtime.join(run_dir, "evaluate", name), rep)
    return rep


def _test_figures(model_dir: str, run_dir: str, recipe: Recipe, info: dict[str, Any]) -> dict[str, Any]:
    """The held-out test split (classify.test_fraction), scored once by the exported model; never used to
    pick a checkpoint or a strategy's settings, so it is the figure to compare strategies by."""
    if not info.get("examples", {}).get("test"):
        return {}
    rep = _evaluate_written(model_dir, run_dir, recipe, info["labels"], split="test")
    return {"test_macro_f1": rep["macro_f1"], "test_accuracy": rep["accuracy"], "test_examples": rep["examples"]}


def run_sklearn(recipe: Recipe, info: dict[str, Any], log=print) -> dict[str, Any]:
    """features / tfidf / bow: fit a scikit-learn classifier, save a pickle-free head."""
    from lmstack.tasks.classify import heads
    from lmstack.tasks.classify.metrics import confusion, flat_metrics, report

    started = time.time()
    ft = recipe.finetune
    run_dir = os.path.abspath(recipe.resolved_run_dir())
    model_dir = os.path.join(run_dir, "model")
    labels = info["labels"]
    balanced = bool(recipe.classify and recipe.classify.class_weights == "balanced")
    staged = model_dir + ".tmp"
    shutil.rmtree(staged, ignore_errors=True)
    os.makedirs(staged)
    extra: dict[str, Any] = {}
    if ft.strategy == "features":
        import ray

        from lmstack.tasks.classify.features import embed_dataset, load_backbone

        # One CPU stays free for Ray Data's own tasks.
        actors = ft.embed_actors or max(1, min(4, int(ray.cluster_resources().get("CPU", 1)) - 1))
        t0 = time.time()
        # One pass over every example (one actor pool start-up); the split comes back as a column.
        emb, cols = embed_dataset(_embedding_input(recipe), ft.from_model, ft.pooling, ft.embed_batch_size,
                                  actors)
        is_val = cols["is_val"].astype(bool)
        x_tr, y_tr = emb[~is_val], cols["labels"][~is_val].astype(np.int64)
        x_va, y_va = emb[is_val], cols["labels"][is_val].astype(np.int64)
        extra["embed_s"] = round(time.time() - t0, 2)
        clf, mean, scale = heads.fit(ft.classifier, x_tr, y_tr, recipe.train.seed, balanced, standardize=True)
        pred = clf.predict((x_va - mean) / scale)  # the classifier was fitted on standardized features
        servable = heads.save_head(staged, ft.classifier, clf, labels, mean, scale,
                                   extra={"pooling": ft.pooling, "max_length": info["max_length"]})
        # The frozen backbone travels with the head, so the directory predicts on its own.
        load_backbone(ft.from_model).save_pretrained(os.path.join(staged, "backbone"), safe_serialization=True)
        from lmstack.data.tokenizer import load_tokenizer

        load_tokenizer(ft.from_model).save_pretrained(os.path.join(staged, "backbone"))
        total = sum(p.numel() for p in load_backbone(ft.from_model).parameters())
    else:
        texts_tr, y_tr = _val_frame(recipe, "train")
        texts_va, y_va = _val_frame(recipe, "val")
        vec = heads.make_vectorizer(ft.strategy, ft.ngram_range, ft.max_features)
        x_tr = vec.fit_transform(texts_tr)
        clf, _, _ = heads.fit(ft.classifier, x_tr, y_tr, recipe.train.seed, balanced, standardize=False)
        pred = clf.predict(vec.transform(texts_va))
        servable = heads.save_head(staged, ft.classifier, clf, labels, vectorizer=vec)
        total = 0
    head_params = _head_params(clf)
    cm = confusion(y_va, pred, len(labels))
    metrics = flat_metrics(cm)
    runtime.write_json(os.path.join(staged, "lmstack_model.json"), _lineage(recipe, info, metrics))
    runtime.publish_dir(staged, model_dir)  # one atomic step: a crash never leaves no model
    runtime.write_json(runtime.join(run_dir, "evaluate", "metrics.json"), report(cm, labels))
    figures = {**metrics, "strategy": ft.strategy, "classifier": ft.classifier, "from_model": ft.from_model,
               "trainable_params": head_params, "total_params": total + head_params, "servable": servable,
               "train_examples": len(y_tr), "val_examples": len(y_va), "model_dir": model_dir, **extra,
               **_test_figures(model_dir, run_dir, recipe, info)}
    summary = runtime.write_summary(run_dir, "finetune", figures, started)
    log(f"{ft.strategy}+{ft.classifier}: val macro-F1 {metrics['val_macro_f1']:.4f}, "
        f"accuracy {metrics['val_accuracy']:.4f}; model in {model_dir}")
    return summary


def _head_params(clf) -> int:
    if hasattr(clf, "coef_"):
        return int(np.asarray(clf.coef_).size + np.asarray(clf.intercept_).size)
    return int(sum(t.tree_.node_count for t in getattr(clf, "estimators_", [])))  # forest: tree nodes




def exported_figures(recipe: Recipe, info: dict[str, Any], model_dir: str, run_dir: str) -> dict[str, Any]:
    """The exported model (as served) scored on the validation split, and once on the test split."""
    rep = _evaluate_written(model_dir, run_dir, recipe, info["labels"])
    return {"strategy": recipe.finetune.strategy, "from_model": recipe.finetune.from_model,
            "export_macro_f1": rep["macro_f1"], "export_accuracy": rep["accuracy"],
            **_test_figures(model_dir, run_dir, recipe, info)}
