"""The recipe: one YAML file, one pydantic model per section, validated before any Ray work."""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_serializer, model_validator


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line naming the file and the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class CleanConfig(Section):
    nfkc: bool = True
    strip_html: bool = False
    normalize_whitespace: bool = True
    min_chars: int = Field(1, ge=0)
    max_chars: int | None = Field(None, gt=0)
    # Gopher-style quality rules (Rae et al. 2021); None disables a rule.
    max_symbol_word_ratio: float | None = Field(None, ge=0)
    max_repeated_line_fraction: float | None = Field(None, ge=0, le=1)
    min_mean_word_length: float | None = Field(None, ge=0)
    max_mean_word_length: float | None = Field(None, gt=0)


class DedupConfig(Section):
    exact: bool = True
    near: bool = False
    threshold: float = Field(0.8, gt=0, le=1)
    num_perm: int = Field(128, ge=8)
    bands: int = Field(16, ge=1)
    shingle: int = Field(5, ge=1)

    @model_validator(mode="after")
    def _bands_divide(self) -> DedupConfig:
        if self.num_perm % self.bands:
            raise ValueError(f"bands ({self.bands}) must divide num_perm ({self.num_perm})")
        return self


class DataConfig(Section):
    paths: list[str] = Field(min_length=1)
    format: Literal["auto", "text", "jsonl", "parquet", "csv", "arrow"] = "auto"
    text_field: str = "text"
    # For plain text: a document is a whole file, a paragraph (blank-line separated) or a line.
    text_unit: Literal["file", "paragraph", "line"] = "file"
    max_bytes_per_file: int | None = Field(None, gt=0)
    max_files: int | None = Field(None, gt=0)
    clean: CleanConfig = CleanConfig()
    dedup: DedupConfig = DedupConfig()
    val_fraction: float = Field(0.1, ge=0, lt=1)
    # hash: whole documents go to train or val by a hash of their id.
    # tail: the last val_fraction of each document's tokens is validation (nanoGPT's split).
    split: Literal["hash", "tail"] = "hash"
    # k-fold cross-validation: with folds=k, fold i (0-based) is validation and the rest is train;
    # val_fraction is then unused. Tasks that support it split by a stable hash of the record id.
    folds: int | None = Field(None, ge=2)
    fold: int = Field(0, ge=0)
    block_size: int = Field(128, ge=2)
    output: str | None = None  # default: <run_dir>/data

    @model_validator(mode="after")
    def _fold_in_range(self) -> DataConfig:
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(f"fold ({self.fold}) must be below folds ({self.folds})")
        if self.folds is not None and self.split == "tail":
            raise ValueError("folds split whole documents; use split: hash")
        return self


class TokenizerConfig(Section):
    kind: Literal["bpe", "char", "pretrained"] = "bpe"
    vocab_size: int = Field(4096, ge=32)
    path: str | None = None  # a local tokenizer directory when kind == pretrained
    sample_bytes: int = Field(50_000_000, gt=0)  # text used to train the tokenizer

    @model_validator(mode="after")
    def _path_for_pretrained(self) -> TokenizerConfig:
        if self.kind == "pretrained" and not self.path:
            raise ValueError("path is required when kind is 'pretrained'")
        return self


class ModelConfig(Section):
    family: Literal["gpt2", "llama"] = "gpt2"
    path: str | None = None  # a local HF model directory; overrides the shape fields
    n_layer: int = Field(4, ge=1)
    n_head: int = Field(4, ge=1)
    n_embd: int = Field(128, ge=8)
    n_kv_head: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=8)
    dropout: float = Field(0.0, ge=0, lt=1)
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        return self


class EarlyStopping(Section):
    metric: str = "val_loss"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(Section):
    num_workers: int = Field(1, ge=1)
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)  # reserved from Ray per worker
    threads_per_worker: int | None = Field(None, ge=1)  # torch threads (default: cpus_per_worker)
    seed: int = 1337
    batch_size: int = Field(12, ge=1)  # per worker, per micro-step
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(2000, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr: float = Field(1e-4, ge=0)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    beta1: float = Field(0.9, gt=0, lt=1)
    beta2: float = Field(0.99, gt=0, lt=1)
    grad_clip: float | None = Field(1.0, gt=0)
    eval_every: int = Field(250, ge=1)
    eval_batches: int | None = Field(200, ge=1)
    log_every: int = Field(50, ge=1)
    checkpoint_every: int | None = Field(None, ge=1)  # default: eval_every
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(2, ge=0)
    early_stopping: EarlyStopping | None = None

    @model_validator(mode="after")
    def _lr_order(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        return self


class GenerateConfig(Section):
    prompt: str = "\n"
    max_new_tokens: int = Field(200, ge=1)
    temperature: float = Field(0.8, gt=0)
    top_k: int | None = Field(50, ge=1)


class ParamSpec(Section):
    """One searched key: exactly one of the distributions, e.g. `{loguniform: [1e-4, 1e-2]}`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    uniform: tuple[float, float] | None = None
    loguniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")  # inclusive bounds
    choice: list[Any] | None = Field(None, min_length=1)
    grid: list[Any] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_distribution(self) -> ParamSpec:
        given = [k for k in ("uniform", "loguniform", "int_", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of uniform, loguniform, int, choice, grid")
        bounds = self.uniform or self.loguniform or self.int_
        if bounds is not None and bounds[0] > bounds[1]:
            raise ValueError(f"low ({bounds[0]}) must not exceed high ({bounds[1]})")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be positive")
        return self

    @model_serializer(mode="wrap")
    def _as_written(self, handler) -> dict[str, Any]:
        # Dump as the recipe is written ({loguniform: [a, b]}) so a dumped recipe loads back.
        return {("int" if k == "int_" else k): v for k, v in handler(self).items() if v is not None}


class TuneConfig(Section):
    """`lmstack tune`: Ray Tune over training runs of this recipe (see lmstack.tune)."""

    space: dict[str, ParamSpec] = Field(min_length=1)  # dotted recipe key -> distribution
    metric: str = "val_loss"
    mode: Literal["min", "max"] = "min"
    search: Literal["random", "grid", "optuna"] = "random"
    scheduler: Literal["none", "asha", "median", "pbt"] = "none"
    num_samples: int = Field(1, ge=1)  # random/optuna: trials; grid: repeats of the grid
    max_concurrent: int | None = Field(None, ge=1)  # default: as many as the cluster's CPUs fit
    grace_period: int | None = Field(None, ge=1)  # steps before ASHA/median may stop (default eval_every)
    reduction_factor: int = Field(2, ge=2)  # ASHA
    perturbation_interval: int | None = Field(None, ge=1)  # PBT, in steps (default eval_every)
    quantile_fraction: float = Field(0.25, gt=0, le=0.5)  # PBT: the bottom share copies the top share
    # k-fold cross-validation: a trial trains once per fold of data.folds and scores the mean of the
    # folds' best metric. A trial reports only when every fold is done, so no scheduler applies.
    cross_validation: bool = False
    seed: int | None = 0

    @model_validator(mode="after")
    def _cv_without_scheduler(self) -> TuneConfig:
        if self.cross_validation and self.scheduler != "none":
            raise ValueError(f"cross_validation scores a trial only at its end; scheduler must be none, "
                             f"not {self.scheduler!r}")
        return self

    @model_validator(mode="after")
    def _keys_exist(self) -> TuneConfig:
        from lmstack.tune.space import check_key

        for key in self.space:
            check_key(key)
        return self


class TranslateDecodeConfig(Section):
    num_beams: int = Field(4, ge=1)  # 1 = greedy
    length_penalty: float = 1.0  # beam score = sum log p / length ** length_penalty
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(64, ge=1)


class TranslateAugmentConfig(Section):
    """Back-translation of a monolingual file (reverse model makes the sources) and source-side noise."""

    monolingual: str | None = None  # one target-language sentence per line
    monolingual_lang: Literal["en", "zh"] = "en"
    reverse_model: str | None = None  # exported model that translates monolingual_lang -> the other
    max_sentences: int | None = Field(None, ge=1)
    noise_copies: int = Field(0, ge=0)  # noisy copies of each training source
    p_delete: float = Field(0.1, ge=0, lt=1)
    p_swap: float = Field(0.1, ge=0, lt=1)
    p_mask: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _reverse_for_monolingual(self) -> TranslateAugmentConfig:
        if self.monolingual and not self.reverse_model:
            raise ValueError("reverse_model is required when monolingual is given")
        return self


class TranslateConfig(Section):
    """task: translate. Pairs in cmn.txt format (English<TAB>Chinese<TAB>attribution) from data.paths."""

    directions: list[Literal["zh-en", "en-zh"]] = Field(["zh-en"], min_length=1)
    # encoder-decoder: a Marian-shaped seq2seq. decoder: a causal LM (the model section's family, or the
    # pretrained lmstack LM at model.path, which must use this recipe's tokenizer) on "[tag] src <eos> tgt
    # <eos>" rows with the loss on the target only: the transfer route.
    arch: Literal["encoder-decoder", "decoder"] = "encoder-decoder"
    zh_tokens: Literal["bpe", "char"] = "bpe"  # char: each CJK character is its own token
    max_length: int = Field(64, ge=4)  # tokens per side, padded to this
    test_size: int = Field(1000, ge=1)  # held-out pairs, never trained on
    val_size: int = Field(500, ge=1)
    split_seed: int = 0
    # Train on this many training pairs only (whole leak-free groups, in seeded-hash order); the rest go
    # to train_unused.tsv, e.g. as monolingual text for a low-resource experiment. None: every pair.
    max_train_pairs: int | None = Field(None, ge=1)
    # Also write `lm_text/`: every sentence of the train split (both languages, used pairs or not), one
    # record each, to pretrain the decoder LM that arch: decoder fine-tunes; test and val never enter it.
    lm_text: bool = False
    # Training loss only (validation stays plain cross-entropy, so val_loss is comparable across runs).
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    decode: TranslateDecodeConfig = TranslateDecodeConfig()
    augment: TranslateAugmentConfig = TranslateAugmentConfig()

    @model_validator(mode="after")
    def _monolingual_is_a_target(self) -> TranslateConfig:
        # Back-translated rows translate into the monolingual language: a direction the model must train.
        targets = {d.split("-")[1] for d in self.directions}
        if self.augment.monolingual and self.augment.monolingual_lang not in targets:
            raise ValueError(f"augment.monolingual_lang {self.augment.monolingual_lang!r} is not the target of any "
                             f"of directions {self.directions}: back-translated pairs would train an untrained "
                             "direction")
        return self


class DistillConfig(Section):
    """`lmstack distill`: the recipe's model (the student) learns from a fine-tuned teacher's logits."""

    teacher: str  # a local exported model directory (same tokenizer as the recipe's data)
    temperature: float = Field(2.0, gt=0)
    # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard-label loss (Hinton et al. 2015)
    alpha: float = Field(0.5, ge=0, le=1)


class ClassifyConfig(Section):
    """Task `classify`: which fields hold the text and the labels, and how examples are cut."""

    # A field name, or several tried in order (the first present wins); a list of strings is joined.
    text_field: str | list[str] = "text"
    # "@dir": the label is the name of the folder holding the file (e.g. one folder per class).
    label_field: str = "label"
    extra_label_fields: list[str] = Field(default_factory=list)  # more heads for strategy multitask
    max_length: int = Field(128, ge=2)  # tokens per example (clipped to the pretrained model's context)
    class_weights: Literal["none", "balanced"] = "none"  # balanced: n / (classes * count) in the loss
    # Held out by a stable hash of the record id before the train/val (or k-fold) split.
    test_fraction: float = Field(0.0, ge=0, lt=1)
    max_per_class: int | None = Field(None, ge=1)  # deterministic subsample (lowest id hashes)
    # Also write `lm_text/`: the text of every record in the train split, labelled subsample or not, to
    # pretrain the LM that finetune.from_model loads (validation and test texts stay unseen); a char
    # tokenizer then covers its characters too.
    lm_text: bool = False


class LoraSettings(Section):
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | None = None  # default: attention projections of the family


class FinetuneConfig(Section):
    """`lmstack finetune`: how a pretrained lmstack model is transferred to the task."""

    strategy: Literal["full", "freeze", "lora", "features", "multitask", "tfidf", "bow"] = "full"
    from_model: str | None = None  # a local lmstack model directory (pretrained LM); None: from scratch
    freeze_layers: int = Field(0, ge=0)  # strategy freeze: the lowest k blocks (and the embeddings)
    freeze_embeddings: bool = True
    layer_lr_decay: float | None = Field(None, gt=0, le=1)  # lr x decay^(depth from the top)
    lora: LoraSettings = LoraSettings()
    classifier: Literal["svm", "logreg", "forest"] = "logreg"  # features / tfidf / bow
    pooling: Literal["mean", "last"] = "mean"  # features: how token states become one vector
    ngram_range: tuple[int, int] = (1, 2)  # tfidf / bow: character n-grams
    max_features: int = Field(50_000, ge=1)
    embed_batch_size: int = Field(64, ge=1)
    embed_actors: int | None = Field(None, ge=1)  # default: the cluster's CPUs, at most 4

    @model_validator(mode="after")
    def _strategy_needs(self) -> FinetuneConfig:
        if self.strategy in ("lora", "features") and not self.from_model:
            raise ValueError(f"strategy {self.strategy} needs from_model (a pretrained model directory)")
        if self.strategy == "freeze" and not self.freeze_layers and self.layer_lr_decay is None:
            raise ValueError("strategy freeze needs freeze_layers > 0 and/or layer_lr_decay")
        if self.ngram_range[0] > self.ngram_range[1] or self.ngram_range[0] < 1:
            raise ValueError(f"ngram_range {list(self.ngram_range)} must be [lo, hi] with 1 <= lo <= hi")
        return self


class Recipe(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    task: Literal["lm", "classify", "translate"] = "lm"
    run_dir: str | None = None  # default: runs/<name>
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    tune: TuneConfig | None = None
    classify: ClassifyConfig | None = None
    finetune: FinetuneConfig = FinetuneConfig()

    @model_validator(mode="after")
    def _task_sections(self) -> Recipe:
        if self.task == "classify" and self.classify is None:
            raise ValueError("task classify needs a classify section (text_field, label_field, ...)")
        if self.finetune.strategy == "multitask" and not (self.classify and self.classify.extra_label_fields):
            raise ValueError("strategy multitask needs classify.extra_label_fields")
        if self.classify and self.classify.lm_text and self.data.folds:
            raise ValueError("classify.lm_text needs a validation split: with data.folds every record "
                             "validates some fold, so no text is safe to pretrain on")
        return self
    distill: DistillConfig | None = None
    translate: TranslateConfig | None = None

    @model_validator(mode="after")
    def _task_section(self) -> Recipe:
        if self.task == "translate" and self.translate is None:
            raise ValueError("task 'translate' needs a translate: section")
        return self

    @model_validator(mode="after")
    def _cv_needs_folds(self) -> Recipe:
        if self.tune is not None and self.tune.cross_validation and self.data.folds is None:
            raise ValueError("tune.cross_validation needs data.folds (the number of folds)")
        return self

    def resolved_run_dir(self) -> str:
        return self.run_dir or os.path.join("runs", self.name)

    def data_dir(self) -> str:
        return self.data.output or _join(self.resolved_run_dir(), "data")

    def fingerprint(self, *sections: str) -> str:
        """A stable hash of the named sections (all of them when none are named)."""
        dumped = self.model_dump(mode="json")
        if sections:
            dumped = {k: dumped[k] for k in sections}
        blob = json.dumps(dumped, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, source: str = "<recipe>") -> str:
    """Replace ${VAR} and ${VAR:-default}; an unset VAR without a default is an error naming it."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                line = text.count("\n", 0, match.start()) + 1
                raise RecipeError(f"{source}:{line}: environment variable {name} is not set")
            return default
        return value

    return _ENV_REF.sub(sub, text)


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise RecipeError(f"override {item!r}: expected key=value, e.g. train.lr=3e-4")
    key, raw = item.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise RecipeError(f"override {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return keys, value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = _parse_override(item)
        node = raw
        for k in keys[:-1]:
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise RecipeError(f"override {item!r}: {k} is not a section")
            node = child
        node[keys[-1]] = value
    return raw


def format_validation_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "<root>"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {key}: {msg}{extra}"


def validate_recipe(raw: dict[str, Any], source: str = "<recipe>") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as err:
        raise RecipeError(format_validation_error(err, source)) from None


def load_recipe(path: str | os.PathLike[str], overrides: list[str] | None = None) -> Recipe:
    """Read, expand ${VAR}s, apply `a.b=value` overrides and validate. Errors name file and key."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise RecipeError(f"{source}: cannot read recipe: {err.strerror}") from None
    try:
        raw = yaml.safe_load(expand_env(text, source)) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        raise RecipeError(f"{source}{where}: not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{source}: a recipe is a mapping of sections")
    raw.setdefault("name", Path(path).stem)
    return validate_recipe(apply_overrides(raw, overrides or []), source)


def dump_recipe(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
