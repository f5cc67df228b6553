"""Feature extraction: the frozen LM turns each example into one vector.

On the cluster it is a Ray Data batch-inference pass (map_batches on an actor pool, so each actor
loads the model once); at serving time the same pooling runs in-process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """[B, T, H] -> [B, H]: the mean over real tokens, or the last real token (right padding)."""
    mask = mask.to(hidden.dtype)
    if how == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
    last = mask.sum(1).long().clamp_min(1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def load_backbone(model_dir: str) -> torch.nn.Module:
    """The transformer without its LM head (AutoModel drops it), in eval mode."""
    from transformers import AutoModel

    from lmstack.models.loading import load_pretrained

    model = load_pretrained(AutoModel, model_dir, "finetune.from_model")
    return model.eval()


def embed_ids(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    with torch.no_grad():
        t_ids = torch.as_tensor(np.asarray(ids), dtype=torch.long)
        t_mask = torch.as_tensor(np.asarray(mask), dtype=torch.long)
        hidden = model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
        return pool(hidden, t_mask, how).float().numpy()


class Embedder:
    """map_batches body: token ids -> pooled hidden state (one model per actor)."""

    def __init__(self, model_dir: str, pooling: str):
        torch.set_num_threads(1)  # one actor per CPU
        self.model = load_backbone(model_dir)
        self.pooling = pooling

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        emb = embed_ids(self.model, np.stack(batch["input_ids"]), np.stack(batch["attention_mask"]), self.pooling)
        rest = {k: v for k, v in batch.items() if k not in ("input_ids", "attention_mask")}
        return {"embedding": list(emb), **rest}


def embed_dataset(ds, model_dir: str, pooling: str, batch_size: int, actors: int) -> tuple[np.ndarray, dict]:
    """(embeddings [N, H], the other columns as arrays) of a Ray Dataset with input_ids / attention_mask."""
    import ray.data

    # Read first: an actor pool holding every CPU would leave none for the read tasks (deadlock).
    src = ds.materialize()
    out = src.map_batches(
        Embedder,
        fn_constructor_kwargs={"model_dir": model_dir, "pooling": pooling},
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=1,
    )
    rows = out.take_all()
    cols = [k for k in (rows[0] if rows else {}) if k != "embedding"]
    emb = np.stack([r["embedding"] for r in rows]) if rows else np.zeros((0, 0), dtype=np.float32)
    return emb, {k: np.asarray([r[k] for r in rows]) for k in cols}
