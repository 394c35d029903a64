"""What a study is run with. The CLI flags are generated from these fields, and their help is the field's metadata.
Light: importing it loads no ML library, so that ``--help`` answers at once."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from emotion_core import variants
from emotion_core.precision import PRECISIONS
from emotion_core.sources import local_path, looks_like_path
from emotion_core.training.config import TrainConfig
from study.errors import UsageError
from study.urls import is_sqlite, storage_key

# What a trial's value is: validation accuracy alone, or (accuracy, peak memory) for a Pareto front.
OBJECTIVES = {"accuracy": ("maximize",), "accuracy,memory": ("maximize", "minimize")}
METRIC_NAMES = {"accuracy": ("val_accuracy",), "accuracy,memory": ("val_accuracy", "peak_memory_mib")}  # shown by the dashboard
PRUNERS = ("median", "halving", "hyperband", "none")
SAMPLERS = ("tpe", "random")
# Counts that must be positive when given.
POSITIVE = ("trials", "epochs", "batch_size", "max_train_samples", "max_eval_samples", "timeout", "workers")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


def _variant_help() -> str:
    listed = "; ".join(f"{name}: {variant.summary}" for name, variant in variants.REGISTRY.items())
    return (f"what trains ({listed}); several, comma-separated (lora,qlora), make the variant a parameter of the search; "
            f"all = {','.join(variants.DEFAULT_SEARCH)}")


@dataclass
class StudySettings:
    trials: int = field(default=30, metadata=_help("total finished (complete + pruned) trials the study should hold; a rerun continues up to it"))
    model: str = field(default="gpt2", metadata=_help("hub id or local folder of the base model (AutoModelForSequenceClassification)"))
    tokenizer: str | None = field(default=None, metadata=_help("hub id or local folder of the tokenizer (default: the model's)"))
    data: str = field(default="dair-ai/emotion", metadata=_help("hub id, or a local folder with train/validation/test .txt/.csv/.jsonl/.parquet"))
    variant: str = field(default="lora", metadata=_help(_variant_help()))
    storage: str = field(default="sqlite:///storage/emotion.db", metadata=_help("Optuna storage: any SQLAlchemy URL (sqlite, postgresql, mysql+pymysql) or a .journal file"))
    study_name: str | None = field(default=None, metadata=_help("study name (default for study.run: <model>-<variant>)"))
    objective: str = field(
        default="accuracy",
        metadata=_help("accuracy: maximize val accuracy; accuracy,memory: also minimize peak training memory (a Pareto front, no pruning)",
                       choices=tuple(OBJECTIVES), metavar="accuracy|accuracy,memory"),
    )
    pruner: str = field(default="median", metadata=_help("early stopping of bad trials (median: the one that kept the best trial on the bench)", choices=PRUNERS))
    sampler: str = field(default="tpe", metadata=_help("how parameters are chosen", choices=SAMPLERS))
    seed: int = field(default=0, metadata=_help("seed of the sampler and of training"))
    epochs: float = field(default=3.0, metadata=_help("training epochs per trial"))
    batch_size: int = field(default=32, metadata=_help("training batch size"))
    max_train_samples: int | None = field(default=None, metadata=_help("train on a seeded subset of this many sentences (budget runs)"))
    max_eval_samples: int | None = field(default=None, metadata=_help("validate on a seeded subset of this many sentences (budget runs)"))
    timeout: float | None = field(default=None, metadata=_help("stop starting new trials after this many seconds"))
    workers: int = field(default=1, metadata=_help(
        "worker processes on this machine sharing the study (one per GPU where there are several); SQLite takes one "
        "writer, so use a journal file (--storage storage/emotion.journal) or PostgreSQL/MySQL, which also serve workers "
        "on several machines"))
    target_modules: list[str] | None = field(default=None, metadata=_help(
        "LoRA target modules, instead of searching lora_targets (attention: peft's defaults for the model type, or all-linear)", nargs="+"))
    compile: bool = field(default=False, metadata=_help("torch.compile the model (GPU; compiled once per process, reused by later trials)"))
    precision: str = field(default="auto", metadata=_help(
        "auto: frozen weights and autocast in bf16 where the machine computes in it natively (a GPU, or a CPU with AMX or "
        "AVX512-BF16), float32 elsewhere; bf16 or fp32 force one", choices=PRECISIONS))
    artifact_store: str | None = field(default=None, metadata=_help(
        "where what another machine may need goes (each trial's newest checkpoint, the final model, report and plots): a "
        "folder (a filesystem every machine mounts) or s3://bucket/prefix (the AWS_* variables name the endpoint and keys); "
        "default: the one the study was made with, else <output-dir>/<storage>/artifacts"))
    output_dir: str = field(default="storage", metadata=_help(
        "folder for this machine's outputs: <output-dir>/<storage>/<study>/ (final report, logs), caches"))
    verbose: bool = field(default=False, metadata=_help("show the Trainer's progress bars, library logs and the tracebacks of errors"))

    # Settings that change what a trial's value means: a stored study refuses a run that differs in any of them. The
    # model, tokenizer and data are compared by content (SOURCES: study.inputs.fingerprints), not by path, so that each
    # machine may keep them where it likes.
    IDENTITY = ("model", "tokenizer", "data", "variant", "epochs", "batch_size", "max_train_samples", "max_eval_samples", "target_modules",
                "objective")
    SOURCES = ("model", "tokenizer", "data")

    def check(self) -> None:
        """Refuse what cannot run, before anything is read or written."""
        for name in POSITIVE:
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise UsageError(f"--{name.replace('_', '-')} must be positive, got {value}")
        unknown = [v for v in self.searched_variants() if v not in variants.REGISTRY]
        if unknown or not self.searched_variants():
            raise UsageError(f"--variant {self.variant!r}: unknown {', '.join(map(repr, unknown)) or 'variant'}; "
                             f"choose from {', '.join(variants.names())}, several comma-separated, or all")
        if self.workers > 1 and is_sqlite(self.storage):
            raise UsageError(
                f"--workers {self.workers} needs storage that takes several writers, and SQLite takes one at a time "
                "(\"database is locked\"). On this machine use a journal file: --storage storage/emotion.journal; "
                "on one or several machines, PostgreSQL or MySQL: --storage postgresql://user@host/db or mysql+pymysql://user@host/db"
            )

    def searched_variants(self) -> tuple[str, ...]:
        """The variants the study trains: one, or several that the search chooses among."""
        if self.variant == "all":
            return variants.DEFAULT_SEARCH
        return tuple(v.strip() for v in self.variant.split(",") if v.strip())

    def fixed_params(self) -> dict[str, Any]:
        """Variant parameters set by a flag instead of searched."""
        return {"lora_targets": list(self.target_modules)} if self.target_modules else {}

    def resolved_study_name(self) -> str:
        if self.study_name:
            return self.study_name
        model = Path(self.model.rstrip("/")).name or self.model
        suffix = "-" + self.objective.replace(",", "-") if self.multi_objective else ""  # its trials' values mean another thing
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model}-{self.variant}{suffix}")

    def identity(self) -> dict:
        """The identity settings, local paths made absolute (another command, run elsewhere in the tree, finds them)."""
        values = asdict(self)
        for key in self.SOURCES:
            if values[key] is not None and looks_like_path(values[key]):
                values[key] = str(local_path(values[key]).resolve())
        return {key: values[key] for key in self.IDENTITY}

    def train_config(self, params: dict[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial: these settings plus the trial's (or a chosen trial's) parameters."""
        name = params.get("variant", self.searched_variants()[0])
        own = variants.get(name).own({**params, **self.fixed_params()})
        defaults = TrainConfig()
        return TrainConfig(
            model=self.model,
            variant=name,
            learning_rate=params.get("learning_rate", defaults.learning_rate),
            weight_decay=params.get("weight_decay", defaults.weight_decay),
            variant_params=own,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            compile=self.compile,
            precision=self.precision,
            verbose=self.verbose,
        )

    @property
    def directions(self) -> list[str]:
        return list(OBJECTIVES[self.objective])

    @property
    def metric_names(self) -> list[str]:
        return list(METRIC_NAMES[self.objective])

    @property
    def multi_objective(self) -> bool:
        return len(self.directions) > 1

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.model

    @property
    def home(self) -> Path:
        """This machine's folder for the storage's studies: one per storage, so same-named studies in two storages keep
        their outputs apart."""
        return Path(self.output_dir) / storage_key(self.storage)

    @property
    def study_dir(self) -> Path:
        return self.home / self.resolved_study_name()

    @property
    def artifact_location(self) -> str:
        """The artifact store: --artifact-store, else the storage's default folder (one per storage, so that one
        dashboard command serves every study's files)."""
        return self.artifact_store or str((self.home / "artifacts").resolve())

    @property
    def cache_dir(self) -> Path:
        return Path(self.output_dir) / "cache" / "tokenized"

    @property
    def fingerprint_cache(self) -> Path:
        return Path(self.output_dir) / "cache" / "fingerprints.json"
