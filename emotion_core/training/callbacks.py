"""The Trainer callbacks of a run: tracking (evaluate on schedule, record, keep the best weights), stopping
(divergence, or a pruner's say) and a step hook for progress displays. Checkpoints are in ``checkpoint.py``. Each callback writes only its own state; the
others read the tracker's record."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import TrainerCallback

from emotion_core.training.config import Evaluation, TrainConfig
from emotion_core.weights import trainable_state

OnEval = Callable[[Evaluation], bool | None]
OnStep = Callable[[int, int], None]  # (optimizer step, steps in the run)
OnPredict = Callable[[int, int], None]  # (batch, batches) of a validation or test pass


def evaluation_steps(n_train: int, config: TrainConfig) -> set[int]:
    """Optimizer steps after which to evaluate: evenly spaced within each epoch, always at an epoch's end, so that
    every trial of a study reports at the same steps (what a pruner compares)."""
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total = math.ceil(steps_per_epoch * config.epochs)
    per_epoch = max(1, min(config.evals_per_epoch, steps_per_epoch))
    steps = {round(k * steps_per_epoch / per_epoch) for k in range(1, math.ceil(config.epochs * per_epoch) + 1)}
    return {s for s in steps if s < total} | {total}


class Accuracy:
    """The Trainer's ``compute_metrics``: validation accuracy, and which rows it got right, kept for the Tracker."""

    def __init__(self):
        self.correct: np.ndarray | None = None

    def __call__(self, prediction) -> dict:
        self.correct = np.asarray(prediction.predictions).argmax(axis=-1) == np.asarray(prediction.label_ids)
        return {"accuracy": float(self.correct.mean()) if len(self.correct) else 0.0}


@dataclass
class TrainingRecord:
    """The evaluations so far and the kept one's weights and answers: what a run returns and a checkpoint keeps."""

    evaluations: list[Evaluation] = field(default_factory=list)
    best_accuracy: float = -1.0
    best_weights: dict[str, torch.Tensor] | None = None
    best_correct: np.ndarray | None = None  # per validation row, of the kept evaluation when it covered the whole split


class Tracker(TrainerCallback):
    """Evaluates (and logs the training loss) at the scheduled steps and records each evaluation. With ``keep="best"``
    it keeps the best evaluation's weights, which :meth:`restore_best` puts back at the end (the run is selected on
    validation); with ``keep="last"`` the last evaluation is the run's, and the weights are those training ended with."""

    def __init__(self, model: torch.nn.Module, eval_at: set[int], metric: Accuracy, full_size: int, keep: str = "best",
                 record: TrainingRecord | None = None, whole=None):
        self.model = model
        self.eval_at = eval_at
        self.metric = metric
        self.full_size = full_size  # rows of the whole validation split: an evaluation of fewer is a subset's
        self.keep = keep
        self.record = record or TrainingRecord()
        self.whole = whole  # the whole validation split, when the evaluations before the last use a subset
        self.trainer = None  # set once the Trainer exists: the last evaluation switches its eval_dataset to ``whole``

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.eval_at:
            control.should_log = control.should_evaluate = True
            if state.global_step >= state.max_steps and self.whole is not None and self.trainer is not None:
                self.trainer.eval_dataset = self.whole

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        evaluation = Evaluation(
            step=state.global_step,
            epoch=float(state.epoch or 0.0),
            accuracy=float(metrics["eval_accuracy"]),
            loss=float(metrics.get("eval_loss", float("nan"))),
        )
        self.record.evaluations.append(evaluation)
        if self.keep == "last" or evaluation.accuracy > self.record.best_accuracy:
            correct = self.metric.correct
            self.record.best_accuracy = evaluation.accuracy
            self.record.best_correct = correct if correct is not None and len(correct) == self.full_size else None
            if self.keep == "best":
                self.record.best_weights = trainable_state(self.model)

    def restore_best(self) -> None:
        if self.record.best_weights is not None:
            self.model.load_state_dict(self.record.best_weights, strict=False)


class Stopper(TrainerCallback):
    """Stops a run whose loss is no longer finite (diverged), or when ``on_eval`` says so after an evaluation (a
    pruner). Goes after the Tracker, whose newest evaluation it reads."""

    def __init__(self, record: TrainingRecord, on_eval: OnEval | None):
        self.record = record
        self.on_eval = on_eval
        self.diverged: str | None = None
        self.stopped_early = False

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            self.diverged = f"training loss became {loss} at step {state.global_step}"
            control.should_training_stop = True

    def on_evaluate(self, args, state, control, **kwargs):
        evaluation = self.record.evaluations[-1]
        if not math.isfinite(evaluation.loss):
            self.diverged = f"validation loss became {evaluation.loss} at step {evaluation.step}"
            control.should_training_stop = True
        if self.on_eval is not None and self.on_eval(evaluation):
            self.stopped_early = True
            control.should_training_stop = True


class StepHook(TrainerCallback):
    """Tells ``on_step`` each optimizer step and the run's total, and ``on_predict`` each batch of a validation or test
    pass and the pass's batches, for a progress display (a test pass of 2000 sentences takes minutes on a CPU)."""

    def __init__(self, on_step: OnStep | None, on_predict: OnPredict | None = None):
        self.on_step = on_step
        self.on_predict_batch = on_predict
        self._batch = 0

    def on_step_end(self, args, state, control, **kwargs):
        if self.on_step is not None:
            self.on_step(state.global_step, state.max_steps)

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs):
        if self.on_predict_batch is not None and eval_dataloader is not None:
            self._batch += 1
            self.on_predict_batch(self._batch, len(eval_dataloader))

    def on_evaluate(self, args, state, control, **kwargs):
        self._batch = 0

    def on_predict(self, args, state, control, **kwargs):
        self._batch = 0
