"""The recipe: one YAML file, one pydantic model per section, validated before any Ray work."""

from __future__ import annotations

import hashlib
import json
import os
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one line naming the file and the key."""


class Unsupported(RecipeError):
    """A verb or option a task does not offer; the message names the task and the alternative."""


class Section(BaseModel):
    # allow_inf_nan: `lr: .inf` or `nan` is a typo, never a setting.
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), allow_inf_nan=False)


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

    @model_validator(mode="after")
    def _bounds_order(self) -> CleanConfig:
        if self.max_chars is not None and self.min_chars > self.max_chars:
            raise ValueError(f"min_chars ({self.min_chars}) must not exceed max_chars ({self.max_chars})")
        if (self.min_mean_word_length is not None and self.max_mean_word_length is not None
                and self.min_mean_word_length > self.max_mean_word_length):
            raise ValueError("min_mean_word_length must not exceed max_mean_word_length")
        return self


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
    # lmstack: the compact decoder of lmstack.models.gpt (SDPA, fused kernels, torch.compile-friendly; exports
    # the same transformers directory); hf: the transformers module itself.
    impl: Literal["lmstack", "hf"] = "hf"
    rope_theta: float = Field(10000.0, gt=0)  # llama: base of the rotary position frequencies

    @model_validator(mode="after")
    def _heads_divide(self) -> ModelConfig:
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ValueError(f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head})")
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
    seed: int = Field(1337, ge=0, lt=2**32)  # numpy's seeds are 32-bit
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
    compile: bool = False  # torch.compile the model (the first steps pay the compilation)
    activation_checkpointing: bool = False  # recompute each block's activations in backward: memory for time
    strategy: Literal["ddp", "fsdp"] = "ddp"  # fsdp: parameters, gradients and optimizer state sharded (FSDP2)
    # Run the loop in the calling process instead of a Ray Train worker group (one worker; data still read
    # through Ray Data): for notebooks, debuggers and tests whose subject is the task, not Ray Train.
    in_process: bool = False

    @model_validator(mode="after")
    def _lr_order(self) -> TrainConfig:
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if self.warmup_steps > self.max_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must not exceed max_steps ({self.max_steps})")
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
    metric: str | None = None  # default: the metric that picks the task's exported checkpoint
    mode: Literal["min", "max"] | None = None  # default: that metric's direction
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
        for key in self.space:
            check_key(key)
        return self


class DistillConfig(Section):
    """`lmstack distill`: the recipe's model (the student) learns from a fine-tuned teacher's logits."""

    teacher: str  # a local exported model directory (same tokenizer as the recipe's data)
    temperature: float = Field(2.0, gt=0)
    # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard-label loss (Hinton et al. 2015)
    alpha: float = Field(0.5, ge=0, le=1)


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


TRACKING_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "databricks")


class TrackingConfig(Section):
    """MLflow tracking of train, finetune, distill, tune and evaluate runs (`tracking: false` turns it off)."""

    enabled: bool = True
    """Log runs to MLflow; `tracking: false` in a recipe is short for `tracking: {enabled: false}`."""
    uri: str | None = None
    """The tracking store: a local directory, file://, sqlite:///, http(s):// (a team server) or databricks.
    Default: MLFLOW_TRACKING_URI, else <runs root>/mlruns (the directory above the run directory)."""
    experiment: str | None = None
    """The MLflow experiment runs go to. Default: the recipe's name."""
    log_model: bool = True
    """Upload the exported model directory as the run's `model` artifact (what `lmstack models register`
    points a model version at); off for very large models on a remote store."""

    @field_validator("uri")
    @classmethod
    def _known_scheme(cls, uri: str | None) -> str | None:
        if uri and "://" in uri and uri.split("://", 1)[0].split("+", 1)[0] not in TRACKING_SCHEMES:
            raise ValueError(f"unknown tracking store scheme in {uri!r}; use a directory or one of "
                             f"{', '.join(TRACKING_SCHEMES)}")
        return uri


@dataclass(frozen=True)
class TaskSection:
    """What a task adds to the recipe: its own section (a pydantic model) and cross-section checks.
    Task packages register theirs on import (lmstack.tasks), so this module names no task."""

    task: str
    key: str | None = None
    model: type[Section] | None = None
    required: bool = False
    check: Callable[[Recipe], None] | None = None
    # The data-section keys the task reads (None: all). Setting another one is refused rather than
    # silently ignored (e.g. data.clean for a task whose prepare does not clean).
    data_keys: tuple[str, ...] | None = None


TASKS: dict[str, TaskSection] = {}


def register_task(entry: TaskSection) -> None:
    TASKS[entry.task] = entry


def _section_owner(key: str) -> TaskSection | None:
    return next((t for t in TASKS.values() if t.key == key), None)


class SectionError(ValueError):
    """A task section's own validation error, kept with its dotted key for the one-line message."""

    def __init__(self, key: str, msg: str):
        super().__init__(f"{key}: {msg}")
        self.key, self.msg = key, msg


class Recipe(Section):
    # Task sections (classify:, translate:, ...) arrive as extra keys, validated by the task's model.
    model_config = ConfigDict(extra="allow", protected_namespaces=(), allow_inf_nan=False)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]*[A-Za-z0-9_-][A-Za-z0-9_.-]*$")  # not "." or ".."
    task: str = "lm"
    run_dir: str | None = None  # default: runs/<name>
    data: DataConfig
    tokenizer: TokenizerConfig = TokenizerConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    generate: GenerateConfig = GenerateConfig()
    tune: TuneConfig | None = None
    finetune: FinetuneConfig = FinetuneConfig()
    distill: DistillConfig | None = None
    tracking: TrackingConfig = TrackingConfig()

    @field_validator("tracking", mode="before")
    @classmethod
    def _tracking_switch(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value

    @model_validator(mode="before")
    @classmethod
    def _task_sections(cls, raw: Any) -> Any:
        if not isinstance(raw, dict):
            return raw
        task = raw.get("task", "lm")
        if task not in TASKS:
            raise SectionError("task", f"unknown task {task!r}; known: {sorted(TASKS)}")
        raw = dict(raw)
        for key in [k for k in raw if k not in cls.model_fields]:
            owner = _section_owner(key)
            if owner is None:
                raise SectionError(key, "unknown key")
            if raw[key] is None:
                del raw[key]
                continue
            if owner.task != task:
                raise SectionError(key, f"a section of task {owner.task!r}; this recipe's task is {task!r}")
            if not isinstance(raw[key], owner.model):
                try:
                    raw[key] = owner.model.model_validate(raw[key])
                except ValidationError as err:
                    first = err.errors()[0]
                    sub = ".".join(str(p) for p in first["loc"])
                    msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
                    raise SectionError(f"{key}.{sub}" if sub else key, msg) from None
        own = TASKS[task]
        if own.key and own.key not in raw:
            if own.required:
                raise SectionError(own.key, f"task {task!r} needs a {own.key}: section")
            raw[own.key] = own.model()
        return raw

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        if self.tune is not None and self.tune.cross_validation and self.data.folds is None:
            raise ValueError("tune.cross_validation needs data.folds (the number of folds)")
        own = TASKS[self.task]
        if own.data_keys is not None:
            for key, field in DataConfig.model_fields.items():
                if key not in own.data_keys and key not in ("paths", "output") and getattr(self.data, key) != (
                        field.default_factory() if field.default_factory else field.default):
                    raise SectionError(f"data.{key}", f"not used by task {self.task!r} (it reads data."
                                                      f"{', data.'.join(('paths', 'output', *own.data_keys))})")
        if own.check is not None:
            own.check(self)
        return self

    def __getattr__(self, item: str) -> Any:
        # A registered task section this recipe does not have reads as None (recipe.translate is None).
        try:
            return super().__getattr__(item)
        except AttributeError:
            if _section_owner(item) is not None:
                return None
            raise

    def section(self) -> Section | None:
        """The recipe's own task section (e.g. recipe.translate for task translate)."""
        key = TASKS[self.task].key
        return getattr(self, key) if key else None

    def resolved_run_dir(self) -> str:
        return self.run_dir or os.path.join("runs", self.name)

    def data_dir(self) -> str:
        return self.data.output or _join(self.resolved_run_dir(), "data")

    def fingerprint(self, *sections: str) -> str:
        """A stable hash of the named sections (all of them when none are named)."""
        dumped = self.model_dump(mode="json")
        dumped.pop("tracking", None)  # where a run is recorded does not change what it computes
        if sections:
            dumped = {k: dumped.get(k) for k in sections}
        blob = json.dumps(dumped, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# Data and tokenizer are prepared once for a whole search; a trial cannot change them.
FROZEN_SECTIONS = {"name", "task", "run_dir", "data", "tokenizer", "tune", "tracking"}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic section class behind `Section` or `Section | None`, else None."""
    candidates = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else (annotation,)
    for c in candidates:
        if isinstance(c, type) and issubclass(c, BaseModel):
            return c
    return None


def check_key(key: str) -> None:
    """Raise ValueError naming `key` unless it is a leaf field of the recipe that a tune trial may set."""
    parts = key.split(".")
    if parts[0] in FROZEN_SECTIONS:
        raise ValueError(f"{key}: cannot be searched (data and tokenizer are prepared once per search)")
    owner = _section_owner(parts[0])
    model: type[BaseModel] | None = Recipe
    for i, part in enumerate(parts):
        if i == 0 and owner is not None:
            sub: type[BaseModel] | None = owner.model
        elif model is None or part not in model.model_fields:
            raise ValueError(f"{key}: unknown recipe key")
        else:
            sub = _model_of(model.model_fields[part].annotation)
        if i == len(parts) - 1 and sub is not None and sub is not type(None):
            raise ValueError(f"{key}: is a section; search one of its keys")
        model = sub


def _join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts])


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def expand_env(text: str, source: str = "<recipe>") -> str:
    """Replace ${VAR} and ${VAR:-default} in one string value; an unset VAR without a default is an error."""

    def sub(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        value = os.environ.get(name)
        if value is None:
            if default is None:
                raise RecipeError(f"{source}: environment variable {name} is not set")
            return default
        return value

    return _ENV_REF.sub(sub, text)


class _RecipeLoader(yaml.SafeLoader):
    """YAML with two house rules: a key given twice is an error (YAML would keep the last silently), and
    ${VAR} is expanded inside string values after parsing, so an environment value can never add keys
    or change the document's structure, and ${VAR} in a comment is just a comment."""

    source = "<recipe>"

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise RecipeError(f"{self.source}:{line}: duplicate key {key!r} (first given on line {seen[key]})")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)

    def construct_env_str(self, node: yaml.ScalarNode) -> str:
        return expand_env(self.construct_scalar(node), f"{self.source}:{node.start_mark.line + 1}")


_RecipeLoader.add_constructor("tag:yaml.org,2002:str", _RecipeLoader.construct_env_str)


def parse_recipe_text(text: str, source: str = "<recipe>") -> Any:
    loader = _RecipeLoader(text)
    loader.source = source
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


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
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SectionError):
        key, msg = cause.key, cause.msg
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
    except UnicodeDecodeError as err:
        line = Path(path).read_bytes()[: err.start].count(b"\n") + 1
        raise RecipeError(f"{source}:{line}: not UTF-8 text ({err.reason})") from None
    try:
        raw = parse_recipe_text(text, source) or {}
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
