"""scikit-learn classifiers for the features / tfidf / bow strategies, saved without pickles.

A linear model (logistic regression, linear SVM) is its coefficients: they go to safetensors and
the vectorizer's vocabulary and idf to JSON/safetensors, so serving never unpickles anything. A
random forest has no such form: its artifact records metrics only and is not servable (documented).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

HEAD_FILE = "head.safetensors"
HEAD_INFO = "head.json"
VOCAB_FILE = "vectorizer.json"


def make_vectorizer(kind: str, ngram_range: tuple[int, int], max_features: int):
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    # Characters, not words: classical Chinese has no spaces, and char n-grams suit any script.
    common = {"analyzer": "char", "ngram_range": tuple(ngram_range), "max_features": max_features,
              "lowercase": False}
    if kind == "tfidf":
        return TfidfVectorizer(sublinear_tf=True, **common)
    return CountVectorizer(**common)


def make_classifier(kind: str, seed: int, balanced: bool):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC

    weight = "balanced" if balanced else None
    if kind == "logreg":
        return LogisticRegression(max_iter=2000, class_weight=weight, random_state=seed)
    if kind == "svm":
        return LinearSVC(class_weight=weight, random_state=seed)
    return RandomForestClassifier(n_estimators=200, class_weight=weight, random_state=seed, n_jobs=1)


def fit(kind: str, x, y: np.ndarray, seed: int, balanced: bool, standardize: bool):
    """The fitted classifier; dense features are standardized first (folded into a linear head)."""
    clf = make_classifier(kind, seed, balanced)
    mean = scale = None
    if standardize:
        mean, scale = x.mean(0), x.std(0) + 1e-6
        x = (x - mean) / scale
    clf.fit(x, y)
    return clf, mean, scale


def linear_params(clf, num_classes: int, mean=None, scale=None) -> tuple[np.ndarray, np.ndarray]:
    """(coef [C', D], intercept [C']) in the raw feature space (standardization folded in)."""
    coef = np.asarray(clf.coef_, dtype=np.float64)
    intercept = np.asarray(clf.intercept_, dtype=np.float64)
    if mean is not None:
        coef = coef / scale
        intercept = intercept - coef @ mean
    return coef, intercept


def scores_to_proba(scores: np.ndarray, num_classes: int) -> np.ndarray:
    """Decision values -> probabilities: softmax (binary: the sigmoid of the one column).
    Exact for logistic regression; for the SVM the scores are not calibrated probabilities."""
    if scores.ndim == 1 or scores.shape[1] == 1:
        s = scores.reshape(-1)
        p1 = 1 / (1 + np.exp(-s))
        return np.stack([1 - p1, p1], axis=1)
    z = scores - scores.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def save_head(out_dir: str, kind: str, clf, labels: list[str], mean=None, scale=None,
              vectorizer=None, extra: dict[str, Any] | None = None) -> bool:
    """Write the head (and vectorizer); returns whether the artifact is servable."""
    from safetensors.numpy import save_file

    os.makedirs(out_dir, exist_ok=True)
    info: dict[str, Any] = {"classifier": kind, "labels": labels, **(extra or {})}
    servable = kind in ("logreg", "svm")
    if servable:
        coef, intercept = linear_params(clf, len(labels), mean, scale)
        # C order: safetensors writes the raw buffer, and sklearn may hand back Fortran-ordered arrays.
        tensors = {"coef": np.ascontiguousarray(coef), "intercept": np.ascontiguousarray(intercept)}
        if vectorizer is not None and hasattr(vectorizer, "idf_"):
            tensors["idf"] = np.ascontiguousarray(vectorizer.idf_, dtype=np.float64)
        save_file(tensors, os.path.join(out_dir, HEAD_FILE))
    else:
        info["not_servable"] = "a random forest has no pickle-free form here; only its metrics are kept"
    info["servable"] = servable
    if vectorizer is not None:
        vocab = {k: int(v) for k, v in vectorizer.vocabulary_.items()}
        params = {k: vectorizer.get_params()[k] for k in ("analyzer", "ngram_range", "lowercase")}
        params["ngram_range"] = list(params["ngram_range"])
        params["kind"] = "tfidf" if hasattr(vectorizer, "idf_") else "bow"
        params["sublinear_tf"] = bool(getattr(vectorizer, "sublinear_tf", False))
        with open(os.path.join(out_dir, VOCAB_FILE), "w", encoding="utf-8") as f:
            json.dump({"params": params, "vocabulary": vocab}, f, ensure_ascii=False)
    with open(os.path.join(out_dir, HEAD_INFO), "w", encoding="utf-8") as f:
        json.dump(info, f, ensure_ascii=False, indent=2)
    return servable


class LinearHead:
    """A saved head (and vectorizer) loaded back for prediction."""

    def __init__(self, model_dir: str):
        from safetensors.numpy import load_file

        with open(os.path.join(model_dir, HEAD_INFO), encoding="utf-8") as f:
            self.info = json.load(f)
        if not self.info.get("servable"):
            raise ValueError(f"{model_dir}: a {self.info['classifier']} artifact is not servable "
                             f"({self.info.get('not_servable')}); use classifier logreg or svm")
        self.labels: list[str] = self.info["labels"]
        tensors = load_file(os.path.join(model_dir, HEAD_FILE))
        self.coef, self.intercept = tensors["coef"], tensors["intercept"]
        self.vectorizer = None
        vocab_path = os.path.join(model_dir, VOCAB_FILE)
        if os.path.exists(vocab_path):
            with open(vocab_path, encoding="utf-8") as f:
                saved = json.load(f)
            p = saved["params"]
            from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

            common = {"analyzer": p["analyzer"], "ngram_range": tuple(p["ngram_range"]),
                      "lowercase": p["lowercase"], "vocabulary": saved["vocabulary"]}
            if p["kind"] == "tfidf":
                vec = TfidfVectorizer(sublinear_tf=p["sublinear_tf"], **common)
                vec.idf_ = tensors["idf"]  # the setter rebuilds the fitted transformer from the idf
            else:
                vec = CountVectorizer(**common)
            self.vectorizer = vec

    def proba(self, x) -> np.ndarray:
        scores = np.asarray(x @ self.coef.T) + self.intercept
        return scores_to_proba(scores, len(self.labels))

    def proba_texts(self, texts: list[str]) -> np.ndarray:
        assert self.vectorizer is not None
        return self.proba(self.vectorizer.transform(texts))
