"""Speech to text as a task: CTC loss over log-mel batches, WER/CER/accuracy from summed edit counts,
a safetensors export with its feature settings and vocabulary, predict/evaluate on audio files, and
the /v1/audio/transcriptions route."""

from __future__ import annotations

import argparse
import os
from typing import Any, ClassVar

import numpy as np
import torch

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.tasks.spec import TaskSpec
from lmstack.tasks.speech.config import SpeechConfig
from lmstack.tasks.speech.decode import CharVocab, decode_batch
from lmstack.tasks.speech.metrics import edit_counts, from_counts
from lmstack.tasks.speech.model import CTCModel, arch_config, ctc_loss

WEIGHTS = "model.safetensors"
MODEL_CONFIG = "speech_model.json"  # the network's shape (and decoding defaults)
FEATURES = "speech_features.json"  # feature settings, vocabulary, how names/manifests are read
LM_FILE = "speech_lm.json"  # character n-gram of the training transcripts, for shallow fusion
LM_STORED_ORDER = 6


def trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rows are padded to their split's longest utterance; cut each batch to its own longest."""
    t = int(batch["n_frames"].max())
    s = max(1, int(batch["label_len"].max()))
    return {"features": batch["features"][:, :t].float(), "n_frames": batch["n_frames"].long(),
            "labels": batch["labels"][:, :s].long(), "label_len": batch["label_len"].long()}


class SpeechSpec(TaskSpec):
    name = "speech"
    section = "speech"
    section_model = SpeechConfig
    section_required = False
    reported_metrics: ClassVar[tuple[str, ...]] = ("val_loss", "val_wer", "val_cer", "val_accuracy")
    select_metric: ClassVar[tuple[str, str]] = ("val_wer", "min")

    def __init__(self) -> None:
        self.augment: dict[str, int] = {}
        self.vocab = CharVocab(SpeechConfig().vocab)

    # -- data -----------------------------------------------------------------------------------
    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        from lmstack.tasks.speech.prepare import prepare_speech

        return prepare_speech(recipe, log=log)

    def prepare_hash(self, recipe: Recipe) -> str:
        from lmstack.tasks.speech.prepare import prepare_hash

        return prepare_hash(recipe)

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        import ray.data

        from lmstack.tasks.speech.prepare import TRAIN_COLUMNS

        data_dir = recipe.data_dir()
        return {split: ray.data.read_parquet(runtime.join(data_dir, split), columns=TRAIN_COLUMNS)
                for split in ("train", "val")}

    # -- model and training ---------------------------------------------------------------------
    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        cfg, m = recipe.speech, recipe.model
        aug = cfg.augment
        self.augment = {"time_masks": aug.time_masks, "time_width": aug.time_mask_frames,
                        "freq_masks": aug.freq_masks, "freq_width": aug.freq_mask_bins}
        self.vocab = CharVocab(info["vocab"])
        shape = arch_config(cfg.arch, info["features"]["n_mels"], len(self.vocab), m.n_embd, m.n_layer, m.n_head,
                            cfg.ff_mult, m.dropout, cfg.subsample, cfg.conv_kernel)
        model = CTCModel({**shape, "decode": cfg.decode.model_dump()})
        return model

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        b = trim(batch)
        feats = b["features"]
        if model.training and (self.augment.get("time_masks") or self.augment.get("freq_masks")):
            from lmstack.tasks.speech.augment import spec_augment

            feats = spec_augment(feats, b["n_frames"], **self.augment)
        log_probs, out_len = model(feats, b["n_frames"])
        return ctc_loss(log_probs, out_len, b["labels"], b["label_len"]), int(feats.shape[0])

    def batch_tokens(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["n_frames"].sum())  # feature frames: the throughput figure is frames/s

    def eval_counts(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
        """Greedy transcripts against the references: summed word/char edits and exact matches."""
        b = trim(batch)
        log_probs, out_len = model(b["features"], b["n_frames"])
        hyps = decode_batch(log_probs.float().cpu().numpy(), out_len.cpu().tolist(), self.vocab)
        labels, lens = b["labels"].cpu().numpy(), b["label_len"].cpu().tolist()
        refs = [self.vocab.decode(row[:n]) for row, n in zip(labels, lens, strict=True)]
        return edit_counts(refs, hyps)

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any],
                counts: np.ndarray | None = None) -> dict[str, float]:
        out = {"val_loss": loss_sum / max(count, 1)}
        if counts is not None and len(counts):
            out.update(from_counts(np.asarray(counts), prefix="val_"))
        return out

    # -- export ---------------------------------------------------------------------------------
    def export(self, model: torch.nn.Module, out_dir: str) -> None:
        from safetensors.torch import save_file

        core = getattr(model, "module", model)
        state = {k: v.detach().cpu().contiguous() for k, v in core.state_dict().items()}
        os.makedirs(out_dir, exist_ok=True)
        save_file(state, os.path.join(out_dir, WEIGHTS), metadata={"format": "pt", "task": "speech"})
        runtime.write_json(os.path.join(out_dir, MODEL_CONFIG), core.arch_config)

    def export_assets(self, info: dict[str, Any], out_dir: str) -> None:
        from lmstack.tasks.speech.decode import CharNgramLM

        runtime.write_json(os.path.join(out_dir, FEATURES), {
            "features": info["features"], "vocab": info["vocab"], "source": info["source"],
            "max_seconds": info["max_seconds"], "silence_dbfs": info["silence_dbfs"]})
        if info.get("lm_text") and runtime.exists(info["lm_text"]):
            texts = [t for t in runtime.read_text(info["lm_text"]).splitlines() if t]
            lm = CharNgramLM.train(texts, LM_STORED_ORDER, info["vocab"])
            runtime.write_json(os.path.join(out_dir, LM_FILE), lm.to_dict())

    def load_exported(self, model_dir: str) -> torch.nn.Module:
        from lmstack.tasks.speech.predict import load_module

        return load_module(model_dir)

    # -- inference ------------------------------------------------------------------------------
    def predict(self, model_dir: str, inputs: list[str], **opts: Any) -> list[dict[str, Any]]:
        from lmstack.tasks.speech.predict import predict

        return predict(model_dir, inputs, **opts)

    def evaluate_file(self, model_dir: str, path: str, **opts: Any) -> dict[str, Any]:
        from lmstack.tasks.speech.predict import evaluate_file

        return evaluate_file(model_dir, path, **opts)

    def add_cli_options(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--ctc-decode", choices=["greedy", "beam"], help="speech models: CTC decoding")
        parser.add_argument("--beam-width", type=int, help="speech models: beam width (--ctc-decode beam)")
        parser.add_argument("--lm-weight", type=float, help="speech models: shallow-fusion weight of the "
                            "exported character LM (beam only; 0 = none)")

    # -- serving --------------------------------------------------------------------------------
    def serving(self) -> Any:
        from lmstack.tasks.speech.serve import SERVING

        return SERVING
