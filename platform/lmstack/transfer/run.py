"""`lmstack finetune`: one strategy on one recipe, or k folds of it in parallel on the cluster.

Torch strategies (full, freeze, lora, multitask) are ordinary lmstack training runs (Ray Train,
checkpoints, export by the task's hooks); sklearn strategies (features, tfidf, bow) fit on the driver
(features after a Ray Data embedding pass). Every run ends with summary.json holding strategy,
val_accuracy, val_macro_f1, trainable_params, total_params, wall_time_s and model_dir, and with
<run>/evaluate/metrics.json: per-class figures and the confusion matrix on the validation split.
"""

from __future__ import annotations

import os
import shutil
import statistics
import time
from typing import Any

import numpy as np

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.transfer import SKLEARN_STRATEGIES

quiet = lambda *_: None  # noqa: E731


def ensure_prepared(recipe: Recipe, log=print) -> dict[str, Any]:
    """The prepared data's manifest; prepares (once) when missing or made for other folds."""
    from lmstack.tasks import get_task
    from lmstack.transfer.prepare import prepare_hash

    path = runtime.join(recipe.data_dir(), "manifest.json")
    if runtime.exists(path):
        info = runtime.read_json(path)
        if info.get("prepare_hash") == prepare_hash(recipe):
            return info
        log(f"{path}: prepared from other data/tokenizer/classify settings: preparing again")
    return get_task("classify").prepare(recipe, log=log)


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
    from lmstack.evaluate.classify import confusion, report
    from lmstack.transfer.predict import predict_proba

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


def run_torch(recipe: Recipe, info: dict[str, Any], log=print) -> dict[str, Any]:
    from lmstack.train.trainer import train
    from lmstack.transfer.models import build_classifier, count_params

    started = time.time()
    trainable, total = count_params(build_classifier(recipe, info))
    summary = train(recipe, log=log)
    run_dir = os.path.abspath(recipe.resolved_run_dir())
    rep = _evaluate_written(summary["model_dir"], run_dir, recipe, info["labels"])
    figures = {**{k: v for k, v in summary.items() if k not in ("verb", "wall_time_s")},
               "strategy": recipe.finetune.strategy, "from_model": recipe.finetune.from_model,
               "trainable_params": trainable, "total_params": total,
               "export_macro_f1": rep["macro_f1"], "export_accuracy": rep["accuracy"],
               **_test_figures(summary["model_dir"], run_dir, recipe, info)}
    return runtime.write_summary(run_dir, "finetune", figures, started)


def run_sklearn(recipe: Recipe, info: dict[str, Any], log=print) -> dict[str, Any]:
    """features / tfidf / bow: fit a scikit-learn classifier, save a pickle-free head."""
    from lmstack.evaluate.classify import confusion, flat_metrics, report
    from lmstack.transfer import heads

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

        from lmstack.transfer.features import embed_dataset, load_backbone

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
    shutil.rmtree(model_dir, ignore_errors=True)
    os.replace(staged, model_dir)
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


def absolute_paths(recipe: Recipe) -> Recipe:
    """Local paths made absolute: Ray workers do not share the driver's working directory."""
    raw = recipe.model_dump(mode="json")
    if raw["finetune"]["from_model"] and not runtime.is_uri(raw["finetune"]["from_model"]):
        raw["finetune"]["from_model"] = os.path.abspath(raw["finetune"]["from_model"])
    for section, key in (("data", "output"), ("tokenizer", "path"), (None, "run_dir")):
        node = raw[section] if section else raw
        value = node.get(key) or (recipe.resolved_run_dir() if key == "run_dir" else None)
        if value and not runtime.is_uri(value):
            node[key] = os.path.abspath(value)
    return Recipe.model_validate(raw)


def finetune(recipe: Recipe, log=print) -> dict[str, Any]:
    """Prepare if needed, run the recipe's strategy, write summary.json."""
    recipe = absolute_paths(recipe)
    info = ensure_prepared(recipe, log=log)
    if recipe.finetune.strategy in SKLEARN_STRATEGIES:
        return run_sklearn(recipe, info, log=log)
    return run_torch(recipe, info, log=log)


def fold_recipe(recipe: Recipe, k: int, fold: int, data_dir: str, run_dir: str) -> Recipe:
    raw = recipe.model_dump(mode="json")
    raw["data"].update(folds=k, fold=fold, output=data_dir)
    raw["run_dir"] = os.path.join(run_dir, f"fold_{fold}")
    return Recipe.model_validate(raw)


def kfold(recipe: Recipe, k: int, log=print) -> dict[str, Any]:
    """k runs, fold i validating on fold i, in parallel as Ray tasks (each a normal finetune run:
    a TorchTrainer for torch strategies, whose workers take the CPUs; a 1-CPU task for sklearn)."""
    import ray

    started = time.time()
    recipe = absolute_paths(recipe)  # the folds must agree on what was prepared (see ensure_prepared)
    run_dir = recipe.resolved_run_dir()
    data_dir = recipe.data.output or os.path.join(run_dir, "data")
    base = fold_recipe(recipe, k, 0, data_dir, run_dir)
    ensure_prepared(base, log=log)
    sklearn = recipe.finetune.strategy in SKLEARN_STRATEGIES
    # A torch fold's task only waits on its TorchTrainer, whose workers hold the CPUs.
    remote = ray.remote(num_cpus=1 if sklearn else 0)(_fold_task)
    refs = [remote.remote(fold_recipe(recipe, k, i, data_dir, run_dir).model_dump(mode="json")) for i in range(k)]
    folds = ray.get(refs)
    f1 = [s["val_macro_f1"] for s in folds]
    acc = [s["val_accuracy"] for s in folds]
    figures = {
        "strategy": recipe.finetune.strategy,
        "folds": k,
        "val_macro_f1": statistics.mean(f1),
        "val_macro_f1_std": statistics.stdev(f1) if k > 1 else 0.0,
        "val_accuracy": statistics.mean(acc),
        "val_accuracy_std": statistics.stdev(acc) if k > 1 else 0.0,
        "per_fold": [{"fold": i, "val_macro_f1": s["val_macro_f1"], "val_accuracy": s["val_accuracy"],
                      "run_dir": os.path.join(run_dir, f"fold_{i}")} for i, s in enumerate(folds)],
        "trainable_params": folds[0]["trainable_params"],
        "total_params": folds[0]["total_params"],
        "model_dir": folds[int(np.argmax(f1))]["model_dir"],  # the best fold's model
    }
    summary = runtime.write_summary(run_dir, "finetune", figures, started)
    log(f"{k}-fold {recipe.finetune.strategy}: macro-F1 {figures['val_macro_f1']:.4f} "
        f"± {figures['val_macro_f1_std']:.4f}")
    return summary


def _fold_task(raw: dict[str, Any]) -> dict[str, Any]:
    return finetune(Recipe.model_validate(raw), log=quiet)
