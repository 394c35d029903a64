"""What run shows while it works: a bar over trials (on a terminal), a line per finished trial and per epoch; and
what final and compare show while they retrain."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from emotion_core.training import Evaluation
from study import records
from study._show.text import format_mib, params_text
from study.records import Outcome


def outcome_counts(study: optuna.Study, trials: Sequence[optuna.trial.FrozenTrial] | None = None) -> dict[str, int]:
    """Trials per outcome (records.Outcome), in the enum's order; outcomes without trials are left out. Interrupted
    trials and those whose process died are counted apart from failed ones: they were retried. ``trials``: the
    study's, when they were read already."""
    counts = Counter(records.outcome(trial) for trial in (study.get_trials(deepcopy=False) if trials is None else trials))
    return {kind.value: int(counts[kind]) for kind in Outcome if counts[kind]}


def best_text(study: optuna.Study) -> str:
    """The best value so far; for a multi-objective study the Pareto front's size and its best accuracy."""
    if len(study.directions) > 1:
        front = study.best_trials
        return f"front={len(front)} best_acc={max(t.values[0] for t in front):.4f}" if front else "front=0"
    try:
        return f"best={study.best_value:.4f}"
    except ValueError:
        return "best=-"


def values_text(trial: optuna.trial.FrozenTrial, evaluation: str = "subset") -> str:
    """The trial's value, and what it is: with the ``full`` evaluation scheme the best of its evaluations, with
    ``subset`` its last, on the whole split (a pruned trial's: its last report)."""
    if trial.values is None:
        return "val_acc=-"
    evaluations = len(trial.intermediate_values)
    which = "last of" if trial.state == TrialState.PRUNED or evaluation == "subset" else "best of"
    text = f"val_acc={trial.values[0]:.4f}" + (f" ({which} {evaluations} evals)" if evaluations else "")
    return text + (f" mem={format_mib(trial.values[1])}MiB" if len(trial.values) > 1 else "")








def time_left(elapsed: float, done: int, left: int) -> str:
    """The time the left units take at the rate of the done ones, as "12:38 left" (minutes:seconds, as tqdm writes it)."""
    return f"{tqdm.format_interval(elapsed / done * left)} left" if done > 0 else "time left unknown"


class Progress:
    """An Optuna callback (one call per finished trial) and an evaluation hook (per-epoch lines inside a trial).

    On a terminal a tqdm bar counts finished trials, with complete/pruned/failed counts, the best value and tqdm's
    ETA. Elsewhere (a log file, nohup, a test) the bar is off and each trial's line carries the same numbers; so it is
    with ``bar=False``, for worker processes whose output interleaves.
    """

    def __init__(self, study: optuna.Study, total: int, *, file=None, bar: bool = True, every_s: float = 30.0, evaluation: str = "subset"):
        self.total = total
        self.evaluation = evaluation  # what a trial's value is (values_text)
        self.file = file or sys.stdout
        self.every_s = every_s
        self._name = study.study_name
        self._said = time.monotonic()
        finished = self._finished(outcome_counts(study))
        self._initial = finished
        self._started = time.monotonic()
        # disable=None: tqdm turns itself off when stderr is not a terminal.
        self.bar = tqdm(
            total=total, initial=min(finished, total), desc=study.study_name, unit="trial", disable=None if bar else True, dynamic_ncols=True
        )
        self._postfix(study)

    @staticmethod
    def _finished(counts: dict[str, int]) -> int:
        return sum(counts.get(kind.value, 0) for kind in (Outcome.COMPLETE, Outcome.PRUNED, Outcome.DIVERGED))

    def write(self, line: str) -> None:
        """A line above the bar (or a plain line without one)."""
        tqdm.write(line, file=self.file)
        self.file.flush()

    def _postfix(self, study: optuna.Study) -> str:
        counts = outcome_counts(study)
        more = "".join(f" {kind}={counts[kind]}" for kind in ("diverged", "interrupted", "died") if counts.get(kind))
        text = (f"complete={counts.get('complete', 0)} pruned={counts.get('pruned', 0)} failed={counts.get('failed', 0)}{more} "
                f"{best_text(study)}")
        self.bar.set_postfix_str(text, refresh=False)
        return text

    def time_left_tail(self, finished: int) -> str:
        """The time the study's trials left take, as a line's tail ('; 12:38 left'); nothing once none is left."""
        left = self.total - finished
        return f"; {time_left(time.monotonic() - self._started, finished - self._initial, left)}" if left > 0 else ""

    def note(self, line: str) -> None:
        self.write(line)

    def on_trial_step(self, number: int, step: int, total: int) -> None:
        """Inside a trial: its step on the bar's description, or a line every self.every_s seconds without a bar."""
        now = time.monotonic()
        if not self.bar.disable:
            refresh = now - self._said >= 0.5
            self.bar.set_description_str(f"{self._name} (trial {number}: step {step}/{total})", refresh=refresh)
            if refresh:
                self._said = now
        elif now - self._said >= self.every_s:
            self._said = now
            self.write(f"  trial {number:>3} step {step}/{total} ({step / max(total, 1):.0%})")

    def on_trial_eval(self, number: int, evaluation: Evaluation, epochs: float) -> None:
        """One compact line at the end of each epoch (evaluations also come mid-epoch; they feed the pruner only)."""
        epoch = evaluation.epoch
        if abs(epoch - round(epoch)) > 1e-3 and epoch < epochs - 1e-3:
            return
        self.write(f"  trial {number:>3} epoch {epoch:g}/{epochs:g} val_acc={evaluation.accuracy:.4f} val_loss={evaluation.loss:.4f}")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        postfix = self._postfix(study)
        finished = self._finished(outcome_counts(study))
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        reason = records.fail_reason(trial)
        kind = records.outcome(trial).value.upper() + (" (baseline)" if records.TrialStart.read(trial).baseline else "")
        line = f"trial {trial.number:>3} {kind:<8} {values_text(trial, self.evaluation)} {seconds:6.1f}s {params_text(trial.params)}"
        if reason:
            line += f" ({reason})"
        if self.bar.disable:  # no bar to carry the counts: the line does
            line += f" [{finished}/{self.total} finished; {postfix}{self.time_left_tail(finished)}]"
        self.write(line)
        if not self.bar.disable:
            self.bar.set_description_str(self._name, refresh=False)
        self.bar.update(max(0, min(finished, self.total) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


class RunProgress:
    """The progress of one training run (a final retraining, a compare row) and of its test pass: on a terminal a bar
    over its optimizer steps with the last validation accuracy (tqdm's ETA), and the test pass's batch and ETA beside
    it; elsewhere a line every ``every_s`` seconds with the step, the epoch and the ETA, and one per evaluation. A run
    that continues from a checkpoint counts its ETA from the steps it trains. Pass ``on_step``, ``on_eval`` and
    ``on_predict`` to emotion_core's train, and ``on_test`` to a test pass."""

    def __init__(self, label: str, *, file=None, every_s: float = 30.0, bar: bool = True, epochs: float | None = None):
        self.label = label
        self.file = file or sys.stdout
        self.every_s = every_s
        self.epochs = epochs  # the run's, to say which epoch a step is in
        self.bar = tqdm(desc=label, unit="step", disable=None if bar else True, dynamic_ncols=True, leave=False)
        self._started = self._said = time.monotonic()
        self._total = 0
        self._first: int | None = None  # the first step this process saw, and when (a resumed run starts past 1)
        self._trained = False  # the last step's validation is done: a prediction pass now is the test
        self._pass_started = self._started

    def on_step(self, step: int, total: int) -> None:
        now = time.monotonic()
        if self._first is None:  # the rate counts the steps trained here (not a resumed run's earlier ones, nor loading)
            self._first, self._started = step, now
            if not self.bar.disable:
                self.bar.reset(total=total)
                self.bar.n = self.bar.last_print_n = self.bar.initial = step
        self._total = total
        if self.bar.total != total:
            self.bar.reset(total=total)
        self.bar.update(step - self.bar.n)
        if self.bar.disable and now - self._said >= self.every_s:
            self._said = now
            elapsed = now - self._started
            epoch = f", epoch {step / max(total, 1) * self.epochs:.2f}/{self.epochs:g}" if self.epochs else ""
            self._line(f"step {step}/{total} ({step / max(total, 1):.0%}{epoch}), {tqdm.format_interval(elapsed)} elapsed, "
                       f"{time_left(elapsed, step - self._first, total - step)}")

    def on_eval(self, evaluation: Evaluation) -> None:
        self._trained = evaluation.step >= self._total
        text = f"epoch {evaluation.epoch:.2f} val_acc={evaluation.accuracy:.4f}"
        if self.bar.disable:
            self._line(f"step {evaluation.step}: {text}")
        else:
            self.bar.set_postfix_str(text)

    def on_predict(self, batch: int, batches: int) -> None:
        """A validation pass during training; the test pass once all steps are done (minutes on a CPU: said at once,
        then with its ETA)."""
        now = time.monotonic()
        if batch == 1:
            self._pass_started = now
        text = f"{'testing' if self._trained else 'validating'}: batch {batch}/{batches}"
        if self._trained and batch > 1:
            text += f", {time_left(now - self._pass_started, batch - 1, batches - batch)}"
        if not self.bar.disable:
            self.bar.set_postfix_str(text)
        elif (self._trained and batch == 1) or now - self._said >= self.every_s:
            self._said = now
            self._line(text)

    def on_test(self, batch: int, batches: int) -> None:
        """A batch of the test pass (minutes on a CPU: its start is said at once)."""
        self._trained = True
        self.on_predict(batch, batches)

    def _line(self, text: str) -> None:
        tqdm.write(f"  {self.label}: {text}", file=self.file)
        self.file.flush()

    def close(self) -> None:
        self.bar.close()
