"""Inference on an exported speech model directory: load it, transcribe files or sample arrays, and
score a folder of FSDD-named files or a manifest (`lmstack evaluate --model DIR --data WAV_DIR|MANIFEST`).
The Serve replica uses the same SpeechModel, so serving, predict and evaluate agree."""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import Any

import numpy as np
import torch

from lmstack import runtime
from lmstack.tasks.speech.audio import AudioReject, Features, read_audio
from lmstack.tasks.speech.decode import CharNgramLM, CharVocab, decode_batch
from lmstack.tasks.speech.metrics import edit_counts, from_counts
from lmstack.tasks.speech.model import CTCModel
from lmstack.tasks.speech.sources import SourceSettings, list_utterances, read_bytes
from lmstack.tasks.speech.spec import FEATURES, LM_FILE, MODEL_CONFIG, WEIGHTS

MODEL_MANIFEST = "lmstack_model.json"


def _require(model_dir: str, name: str) -> str:
    path = os.path.join(model_dir, name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: --model must be a speech model exported by `lmstack train`")
    return path


def load_module(model_dir: str) -> CTCModel:
    """The CTC network of an export (safetensors; nothing is unpickled)."""
    from safetensors.torch import load_file

    cfg = runtime.read_json(_require(model_dir, MODEL_CONFIG))
    model = CTCModel(cfg)
    model.load_state_dict(load_file(_require(model_dir, WEIGHTS)))
    return model.eval()


class SpeechModel:
    """An exported model ready to transcribe: network, features, vocabulary, decoding defaults, LM."""

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        self.module = load_module(model_dir)
        assets = runtime.read_json(_require(model_dir, FEATURES))
        self.features = Features.from_dict(assets["features"])
        self.vocab = CharVocab(assets["vocab"])
        self.source = SourceSettings.from_dict(assets.get("source") or {})
        self.max_seconds = float(assets.get("max_seconds") or 30.0)
        self.silence_dbfs = assets.get("silence_dbfs")
        self.decode = dict(self.module.arch_config.get("decode") or {"method": "greedy"})
        lm_path = os.path.join(model_dir, LM_FILE)
        self.lm_counts = runtime.read_json(lm_path) if os.path.exists(lm_path) else None

    def read(self, source: str | bytes, check_silence: bool = True) -> np.ndarray:
        """Samples at the model's rate; AudioReject for unreadable/empty/too long (/silent) audio."""
        if isinstance(source, str) and "://" in source:
            source = read_bytes(source)
        return read_audio(source, self.features.sample_rate, self.max_seconds,
                          self.silence_dbfs if check_silence else None)

    def _options(self, opts: dict[str, Any]) -> dict[str, Any]:
        d = {**self.decode, **{k: v for k, v in opts.items() if v is not None}}
        method = d.get("method", "greedy")
        lm = None
        if method == "beam" and float(d.get("lm_weight") or 0) > 0:
            if self.lm_counts is None:
                raise ValueError(f"lm_weight: {self.model_dir} has no {LM_FILE} to fuse")
            lm = CharNgramLM.from_dict(self.lm_counts)
            lm.order = max(1, min(int(d.get("lm_order") or 4), lm.order))
        return {"method": method, "beam_width": int(d.get("beam_width") or 8), "lm": lm.logprob if lm else None,
                "lm_weight": float(d.get("lm_weight") or 0.0), "word_bonus": float(d.get("word_bonus") or 0.0)}

    @torch.no_grad()
    def transcribe(self, waves: list[np.ndarray], batch_size: int = 32, **opts: Any) -> list[str]:
        """Texts of mono waves at the model's sample rate (one forward pass per batch of similar lengths)."""
        decode = self._options(opts)
        mels = [self.features.log_mel(w) for w in waves]
        order = sorted(range(len(mels)), key=lambda i: len(mels[i]))
        out: list[str] = [""] * len(mels)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            t = max(len(mels[i]) for i in idx)
            x = torch.zeros(len(idx), t, self.features.n_mels)
            for j, i in enumerate(idx):
                x[j, : len(mels[i])] = torch.from_numpy(mels[i])
            lengths = torch.tensor([len(mels[i]) for i in idx])
            log_probs, out_len = self.module(x, lengths)
            texts = decode_batch(log_probs.numpy(), out_len.tolist(), self.vocab, **decode)
            for i, text in zip(idx, texts, strict=True):
                out[i] = text
        return out


_LOADED: dict[str, SpeechModel] = {}


def load(model_dir: str) -> SpeechModel:
    key = os.path.abspath(model_dir)
    if key not in _LOADED:
        _LOADED[key] = SpeechModel(model_dir)
    return _LOADED[key]


def _decode_opts(opts: dict[str, Any]) -> dict[str, Any]:
    """CLI names (--ctc-decode, --beam-width, --lm-weight) to decoder options; unknown keys refused."""
    known = {"ctc_decode": "method", "method": "method", "beam_width": "beam_width", "lm_weight": "lm_weight",
             "word_bonus": "word_bonus", "lm_order": "lm_order"}
    unknown = sorted(set(opts) - set(known) - {"batch_size"})
    if unknown:
        raise ValueError(f"speech: unknown option(s) {unknown}")
    return {known[k]: v for k, v in opts.items() if k in known and v is not None}


def predict(model_dir: str, inputs: list[str], **opts: Any) -> list[dict[str, Any]]:
    """One dict per audio file: {"input", "text"} or {"input", "error"} (reason: detail)."""
    sm = load(model_dir)
    waves, out = [], []
    for path in inputs:
        try:
            waves.append(sm.read(path, check_silence=False))
            out.append({"input": path})
        except AudioReject as rej:
            out.append({"input": path, "error": str(rej)})
    texts = iter(sm.transcribe(waves, **_decode_opts(opts)))
    for row in out:
        if "error" not in row:
            row["text"] = next(texts)
    return out


def evaluate_file(model_dir: str, path: str, **opts: Any) -> dict[str, Any]:
    """accuracy, wer, cer over a folder of pattern-named audio files (FSDD's by default, as the model
    was trained) or a JSONL/CSV manifest. Files that cannot be used are counted, not scored."""
    sm = load(model_dir)
    rows, rejects = list_utterances([path], sm.source)
    refs, waves, reasons = [], [], Counter(r["reason"] for r in rejects)
    for r in rows:
        try:
            waves.append(sm.read(r["path"]))
            refs.append(r["text"])
        except AudioReject as rej:
            reasons[rej.reason] += 1
    if not waves:
        raise ValueError(f"{path}: no usable audio to evaluate ({dict(reasons)} set aside)")
    decode = _decode_opts(opts)
    started = time.perf_counter()
    hyps = sm.transcribe(waves, **decode)
    elapsed = time.perf_counter() - started
    counts = edit_counts(refs, hyps)
    return {**from_counts(counts), "files": len(waves), "rejected": sum(reasons.values()),
            "rejected_by_reason": dict(reasons), "words": int(counts[1]), "chars": int(counts[3]),
            "decode": sm._options(decode)["method"], "seconds_per_file": round(elapsed / len(waves), 5)}
