"""What a training run is given (TrainConfig) and what it gives back (Evaluation, Result). No heavy imports."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from emotion_core import variants

if TYPE_CHECKING:
    import numpy as np

# transformers' learning-rate schedules that need no lr_scheduler_kwargs and no metric (a run evaluates through its own
# callbacks, which the Trainer's ReduceLROnPlateau never sees).
SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "inverse_sqrt")


@dataclass
class TrainConfig:
    """One training run. Every field has a default, so a notebook can change only what it studies."""

    model: str = "gpt2"  # hub id or local folder of a model that AutoModelForSequenceClassification loads
    variant: str = "lora"  # a name in emotion_core.variants.REGISTRY
    learning_rate: float | None = None  # None: the variant's default_learning_rate
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0  # the share of the optimizer steps over which the learning rate rises from 0
    lr_scheduler_type: str = "linear"  # the learning rate's schedule after the warmup: one of SCHEDULERS
    # The variant's own parameters, by the names of its Params fields (lora_r, head_dropout, ...); the rest take
    # their defaults.
    variant_params: dict[str, Any] = field(default_factory=dict)
    epochs: float = 3.0
    batch_size: int = 32
    eval_batch_size: int | None = None  # None: 4 x batch_size on a GPU (evaluation holds no gradients), 2 x on a CPU
    # Validation evaluations per epoch, each one a point a pruner can act on: with 3 a pruned trial stops a third of an
    # epoch in, and more saved no more steps on the bench (docs/speed.md).
    evals_per_epoch: int = 3
    # Which evaluation the run keeps and reports: "best", the best of all (each on the whole validation split), with its
    # weights; or "last", one evaluation on the whole split at the end, the evaluations before it on a seeded subset of
    # pruning_eval_size sentences (cheaper, and not the maximum of several noisy numbers).
    keep: str = "best"
    pruning_eval_size: int | None = None
    seed: int = 0
    feature_cache: bool = True  # head variant: train on the frozen base's pooled features (emotion_core.features)
    compile: bool = False  # torch.compile the model (the compiled code is reused by later runs in the process)
    precision: str = "auto"  # auto | bf16 | fp32: frozen weights and autocast in bf16 where the machine has it natively
    verbose: bool = False  # show the Trainer's own progress bar and logs
    run_name: str | None = None  # what a tracker calls the run (the Trainer's run_name)

    def __post_init__(self) -> None:
        self.params()  # an unknown variant or parameter fails here, not an hour later
        if self.learning_rate is None:
            self.learning_rate = variants.get(self.variant).default_learning_rate
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', not {self.keep!r}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio!r}")
        if self.lr_scheduler_type not in SCHEDULERS:
            raise ValueError(f"lr_scheduler_type must be one of {', '.join(SCHEDULERS)}, not {self.lr_scheduler_type!r}")

    def params(self) -> variants.VariantParams:
        return variants.get(self.variant).params(self.variant_params)

    def resolved_eval_batch_size(self) -> int:
        from emotion_core.precision import use_gpu

        # On a CPU a bigger batch runs only a little faster per token but pads more: 2x the training batch costs what
        # 1x does there, and halves the per-batch overhead that dominates on tiny models.
        return self.eval_batch_size or (4 if use_gpu() else 2) * self.batch_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class Evaluation:
    """One validation evaluation during training."""

    step: int
    epoch: float
    accuracy: float
    loss: float


@dataclass
class Result:
    val_accuracy: float  # the best validation accuracy; its weights are the ones kept
    evaluations: list[Evaluation]
    trainable_params: int
    total_params: int
    peak_memory_mib: float | None  # what emotion_core.memory.PeakMemory counts; None where it cannot (peak_memory_note says why)
    peak_rss_mib: float
    train_seconds: float
    train_samples_per_second: float
    optimizer_steps: int
    n_train: int = 0  # training sentences, and validation ones: the budget the result was had on
    n_validation: int = 0
    setup_seconds: float = 0.0  # getting the model ready: a copy of the loaded base, or the head's features
    stopped_early: bool = False  # the on_eval callback asked to stop
    diverged: str | None = None  # why training was stopped as diverged (NaN or inf loss)
    test: dict | None = None  # classification_metrics on the test split, when asked for
    test_predictions: list[int] | None = None  # per test sentence, in the split's order (paired tests, bootstrap)
    saved_to: str | None = None
    weights_mib: float | None = None  # the model's weights and buffers (get_memory_footprint): 4-bit for qlora
    resumed_from_step: int = 0  # the checkpoint step this run continued from (0: from the start)
    peak_memory_note: str | None = None  # why peak_memory_mib is None
    # Per validation sentence, in the split's order: whether the evaluation behind val_accuracy got it right (paired
    # comparisons between runs); None when that evaluation did not cover the whole split.
    val_correct: np.ndarray | None = None

    @property
    def epoch_val_accuracy(self) -> list[float]:
        """The last validation accuracy within each epoch."""
        by_epoch: dict[int, float] = {}
        for evaluation in self.evaluations:
            by_epoch[max(0, math.ceil(evaluation.epoch - 1e-6) - 1)] = evaluation.accuracy
        return [by_epoch[k] for k in sorted(by_epoch)]

    def summary(self) -> dict:
        """The measured numbers, rounded for people: what a trial's attrs, a final report and a comparison row show."""

        def rounded(value, digits):
            return round(value, digits) if value is not None else None

        return {
            "val_accuracy": self.val_accuracy,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            # To the KiB: a head on cached features adds a fraction of a MiB, which 1 decimal would show as 0.
            "peak_memory_mib": rounded(self.peak_memory_mib, 3),
            **({"peak_memory_note": self.peak_memory_note} if self.peak_memory_note else {}),
            "peak_rss_mib": rounded(self.peak_rss_mib, 1),
            "weights_mib": rounded(self.weights_mib, 1),
            "train_seconds": round(self.train_seconds, 3),
            "train_samples_per_second": round(self.train_samples_per_second, 1),
            "optimizer_steps": self.optimizer_steps,
            "n_train": self.n_train,
            "n_validation": self.n_validation,
            "epoch_val_accuracy": [round(a, 4) for a in self.epoch_val_accuracy],
        }
