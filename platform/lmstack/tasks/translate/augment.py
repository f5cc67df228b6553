"""Training-data augmentation on Ray Data: back-translation of a monolingual file and source-side noise."""

from __future__ import annotations

import random
import zlib
from typing import Any

import numpy as np

from lmstack.data.read import decoded_lines
from lmstack.tasks.translate.data import CJK

MASK = "<mask>"


def _units(text: str, lang: str) -> tuple[list[str], str]:
    # Chinese is noised per character, English per word.
    return (list(text), "") if lang == "zh" or CJK.search(text) else (text.split(), " ")


def noisy(text: str, lang: str, rng: random.Random, p_delete: float, p_swap: float, p_mask: float) -> str:
    """Token noise (Lample et al. 2018): drop, mask and swap neighbouring units; never returns empty."""
    units, sep = _units(text, lang)
    kept = [u for u in units if rng.random() >= p_delete] or units[:1]
    kept = [MASK if rng.random() < p_mask else u for u in kept]
    i = 0
    while i < len(kept) - 1:
        if rng.random() < p_swap:
            kept[i], kept[i + 1] = kept[i + 1], kept[i]
            i += 2
        else:
            i += 1
    return sep.join(kept)


class NoiseSources:
    """map_batches: each src/tgt/direction row -> `copies` rows whose source is noised (seeded per text)."""

    def __init__(self, copies: int, p_delete: float, p_swap: float, p_mask: float, seed: int):
        self.copies, self.p = copies, (p_delete, p_swap, p_mask)
        self.seed = seed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        src, tgt, direction = [], [], []
        for s, t, d in zip(batch["src"], batch["tgt"], batch["direction"], strict=True):
            rng = random.Random(zlib.crc32(f"{self.seed}\x00{s}".encode()))
            for _ in range(self.copies):
                src.append(noisy(str(s), str(d).split("-")[0], rng, *self.p))
                tgt.append(t)
                direction.append(d)
        return {"src": np.array(src, dtype=object), "tgt": np.array(tgt, dtype=object),
                "direction": np.array(direction, dtype=object)}


class BackTranslate:
    """map_batches: monolingual target-language text -> synthetic sources from the reverse model."""

    def __init__(self, model_dir: str, reverse_direction: str, decode: dict[str, Any]):
        from lmstack.tasks.translate.serving import load

        load(model_dir)  # once per actor, before the first batch
        self.model_dir = model_dir
        self.reverse_direction = reverse_direction
        self.decode = decode

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from lmstack.tasks.translate.spec import predict

        texts = [str(t) for t in batch["text"]]
        # predict() picks the decoding of the reverse model's architecture (encoder-decoder or decoder).
        rows = predict(self.model_dir, texts, direction=self.reverse_direction, **self.decode)
        synthetic = [r["translation"] for r in rows]
        forward = "-".join(reversed(self.reverse_direction.split("-")))
        return {"src": np.array(synthetic, dtype=object), "tgt": np.array(texts, dtype=object),
                "direction": np.array([forward] * len(texts), dtype=object)}


def back_translated_rows(path: str, lang: str, reverse_model: str, max_sentences: int | None,
                         decode: dict[str, Any]):
    """A Ray Dataset of (src, tgt, direction) rows: synthetic source, real `lang` target."""
    import ray.data

    # Lines that are not UTF-8 are left out (never replaced: U+FFFD would become a training target).
    texts = [t.strip() for _, t, reason in decoded_lines(path) if reason is None and t.strip()]
    if max_sentences:
        texts = texts[:max_sentences]
    other = "zh" if lang == "en" else "en"
    return ray.data.from_items([{"text": t} for t in texts]).map_batches(
        BackTranslate, fn_constructor_args=(reverse_model, f"{lang}-{other}", decode),
        batch_size=decode.get("batch_size", 64), batch_format="numpy", concurrency=1,
    )
