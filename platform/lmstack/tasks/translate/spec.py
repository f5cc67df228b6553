"""Machine translation zh<->en: a small encoder-decoder trained from scratch on cmn.txt-style pairs.

prepare: read (tolerant TSV) -> dedup -> leak-free test/val/train split -> tokenizer on train text ->
encode on Ray Data -> Parquet train/val/test + the same splits as TSV + rejects/ + manifest.json.
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Any

import torch

from lmstack import runtime
from lmstack.config import Recipe
from lmstack.data.read import DataSourceError
from lmstack.tasks.report import ReportPart, RunRecord
from lmstack.tasks.spec import TaskSpec
from lmstack.tasks.translate import data as tdata

SPLITS = ("train", "val", "test")


def _trim(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Rows are padded to max_length on disk; cutting each batch to its longest row saves most compute.
    src_len = int(batch["attention_mask"].sum(1).max())
    labels = batch["labels"].long()
    tgt_len = int((labels != -100).sum(1).max())
    return {
        "input_ids": batch["input_ids"][:, :src_len].long().contiguous(),
        "attention_mask": batch["attention_mask"][:, :src_len].long().contiguous(),
        "labels": labels[:, :tgt_len].contiguous(),
    }


def _decode_opts(recipe_translate: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    opts = dict(recipe_translate.get("decode") or {})
    opts.update({k: v for k, v in given.items() if v is not None})
    return opts


class Translation(TaskSpec):
    name = "translate"
    section = "translate"
    reported_metrics = ("val_loss", "val_ppl")
    label_smoothing = 0.0  # set from the recipe by build_model
    arch = "encoder-decoder"  # set from the recipe by build_model
    pad_id = 0

    # ---- data ---------------------------------------------------------------------------------
    def prepare(self, recipe: Recipe, log: Any = print) -> dict[str, Any]:
        import ray.data

        from lmstack.tasks.translate.tokenizer import train_tokenizer

        started = time.time()
        cfg = recipe.translate
        assert cfg is not None  # the recipe validator guarantees it for task translate
        out = recipe.data_dir()
        # A re-run replaces, never mixes, outputs.
        for stale in (*SPLITS, "rejects", "tokenizer", "lm_text", "train_unused.tsv"):
            runtime.remove(runtime.join(out, stale))
        runtime.makedirs(out)

        pairs, rejects = [], []
        for path in recipe.data.paths:
            if not runtime.exists(path):
                raise DataSourceError(f"data.paths: {path} does not exist")
            p, r = tdata.read_pairs(path)
            pairs += p
            rejects += r
        if rejects:
            runtime.write_text(runtime.join(out, "rejects", "rejects.jsonl"),
                               "".join(_json_line(r) for r in rejects))
        by_reason: dict[str, int] = {}
        for r in rejects:
            by_reason[r["reason"]] = by_reason.get(r["reason"], 0) + 1
        pairs, n_dup = tdata.dedup(pairs)
        log(f"read {len(pairs) + n_dup + len(rejects)} lines: {len(rejects)} set aside in rejects/ "
            f"({by_reason}), {n_dup} duplicate pairs removed, {len(pairs)} pairs kept")
        if len(pairs) <= cfg.test_size + cfg.val_size:
            raise DataSourceError(
                f"data.paths: {len(pairs)} pairs leave none for training after translate.test_size "
                f"({cfg.test_size}) + translate.val_size ({cfg.val_size})"
            )
        splits = tdata.split_pairs(pairs, cfg.test_size, cfg.val_size, cfg.split_seed, cfg.max_train_pairs)
        unused = splits.pop("unused")
        for split, rows in splits.items():
            tdata.write_tsv(runtime.join(out, f"{split}.tsv"), rows)
        if unused:
            tdata.write_tsv(runtime.join(out, "train_unused.tsv"), unused)
        train_text = [p[lang] for p in splits["train"] + unused for lang in ("en", "zh")]
        if cfg.lm_text:
            # Monolingual sentences, not pairs: shuffled by hash so no translation sits next to its source.
            sentences = sorted(set(train_text), key=lambda t: hashlib.sha256(t.encode()).hexdigest())
            ray.data.from_items([{"text": t} for t in sentences]).repartition(1).write_parquet(
                runtime.join(out, "lm_text"))
            log(f"lm_text: {len(sentences)} train-split sentences (both languages)")

        tok_dir = runtime.join(out, "tokenizer")
        # Train-split text only; with lm_text the LM sees the unused pairs' sentences, so the tokenizer does too.
        texts = train_text if cfg.lm_text else [p[lang] for p in splits["train"] for lang in ("en", "zh")]
        tokenizer = train_tokenizer(texts, recipe.tokenizer.vocab_size, zh_chars=cfg.zh_tokens == "char")
        tokenizer.save_pretrained(tok_dir)
        log(f"tokenizer (byte-level BPE, Chinese {cfg.zh_tokens}, vocab {len(tokenizer)}) saved to {tok_dir}")

        rows = {s: tdata.direction_rows(splits[s], cfg.directions) for s in SPLITS}
        train_ds = ray.data.from_items(rows["train"]) if rows["train"] else None
        augmented = {"back_translated": 0, "noisy": 0}
        aug = cfg.augment
        if aug.noise_copies and train_ds is not None:
            from lmstack.tasks.translate.augment import NoiseSources

            noisy = train_ds.map_batches(
                NoiseSources, fn_constructor_args=(aug.noise_copies, aug.p_delete, aug.p_swap, aug.p_mask,
                                                   cfg.split_seed),
                batch_format="numpy", concurrency=1,
            ).materialize()
            augmented["noisy"] = noisy.count()
            train_ds = train_ds.union(noisy)
        if aug.monolingual:
            from lmstack.tasks.translate.augment import back_translated_rows

            assert aug.reverse_model is not None
            bt = back_translated_rows(aug.monolingual, aug.monolingual_lang, aug.reverse_model, aug.max_sentences,
                                      cfg.decode.model_dump()).materialize()
            augmented["back_translated"] = bt.count()
            train_ds = bt if train_ds is None else train_ds.union(bt)

        counts: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            ds = train_ds if split == "train" else ray.data.from_items(rows[split])
            enc = ds.map_batches(
                tdata.EncodePairs, fn_constructor_args=(tok_dir, cfg.max_length), batch_size=512,
                batch_format="numpy", concurrency=1,
            ).materialize()
            enc.select_columns(["input_ids", "attention_mask", "labels"]).write_parquet(runtime.join(out, split))
            n = enc.count()
            counts[split] = {"pairs": len(splits[split]), "rows": n, "cut_to_max_length": int(enc.sum("cut") or 0)}
            log(f"{split}: {len(splits[split])} pairs -> {n} rows ({counts[split]['cut_to_max_length']} cut)")

        manifest = {
            "task": "translate",
            "recipe": recipe.name,
            "recipe_hash": recipe.fingerprint("data", "tokenizer"),
            "prepare_hash": self.prepare_hash(recipe),
            "inputs": recipe.data.paths,
            "unused_train_pairs": len(unused),
            "records": {
                "lines": len(pairs) + n_dup + len(rejects),
                "rejected": len(rejects),
                "rejected_by_reason": by_reason,
                "duplicates": n_dup,
                "pairs": len(pairs),
            },
            "examples": {s: counts[s]["rows"] for s in SPLITS},
            "splits": counts,
            "augmented": augmented,
            "directions": cfg.directions,
            "tokenizer": {"kind": "bpe", "zh_tokens": cfg.zh_tokens, "dir": tok_dir, "vocab_size": len(tokenizer)},
            "pad_id": tokenizer.pad_token_id,
            "eos_id": tokenizer.eos_token_id,
            "max_length": cfg.max_length,
            "wall_time_s": round(time.time() - started, 2),
        }
        runtime.write_json(runtime.join(out, "manifest.json"), manifest)
        return manifest

    def datasets(self, recipe: Recipe) -> dict[str, Any]:
        import ray.data

        data_dir = recipe.data_dir()
        return {split: ray.data.read_parquet(runtime.join(data_dir, split)) for split in ("train", "val")}

    # ---- training -----------------------------------------------------------------------------
    def preflight(self, recipe: Recipe, info: dict[str, Any]) -> None:
        if recipe.translate is not None and recipe.translate.arch == "decoder":
            from lmstack.tasks.translate.decoder import preflight

            preflight(recipe.model, info)

    def build_model(self, recipe: Recipe, info: dict[str, Any]) -> torch.nn.Module:
        from lmstack.tasks.translate.decoder import build_decoder
        from lmstack.tasks.translate.model import build_seq2seq

        if recipe.translate is not None:
            self.label_smoothing = recipe.translate.label_smoothing
            self.arch = recipe.translate.arch
        self.pad_id = info["pad_id"]
        return build_decoder(recipe.model, info) if self.arch == "decoder" else build_seq2seq(recipe.model, info)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
        if self.arch == "decoder":
            from lmstack.tasks.translate import decoder

            return decoder.loss(model, batch, self.pad_id, self.label_smoothing)
        batch = _trim(batch)
        n_target = int((batch["labels"] != -100).sum())
        if not (model.training and self.label_smoothing):
            return model(**batch).loss, n_target  # mean over target tokens
        # Without labels the model computes no loss of its own: one cross-entropy per step, not two.
        from transformers.models.marian.modeling_marian import shift_tokens_right

        cfg = getattr(model, "module", model).config
        decoder_input_ids = shift_tokens_right(batch["labels"], cfg.pad_token_id, cfg.decoder_start_token_id)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       decoder_input_ids=decoder_input_ids).logits
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=-100,
            label_smoothing=self.label_smoothing,
        )
        return loss, n_target

    def metrics(self, loss_sum: float, count: int, info: dict[str, Any],
                counts: Any = None) -> dict[str, float]:
        loss = loss_sum / max(count, 1)
        return {"val_loss": loss, "val_ppl": math.exp(min(loss, 50.0))}

    def report_parts(self, run: RunRecord) -> list[ReportPart]:
        from lmstack.tasks.translate.report import translation_parts

        return translation_parts(run, predict) + super().report_parts(run)

    # ---- inference ----------------------------------------------------------------------------
    def predict(self, model_dir: str, texts: list[str], **opts: Any) -> list[dict[str, Any]]:
        return predict(model_dir, texts, **opts)

    def evaluate_file(self, model_dir: str, path: str, **opts: Any) -> dict[str, Any]:
        return evaluate_file(model_dir, path, **opts)

    def load_exported(self, model_dir: str) -> torch.nn.Module:
        from lmstack.tasks.translate.serving import lineage, load

        model, tok, _ = load(model_dir)
        # The loss follows the exported model's architecture (evaluate RECIPE scores it like training).
        self.arch = ((lineage(model_dir).get("recipe") or {}).get("translate") or {}).get("arch", self.arch)
        self.pad_id = tok.pad_token_id
        return model

    def add_cli_options(self, parser: Any) -> None:
        parser.add_argument("--direction", choices=list(tdata.DIRECTIONS), help="translation models: which way")

    def serving(self) -> Any:
        from lmstack.tasks.translate.serve import SERVING

        return SERVING


def _json_line(obj: dict[str, Any]) -> str:
    import json

    return json.dumps(obj, ensure_ascii=False) + "\n"


def _direction(model_dir: str, direction: str | None) -> tuple[str, dict[str, Any]]:
    from lmstack.tasks.translate.serving import lineage

    section = (lineage(model_dir).get("recipe") or {}).get("translate") or {}
    known = section.get("directions") or list(tdata.DIRECTIONS)
    direction = direction or known[0]
    if direction not in known:
        raise ValueError(f"direction: {direction!r} is not one the model was trained for ({known})")
    return direction, section


def predict(model_dir: str, texts: list[str], direction: str | None = None, num_beams: int | None = None,
            length_penalty: float | None = None, max_new_tokens: int | None = None,
            batch_size: int | None = None) -> list[dict[str, Any]]:
    """Translate `texts` with an exported model; one dict (source, translation, direction) per text."""
    from lmstack.tasks.translate import decode, decoder
    from lmstack.tasks.translate.serving import load

    direction, section = _direction(model_dir, direction)
    translate = decoder.translate if section.get("arch") == "decoder" else decode.translate
    opts = _decode_opts(section, {"num_beams": num_beams, "length_penalty": length_penalty,
                                  "max_new_tokens": max_new_tokens, "batch_size": batch_size})
    model, tok, max_length = load(model_dir)
    out = translate(model, tok, list(texts), direction, max_length=max_length, **opts) if texts else []
    return [{"source": s, "translation": t, "direction": direction} for s, t in zip(texts, out, strict=True)]


def evaluate_file(model_dir: str, path: str, direction: str | None = None, **decode: Any) -> dict[str, Any]:
    """BLEU and chrF of an exported model on a cmn.txt-format file (malformed lines are counted, not used)."""
    from lmstack.tasks.translate.metrics import score

    if not runtime.exists(path):
        raise FileNotFoundError(f"{path} does not exist")
    pairs, rejects = tdata.read_pairs(path)
    if not pairs:
        raise DataSourceError(f"{path}: no English<TAB>Chinese pair could be read ({len(rejects)} malformed lines)")
    direction, _ = _direction(model_dir, direction)
    src, tgt = direction.split("-")
    started = time.time()
    hyps = [r["translation"] for r in predict(model_dir, [p[src] for p in pairs], direction=direction, **decode)]
    return {
        **score(hyps, [p[tgt] for p in pairs], tgt),
        "direction": direction,
        "pairs": len(pairs),
        "rejected": len(rejects),
        "seconds": round(time.time() - started, 2),
    }
