"""`lmstack prepare` for task speech: list utterances -> speaker-disjoint split -> read, check, augment
and featurize on Ray Data -> Parquet splits (log-mels padded per split, lengths, label ids) + rejects/
+ manifest.json.

Two passes over Ray Data: the first reads each file once and writes variable-length features (or the
reason it cannot be used); the second pads each split to its own longest utterance, so the Parquet
columns are fixed-shape tensors that Ray Train's iter_torch_batches stacks directly.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from typing import Any

import numpy as np
import pyarrow as pa

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.data.read import DataSourceError
from lmstack.tasks.speech import augment
from lmstack.tasks.speech.audio import AudioReject, Features, ctc_frames_needed, oov_chars, read_audio
from lmstack.tasks.speech.decode import CharVocab
from lmstack.tasks.speech.sources import SourceSettings, list_utterances, read_bytes

SPLITS = ("train", "val", "test")
TRAIN_COLUMNS = ["features", "n_frames", "labels", "label_len"]
FIRST_PASS = pa.schema([
    ("id", pa.string()), ("path", pa.string()), ("text", pa.string()), ("speaker", pa.string()),
    ("split", pa.string()), ("aug", pa.string()), ("ok", pa.bool_()), ("reason", pa.string()),
    ("detail", pa.string()), ("seconds", pa.float32()), ("n_frames", pa.int32()),
    ("features", pa.list_(pa.float32())), ("labels", pa.list_(pa.int16())),
])


def features_of(recipe: Recipe) -> Features:
    return Features(**recipe.speech.features.model_dump())


def source_settings(recipe: Recipe) -> SourceSettings:
    cfg = recipe.speech
    return SourceSettings(cfg.filename_pattern, cfg.audio_field, cfg.text_field, cfg.speaker_field, cfg.lowercase)


def prepare_hash(recipe: Recipe) -> str:
    """What the prepared rows depend on: data and the speech section without the model, decoding and
    batch-time SpecAugment (the front end's stride stays: it decides which clips are too short)."""
    raw = recipe.model_dump(mode="json")
    speech = {k: v for k, v in raw["speech"].items() if k not in ("arch", "conv_kernel", "ff_mult", "decode")}
    speech["augment"] = {k: v for k, v in speech["augment"].items() if k in ("speeds", "noise_copies", "noise_snr_db")}
    key = {"data": {k: v for k, v in raw["data"].items() if k != "fold"}, "speech": speech}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _unit_hash(key: str) -> float:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def assign_split(speaker: str, utt_id: str, val_speakers: list[str], test_speakers: list[str],
                 val_fraction: float) -> str:
    """By speaker when known, so that no validation or test voice is heard in training: the named
    speakers, else whole speakers by a stable hash. Utterances without a speaker split by their id."""
    if speaker:
        if speaker in test_speakers:
            return "test"
        if speaker in val_speakers:
            return "val"
        if val_speakers or test_speakers:
            return "train"
        return "val" if _unit_hash(f"speaker:{speaker}") < val_fraction else "train"
    return "val" if _unit_hash(f"utt:{utt_id}") < val_fraction else "train"


def featurize_batch(batch: dict[str, np.ndarray], features: dict[str, Any], vocab: str, max_seconds: float,
                    silence_dbfs: float, subsample: int, snr_range: tuple[float, float]) -> pa.Table:
    """Ray Data pass 1: read, check, perturb and featurize each row; a row that fails keeps its reason."""
    import torch

    torch.set_num_threads(1)  # one task per core does better than threads fighting inside each
    feats = Features.from_dict(features)
    chars = CharVocab(vocab)
    cols: dict[str, list[Any]] = {name: [] for name in FIRST_PASS.names}
    for i in range(len(batch["id"])):
        row = {k: batch[k][i] for k in ("id", "path", "text", "speaker", "split", "aug")}
        out = {**{k: str(v) for k, v in row.items()}, "ok": False, "reason": "", "detail": "", "seconds": 0.0,
               "n_frames": 0, "features": [], "labels": []}
        try:
            text = row["text"]
            if not text.strip():
                raise AudioReject("missing_field", "empty transcript")
            bad = oov_chars(text, vocab)
            if bad:
                raise AudioReject("oov_chars", f"{bad!r} not in the vocabulary")
            labels = chars.encode(text)
            src = row["path"] if "://" not in row["path"] else read_bytes(row["path"])
            wave = read_audio(src, feats.sample_rate, max_seconds, silence_dbfs)
            wave = augment.perturb(wave, row["id"], row["aug"], float(batch["speed"][i]), bool(batch["noise"][i]),
                                   snr_range)
            mel = feats.log_mel(wave)
            if -(-len(mel) // subsample) < ctc_frames_needed(labels):
                raise AudioReject("too_short", f"{len(wave) / feats.sample_rate:.2f} s is too short for "
                                  f"{len(labels)} characters")
            out.update(ok=True, seconds=len(wave) / feats.sample_rate, n_frames=len(mel),
                       features=mel.ravel().tolist(), labels=labels)
        except AudioReject as rej:
            out.update(reason=rej.reason, detail=rej.detail)
        for k in FIRST_PASS.names:
            cols[k].append(out[k])
    return pa.table(cols, schema=FIRST_PASS)


def pad_batch(batch: dict[str, np.ndarray], max_frames: int, n_mels: int, max_label: int) -> dict[str, np.ndarray]:
    """Ray Data pass 2: fixed-shape tensors. Features in float16: normalized log-mels lose nothing that
    matters, and the files halve."""
    n = len(batch["id"])
    feats = np.zeros((n, max_frames, n_mels), dtype=np.float16)
    labels = np.zeros((n, max_label), dtype=np.int16)
    label_len = np.zeros(n, dtype=np.int32)
    for i in range(n):
        f = np.asarray(batch["features"][i], dtype=np.float32).reshape(-1, n_mels)
        feats[i, : len(f)] = f
        lab = np.asarray(batch["labels"][i], dtype=np.int16)
        labels[i, : len(lab)] = lab
        label_len[i] = len(lab)
    return {"id": batch["id"], "speaker": batch["speaker"], "text": batch["text"], "aug": batch["aug"],
            "features": feats, "n_frames": batch["n_frames"].astype(np.int32), "labels": labels,
            "label_len": label_len}


def prepare_speech(recipe: Recipe, log: Any = print) -> dict[str, Any]:
    import ray.data

    started = time.time()
    cfg, data = recipe.speech, recipe.data
    out = recipe.data_dir()
    for stale in (*SPLITS, "rejects", "lm_text.txt"):  # a re-run replaces, never mixes, outputs
        runtime.remove(runtime.join(out, stale))
    runtime.makedirs(out)

    settings = source_settings(recipe)
    rows, listing_rejects = list_utterances(list(data.paths), settings)
    extra, extra_rejects = list_utterances(list(cfg.train_only_paths), settings) if cfg.train_only_paths else ([], [])
    if data.max_files:
        rows = rows[: data.max_files]
    for r in rows:
        r["split"] = assign_split(r["speaker"], r["id"], cfg.val_speakers, cfg.test_speakers, data.val_fraction)
    heldout = set(cfg.val_speakers) | set(cfg.test_speakers) | {r["speaker"] for r in rows if r["split"] != "train"}
    clash = sorted({r["speaker"] for r in extra if r["speaker"] in heldout and r["speaker"]})
    if clash:
        raise DataSourceError(f"speech.train_only_paths: speakers {clash} are validation/test speakers")
    for r in extra:
        r["split"], r["id"] = "train", f"extra:{r['id']}"
    items = []
    for r in rows + extra:
        variants = augment.copies(cfg.augment) if r["split"] == "train" else augment.copies(_NoAugment)
        items += [{**r, **v} for v in variants]
    if not items:
        raise DataSourceError(f"data.paths: no usable utterances in {list(data.paths)} "
                              f"({len(listing_rejects)} files set aside)")

    feats = features_of(recipe)
    first = ray.data.from_items(items).map_batches(
        featurize_batch, batch_size=32, batch_format="numpy",
        fn_kwargs={"features": feats.to_dict(), "vocab": cfg.vocab, "max_seconds": cfg.max_seconds,
                   "silence_dbfs": cfg.silence_dbfs, "subsample": cfg.subsample,
                   "snr_range": tuple(cfg.augment.noise_snr_db)},
    ).materialize()

    summary = first.select_columns(["id", "path", "split", "speaker", "aug", "ok", "reason", "detail", "seconds",
                                    "n_frames", "text"]).to_pandas()
    bad = summary[~summary["ok"]]
    # An utterance whose original is unusable is one reject, not one per augmented copy.
    lost = set(bad[bad["aug"] == "orig"]["id"])
    bad = bad[(bad["aug"] == "orig") | ~bad["id"].isin(lost)]
    rejects = listing_rejects + extra_rejects + [
        {"id": r.id, "path": r.path, "split": r.split, "aug": r.aug, "reason": r.reason, "detail": r.detail}
        for r in bad.itertuples()]
    rejects_path = runtime.join(out, "rejects", "rejects.jsonl")
    runtime.write_text(rejects_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    good = summary[summary["ok"]]
    max_label = int(max((len(t) for t in good["text"]), default=1))

    counts: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        part = good[good["split"] == split]
        if part.empty:
            continue
        max_frames = int(part["n_frames"].max())
        (first.filter(lambda r, s=split: r["ok"] and r["split"] == s)
              .map_batches(pad_batch, batch_size=64, batch_format="numpy",
                           fn_kwargs={"max_frames": max_frames, "n_mels": feats.n_mels, "max_label": max_label})
              .write_parquet(runtime.join(out, split)))
        counts[split] = {"utterances": len(part), "originals": int((part["aug"] == "orig").sum()),
                         "speakers": sorted(set(part["speaker"])), "hours": round(float(part["seconds"].sum()) / 3600, 4),
                         "max_frames": max_frames}
        log(f"{split}: {len(part)} utterances ({counts[split]['originals']} originals) of "
            f"{len(counts[split]['speakers'])} speakers, {counts[split]['hours'] * 60:.1f} min")
    for split in ("train", "val"):
        if split not in counts:
            raise DataSourceError(f"data.paths: no usable {split} utterances; check speech.val_speakers / "
                                  f"speech.test_speakers and {rejects_path}")
    train_texts = good[(good["split"] == "train") & (good["aug"] == "orig")]["text"].tolist()
    lm_text = runtime.join(out, "lm_text.txt")
    runtime.write_text(lm_text, "".join(t + "\n" for t in train_texts))

    by_reason = dict(Counter(r["reason"] for r in rejects))
    manifest = {
        "task": "speech",
        "recipe": recipe.name,
        "prepare_hash": prepare_hash(recipe),
        "recipe_hash": recipe.fingerprint("data", "tokenizer"),
        "inputs": list(data.paths),
        "train_only_inputs": list(cfg.train_only_paths),
        "records": len(rows) + len(extra) + len(listing_rejects) + len(extra_rejects),
        "rejected": len(rejects),
        "rejected_by_reason": by_reason,
        "rejects": rejects_path,
        "examples": {s: c["utterances"] for s, c in counts.items()},
        "splits": counts,
        "vocab": cfg.vocab,
        "vocab_size": len(CharVocab(cfg.vocab)),
        "max_label_len": max_label,
        "features": feats.to_dict(),
        "source": settings.to_dict(),
        "max_seconds": cfg.max_seconds,
        "silence_dbfs": cfg.silence_dbfs,
        "lm_text": lm_text,
        "wall_time_s": round(time.time() - started, 2),
    }
    runtime.write_json(runtime.join(out, "manifest.json"), manifest)
    log(f"prepared {recipe.name}: {manifest['examples']}, {len(rejects)} rejected {by_reason} (see {rejects_path})")
    return manifest


class _NoAugment:
    speeds: list[float] = []
    noise_copies = 0
