"""One trial: suggested parameters -> TrainConfig -> emotion_core's train, reporting each evaluation to the pruner and
recording what the trial is, measured and got right (study.records)."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Protocol

import numpy as np
import optuna

from emotion_core.cache import ModelCache
from emotion_core.data import TokenizedSplits, in_split_order
from emotion_core.training import Evaluation, Result, checkpoint, release_memory, train
from emotion_core.training.callbacks import evaluation_steps
from study import records
from study._backends.artifacts import Checkpoints
from study._errors import append_traceback, describe
from study._opened import OpenedStudy
from study._trackers import Trackers


class TrialFailed(RuntimeError):
    """A trial that failed for a reason stored in its Failure record; the study goes on."""


class TrialProgress(Protocol):
    """What shows a study's progress (study._show.progress.Progress): an Optuna callback after each trial, and hooks
    inside one."""

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None: ...

    def on_trial_eval(self, number: int, evaluation: Evaluation, epochs: float) -> None: ...

    def on_trial_step(self, number: int, step: int, total: int) -> None: ...

    def note(self, line: str) -> None: ...


class Objective:
    """Callable for ``study.optimize``. Holds the tokenized data and the process's ModelCache, so that tokenizing and
    reading the base happen once per process.

    Returns the validation accuracy, or (validation accuracy, peak memory MiB) with ``--objective accuracy,memory``.
    A multi-objective trial is not pruned (Optuna's pruners compare one value), nor is a baseline trial.
    """

    def __init__(self, opened: OpenedStudy, inputs: dict[str, tuple[object, TokenizedSplits]], progress: TrialProgress | None = None,
                 cache: ModelCache | None = None, trackers: Trackers | None = None, store_checkpoints: bool = True):
        self.opened = opened
        self.settings = opened.definition
        self.space = self.settings.space()
        self.inputs = inputs  # each searched model's tokenizer and tokenized data, by its label
        self.progress = progress  # study.run passes it to study.optimize as a callback too
        self.cache = cache or ModelCache()
        self.trackers = trackers  # where each trial's training curves also go (--report-to)
        self.store_checkpoints = store_checkpoints  # into the study's artifact store, for a retry on any machine

    def __call__(self, trial: optuna.Trial) -> float | tuple[float, float]:
        params = self.space.suggest(trial)
        tokenizer, data = self.inputs[params.get("model", self.settings.model_labels()[0])]
        config = self.settings.train_config(params, len(data.validation))
        start = records.TrialStart.read(trial)
        records.TrialStart(variant=config.variant, baseline=start.baseline).write(trial)
        stored = Checkpoints(self.opened.store, self.opened.study_id) if self.store_checkpoints else None
        local = self._working_copy(trial.number)
        retry = records.Retry.read(trial)
        self._continue(trial, retry, stored, local)
        with self.trackers.run(f"trial-{trial.number}") if self.trackers is not None else nullcontext() as tracked:
            result = self._train(trial, config, tokenizer, data, start.baseline, retry, stored, local, tracked.callbacks if tracked else ())
            value = self._value(trial, result, data)
            if tracked is not None:
                tracked.finish(trial.params, value if isinstance(value, float) else value[0], "FINISHED")
            return value

    def _train(self, trial: optuna.Trial, config, tokenizer, data: TokenizedSplits, baseline: bool, retry: records.Retry | None, stored: Checkpoints | None,
               local: Path, callbacks) -> Result:
        """Train the trial's config; clean up its checkpoints once done; a failure is recorded and raises TrialFailed."""
        failure = None
        try:
            result = train(config, data, tokenizer, self._on_eval(trial, config, baseline), on_step=self._on_step(trial),
                           cache=self.cache, checkpoint_dir=local, callbacks=callbacks,
                           on_checkpoint=(lambda folder: stored.save(trial, folder)) if stored is not None else None)
        except optuna.exceptions.UpdateFinishedTrialError:
            checkpoint.remove(local)  # another worker took the trial for dead and retries it from the stored checkpoint
            raise
        except Exception as error:  # the study goes on; the reason stays with the trial, the traceback in the log
            failure = describe(error, config.batch_size)
            self.log(f"trial {trial.number} failed: {failure}", error)
        # KeyboardInterrupt passes through above and keeps the checkpoints for the retry. Here the exception and the
        # frames it held (model, optimizer, activations) are gone, so their memory can be given back.
        done = [*(retry.history if retry else []), trial.number]  # a dead predecessor's checkpoints go too
        for number in done:
            checkpoint.remove(self._working_copy(number))
        if stored is not None:
            stored.remove(done, evaluation_steps(len(data.train), config))
        if failure is not None:
            release_memory()
            records.Failure(records.Outcome.FAILED, failure).write(trial)
            raise TrialFailed(failure)
        return result

    def log(self, title: str, error: BaseException) -> None:
        """The traceback into the study's errors.log; a log that cannot be written (a full disk) must not hide the
        error it was to hold, which the trial's record keeps."""
        try:
            append_traceback(self.settings.study_dir, title, error)
        except OSError:
            pass

    def _working_copy(self, number: int) -> Path:
        """This machine's folder for a trial's checkpoints (the artifact store holds the newest for every machine)."""
        return self.settings.study_dir / "checkpoints" / f"trial-{number}"

    def _continue(self, trial: optuna.Trial, retry: records.Retry | None, stored: Checkpoints | None, local: Path) -> None:
        """A retry starts from the newest checkpoint of the trial it continues, and says so; from step 0 when that
        checkpoint is missing or cannot be read (which is logged with its cause, and the broken archive removed)."""
        if retry is None:
            return
        pointer = records.Checkpoint.read(trial)
        try:
            step = stored.fetch(pointer, local) if stored is not None else None
            how = f"from step {step}" if step is not None else "from step 0 (no checkpoint of it in the artifact store)"
        except (tarfile.TarError, EOFError, OSError) as error:
            stored.discard(pointer)
            how = f"from step 0: its checkpoint {pointer.artifact_id} cannot be read ({describe(error)}), so it was removed"
            self.log(f"trial {trial.number}: checkpoint of trial {retry.of} unreadable", error)
        if self.progress is not None:
            self.progress.note(f"trial {trial.number} continues trial {retry.of} {how}")

    def _on_eval(self, trial: optuna.Trial, config, baseline: bool) -> Callable[[Evaluation], bool]:
        """Each evaluation: a progress line, and a report to the pruner, which may stop the trial; not at the last one,
        where there is nothing left to save, and never a baseline, which the study measures its gains against."""
        prune = not self.settings.multi_objective

        def on_eval(evaluation: Evaluation) -> bool:
            if self.progress is not None:
                self.progress.on_trial_eval(trial.number, evaluation, config.epochs)
            if not prune:
                return False
            trial.report(evaluation.accuracy, evaluation.step)
            return not baseline and evaluation.epoch < config.epochs - 1e-6 and trial.should_prune()

        return on_eval

    def _on_step(self, trial: optuna.Trial) -> Callable[[int, int], None] | None:
        if self.progress is None:
            return None
        return lambda step, total: self.progress.on_trial_step(trial.number, step, total)

    def _value(self, trial: optuna.Trial, result: Result, data: TokenizedSplits) -> float | tuple[float, float]:
        """The trial's value from its result; a diverged or stopped run is pruned."""
        records.TrialResult.from_summary(result.summary(), result.resumed_from_step).write(trial)
        if result.diverged:
            records.Failure(records.Outcome.DIVERGED, result.diverged).write(trial)
            raise optuna.TrialPruned(result.diverged)
        if result.stopped_early:
            last = result.evaluations[-1]
            raise optuna.TrialPruned(f"pruned at step {last.step} with val accuracy {last.accuracy:.4f}")
        if result.val_correct is not None:
            # One model: in the tokenized split's order under its key, as a study has always stored it. Several: in the
            # raw split's order under the sentences' key, so that the trials of every model pair up sentence by sentence.
            if len(self.inputs) == 1:
                correct, key = result.val_correct, data.key
            else:
                correct, key = np.asarray(in_split_order(result.val_correct, data.validation), dtype=bool), data.sentences
            records.Evidence(correct=correct, data=key).write(trial)
        if not self.settings.multi_objective:
            return result.val_accuracy
        memory = result.summary()["peak_memory_mib"]  # as stored in the record
        if memory is None:  # no number to put on the front: the trial fails, with the reason
            reason = f"peak memory not measured: {result.peak_memory_note}"
            records.Failure(records.Outcome.FAILED, reason).write(trial)
            raise TrialFailed(reason)
        return result.val_accuracy, memory
