"""What a study is run with. The CLI flags are generated from these fields, and their help is the field's metadata."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from emotion_core.train import TrainConfig
from emotion_core.variants import PRECISIONS, VARIANTS

VARIANT_CHOICES = (*VARIANTS, "all")
# What a trial's value is: validation accuracy alone, or (accuracy, peak memory) for a Pareto front.
OBJECTIVES = {"accuracy": ("maximize",), "accuracy,memory": ("maximize", "minimize")}
METRIC_NAMES = {"accuracy": ("val_accuracy",), "accuracy,memory": ("val_accuracy", "peak_memory_mib")}  # shown by the dashboard
# "all" searches these: the seed's three; the full fine-tune is opt-in with --variant full.
ALL_VARIANTS = ("head", "lora", "qlora")


def _help(text: str, **extra) -> dict:
    return {"help": text, **extra}


@dataclass
class StudySettings:
    trials: int = field(default=30, metadata=_help("total finished (complete + pruned) trials the study should hold; a rerun continues up to it"))
    model: str = field(default="gpt2", metadata=_help("hub id or local folder of the base model (AutoModelForSequenceClassification)"))
    tokenizer: str | None = field(default=None, metadata=_help("hub id or local folder of the tokenizer (default: the model's)"))
    data: str = field(default="dair-ai/emotion", metadata=_help("hub id, or a local folder with train/validation/test .txt/.csv/.jsonl/.parquet"))
    variant: str = field(default="lora", metadata=_help("what trains: head, lora, qlora, full, or all (searches head/lora/qlora)", choices=VARIANT_CHOICES))
    storage: str = field(default="sqlite:///storage/emotion.db", metadata=_help("Optuna storage: any SQLAlchemy URL (sqlite, postgresql, mysql+pymysql)"))
    study_name: str | None = field(default=None, metadata=_help("study name (default: derived from model, variant and objective)"))
    objective: str = field(
        default="accuracy",
        metadata=_help("accuracy: maximize val accuracy; accuracy,memory: also minimize peak training memory (a Pareto front, no pruning)",
                       choices=tuple(OBJECTIVES)),
    )
    pruner: str = field(default="median", metadata=_help("early stopping of bad trials (median: the one that kept the best trial on the bench)", choices=("halving", "median", "hyperband", "none")))
    sampler: str = field(default="tpe", metadata=_help("how parameters are chosen", choices=("tpe", "random")))
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
    target_modules: list[str] | None = field(default=None, metadata=_help("LoRA target modules (default: peft's for the model type)", nargs="+"))
    compile: bool = field(default=False, metadata=_help("torch.compile the model (GPU; compiled once per process, reused by later trials)"))
    precision: str = field(default="auto", metadata=_help(
        "auto: frozen weights and autocast in bf16 where the machine computes in it natively (a GPU, or a CPU with AMX or "
        "AVX512-BF16), float32 elsewhere; bf16 or fp32 force one", choices=PRECISIONS))
    output_dir: str = field(default="storage", metadata=_help("folder for caches and each study's outputs (<output-dir>/<study>/...)"))
    verbose: bool = field(default=False, metadata=_help("show the Trainer's progress bars and library logs"))

    # Settings that change what a trial's value means: a stored study refuses a run that differs in any of them.
    IDENTITY = ("model", "tokenizer", "data", "variant", "epochs", "batch_size", "max_train_samples", "max_eval_samples", "target_modules",
                "objective")

    def resolved_study_name(self) -> str:
        if self.study_name:
            return self.study_name
        model = Path(self.model.rstrip("/")).name or self.model
        suffix = "-" + self.objective.replace(",", "-") if self.multi_objective else ""  # its trials' values mean another thing
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model}-{self.variant}{suffix}")

    def identity(self) -> dict:
        values = asdict(self)
        return {key: values[key] for key in self.IDENTITY}

    def train_config(self, params: dict) -> TrainConfig:
        """The TrainConfig of one trial: these settings plus the trial's (or best trial's) parameters."""
        variant = params.get("variant", self.variant)
        known = {f.name for f in fields(TrainConfig)}
        return TrainConfig(
            model=self.model,
            variant=variant,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            target_modules=self.target_modules,
            compile=self.compile,
            precision=self.precision,
            verbose=self.verbose,
            **{k: v for k, v in params.items() if k in known and k != "variant"},
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
    def artifact_dir(self) -> Path:
        """Optuna's artifact store of the study (optuna-dashboard --artifact-dir)."""
        return self.study_dir / "artifacts"

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer or self.model

    @property
    def study_dir(self) -> Path:
        return Path(self.output_dir) / self.resolved_study_name()

    @property
    def cache_dir(self) -> Path:
        return Path(self.output_dir) / "cache" / "tokenized"
