"""One trial: suggested parameters -> TrainConfig -> emotion_core.train, reporting each evaluation to the pruner."""

from __future__ import annotations

from typing import Protocol

import optuna

from emotion_core.data import TokenizedSplits
from emotion_core.train import Evaluation, Result, train
from study.settings import StudySettings
from study.space import suggest


def record_result(trial: optuna.Trial, result: Result) -> None:
    """What the dashboard and report show beside the value."""
    attrs = {
        "trainable_params": result.trainable_params,
        "total_params": result.total_params,
        "peak_memory_mib": round(result.peak_memory_mib, 1),
        "peak_rss_mib": round(result.peak_rss_mib, 1),
        "weights_mib": round(result.weights_mib, 1) if result.weights_mib is not None else None,
        "train_seconds": round(result.train_seconds, 2),
        "train_samples_per_second": round(result.train_samples_per_second, 1),
        "optimizer_steps": result.optimizer_steps,
        "epoch_val_accuracy": [round(a, 4) for a in result.epoch_val_accuracy],
    }
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


class TrialProgress(Protocol):
    """What shows a study's progress (study.progress.Progress): an Optuna callback after each trial, and a hook
    after each validation evaluation inside one."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...

    def on_trial_eval(self, number: int, evaluation: Evaluation, epochs: float) -> None: ...


class Objective:
    """Callable for ``study.optimize``. Holds the tokenized data, so that tokenization happens once per process.

    Returns the validation accuracy, or (validation accuracy, peak memory MiB) with ``--objective accuracy,memory``.
    A multi-objective trial is not pruned: Optuna's pruners compare one value.
    """

    def __init__(self, settings: StudySettings, data: TokenizedSplits, tokenizer, progress: TrialProgress | None = None):
        self.settings = settings
        self.data = data
        self.tokenizer = tokenizer
        self.progress = progress  # study.run passes it to study.optimize as a callback too

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = suggest(trial, self.settings.variant)
        config = self.settings.train_config(params)
        trial.set_user_attr("variant", config.variant)
        prune = not self.settings.multi_objective

        def on_eval(evaluation: Evaluation) -> bool:
            if self.progress is not None:
                self.progress.on_trial_eval(trial.number, evaluation, config.epochs)
            if not prune:
                return False
            trial.report(evaluation.accuracy, evaluation.step)
            return trial.should_prune()

        try:
            result = train(config, self.data, self.tokenizer, on_eval)
        except Exception as error:  # the study goes on; the reason stays with the trial
            trial.set_user_attr("fail_reason", f"{type(error).__name__}: {str(error)[:300]}")
            raise
        record_result(trial, result)
        if result.diverged:
            trial.set_user_attr("fail_reason", result.diverged)
            raise optuna.TrialPruned(result.diverged)
        if result.stopped_early:
            last = result.evaluations[-1]
            raise optuna.TrialPruned(f"pruned at step {last.step} with val accuracy {last.accuracy:.4f}")
        if self.settings.multi_objective:
            return result.val_accuracy, round(result.peak_memory_mib, 1)
        return result.val_accuracy
