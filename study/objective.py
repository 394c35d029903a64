"""One trial: suggested parameters -> TrainConfig -> emotion_core's train, reporting each evaluation to the pruner."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import optuna
from optuna.storages import RetryHeartbeatStaleTrialCallback

from emotion_core.cache import ModelCache
from emotion_core.data import TokenizedSplits
from emotion_core.training import Evaluation, Result, checkpoint, release_memory, train
from emotion_core.training.callbacks import evaluation_steps
from study.artifacts import Checkpoints
from study.errors import append_traceback, describe
from study.settings import StudySettings
from study.space import suggest


class TrialFailed(RuntimeError):
    """A trial that failed for a reason stored as its fail_reason user attr; the study goes on."""


def record_result(trial: optuna.Trial, result: Result) -> None:
    """What the dashboard and report show beside the value."""
    attrs = {k: v for k, v in result.summary().items() if k != "val_accuracy"}
    if result.resumed_from_step:
        attrs["resumed_from_step"] = result.resumed_from_step
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def retry_history(trial: optuna.trial.FrozenTrial) -> list[int]:
    """The trials this one continues, oldest first (after their processes died or were interrupted)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback.retry_history(trial)


class TrialProgress(Protocol):
    """What shows a study's progress (study.progress.Progress): an Optuna callback after each trial, and a hook
    after each validation evaluation inside one."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...

    def on_trial_eval(self, number: int, evaluation: Evaluation, epochs: float) -> None: ...

    def on_trial_step(self, number: int, step: int, total: int) -> None: ...

    def note(self, line: str) -> None: ...


class Objective:
    """Callable for ``study.optimize``. Holds the tokenized data and the process's ModelCache, so that tokenizing and
    reading the base happen once per process.

    Returns the validation accuracy, or (validation accuracy, peak memory MiB) with ``--objective accuracy,memory``.
    A multi-objective trial is not pruned: Optuna's pruners compare one value.
    """

    def __init__(self, settings: StudySettings, data: TokenizedSplits, tokenizer, progress: TrialProgress | None = None,
                 cache: ModelCache | None = None, store=None):
        self.settings = settings
        self.data = data
        self.tokenizer = tokenizer
        self.progress = progress  # study.run passes it to study.optimize as a callback too
        self.cache = cache or ModelCache()
        self.store = store  # the artifact store (study.artifacts) that keeps checkpoints for every machine

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        config = self.settings.train_config(suggest(trial, self.settings))
        trial.set_user_attr("variant", config.variant)
        frozen = trial.study._storage.get_trial(trial._trial_id)
        stored = Checkpoints(self.store, trial.study) if self.store is not None else None
        local = self._working_copy(trial.number)
        self._continue(trial, frozen, stored, local)
        failure = None
        try:
            result = train(config, self.data, self.tokenizer, self._on_eval(trial, config), on_step=self._on_step(trial), cache=self.cache,
                           checkpoint_dir=local, on_checkpoint=(lambda folder: stored.save(trial, folder)) if stored is not None else None)
        except optuna.exceptions.UpdateFinishedTrialError:
            checkpoint.remove(local)  # another worker took the trial for dead and retries it from the stored checkpoint
            raise
        except Exception as error:  # the study goes on; the reason stays with the trial, the traceback in the log
            failure = describe(error, config.batch_size)
            append_traceback(self.settings.study_dir, f"trial {trial.number} failed: {failure}", error)
        # KeyboardInterrupt passes through above and keeps the checkpoints for the retry. Here the exception and the
        # frames it held (model, optimizer, activations) are gone, so their memory can be given back.
        done = [*retry_history(frozen), trial.number]  # a dead predecessor's checkpoints go too
        for number in done:
            checkpoint.remove(self._working_copy(number))
        if stored is not None:
            stored.remove(done, evaluation_steps(len(self.data.train), config))
        if failure is not None:
            release_memory()
            trial.set_user_attr("fail_reason", failure)
            raise TrialFailed(failure)
        return self._value(trial, result)

    def _working_copy(self, number: int) -> Path:
        """This machine's folder for a trial's checkpoints (the artifact store holds the newest for every machine)."""
        return self.settings.study_dir / "checkpoints" / f"trial-{number}"

    def _continue(self, trial: optuna.Trial, frozen: optuna.trial.FrozenTrial, stored: Checkpoints | None, local: Path) -> None:
        """A retry starts from the newest checkpoint of the trial it continues, and says so."""
        origin = (retry_history(frozen) or [None])[-1]
        if origin is None:
            return
        trial.set_user_attr("retry_of", origin)
        step = stored.fetch(frozen, local) if stored is not None else None
        if self.progress is not None:
            self.progress.note(f"trial {trial.number} continues trial {origin} " + (
                f"from step {step}" if step is not None else "from the start (no checkpoint of it in the artifact store)"))

    def _on_eval(self, trial: optuna.Trial, config) -> Callable[[Evaluation], bool]:
        """Each evaluation: a progress line, and a report to the pruner, which may stop the trial; not at the last one,
        where there is nothing left to save (a 30-trial SmolLM2 study had a trial pruned there, fully trained)."""
        prune = not self.settings.multi_objective

        def on_eval(evaluation: Evaluation) -> bool:
            if self.progress is not None:
                self.progress.on_trial_eval(trial.number, evaluation, config.epochs)
            if not prune:
                return False
            trial.report(evaluation.accuracy, evaluation.step)
            return evaluation.epoch < config.epochs - 1e-6 and trial.should_prune()

        return on_eval

    def _on_step(self, trial: optuna.Trial) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        return lambda step, total: self.progress.on_trial_step(trial.number, step, total)

    def _value(self, trial: optuna.Trial, result: Result) -> float | tuple[float, float]:
        """The trial's value from its result; a diverged or stopped run is pruned."""
        record_result(trial, result)
        if result.diverged:
            trial.set_user_attr("fail_reason", result.diverged)
            raise optuna.TrialPruned(result.diverged)
        if result.stopped_early:
            last = result.evaluations[-1]
            raise optuna.TrialPruned(f"pruned at step {last.step} with val accuracy {last.accuracy:.4f}")
        if not self.settings.multi_objective:
            return result.val_accuracy
        memory = result.summary()["peak_memory_mib"]  # as stored in the user attr
        if memory is None:  # no number to put on the front: the trial fails, with the reason
            reason = f"peak memory not measured: {result.peak_memory_note}"
            trial.set_user_attr("fail_reason", reason)
            raise TrialFailed(reason)
        return result.val_accuracy, memory
