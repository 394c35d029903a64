"""What study.run shows while it works: a bar over trials (on a terminal), a line per finished trial and per epoch."""

from __future__ import annotations

import sys
import time
from collections import Counter

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from emotion_core.training import Evaluation

# A failed trial is one of these when its fail_reason says so (study.liveness, study.trials): it was retried, not lost.
FAIL_KINDS = {"interrupted": "interrupted (Ctrl-C", "died": "taken for dead", "surplus": "not needed"}


def outcome(trial: optuna.trial.FrozenTrial) -> str:
    """complete, pruned, failed, running, waiting; or interrupted / died (retried elsewhere) / surplus for a failed trial."""
    if trial.state != TrialState.FAIL:
        return trial.state.name.lower()
    reason = str(trial.user_attrs.get("fail_reason", ""))
    return next((kind for kind, mark in FAIL_KINDS.items() if mark in reason), "failed")


def state_counts(study: optuna.Study) -> dict[str, int]:
    """Trials per outcome (see outcome), in a fixed order; outcomes without trials are left out. Trials that were
    interrupted or whose process died are counted apart from failed ones: they were retried."""
    counts = Counter(outcome(trial) for trial in study.get_trials(deepcopy=False))
    order = ("complete", "pruned", "failed", "interrupted", "died", "surplus", "running", "waiting")
    return {kind: int(counts[kind]) for kind in order if kind in counts}


def best_text(study: optuna.Study) -> str:
    """The best value so far; for a multi-objective study the Pareto front's size and its best accuracy."""
    if len(study.directions) > 1:
        front = study.best_trials
        return f"front={len(front)} best_acc={max(t.values[0] for t in front):.4f}" if front else "front=0"
    try:
        return f"best={study.best_value:.4f}"
    except ValueError:
        return "best=-"


def values_text(trial: optuna.trial.FrozenTrial) -> str:
    """The trial's value, and what it is: the best of its evaluations (a pruned trial's: its last)."""
    if trial.values is None:
        return "val_acc=-"
    evaluations = len(trial.intermediate_values)
    which = "last of" if trial.state == TrialState.PRUNED else "best of"
    text = f"val_acc={trial.values[0]:.4f}" + (f" ({which} {evaluations} evals)" if evaluations else "")
    return text + (f" mem={format_mib(trial.values[1])}MiB" if len(trial.values) > 1 else "")


def format_mib(value: float | None) -> str:
    """A memory figure for people: whole MiB from 100 on, else three significant digits (a head's 0.146, not 0)."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"


def interval_text(interval: dict, key: str = "test_accuracy") -> str:
    """0.6370 ± 0.0120 (95% interval 0.6155-0.6580), or without ± for one seed."""
    low, high = interval[f"{key}_ci95"]
    spread = f" ± {interval[f'{key}_std']:.4f}" if len(interval["test_accuracy_per_seed"]) > 1 else ""
    return f"{interval[key]:.4f}{spread} (95% interval {low:.4f}-{high:.4f})"


def params_text(params: dict) -> str:
    """Parameters for a line: three significant digits are enough to tell trials apart."""
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class Progress:
    """An Optuna callback (one call per finished trial) and an evaluation hook (per-epoch lines inside a trial).

    On a terminal a tqdm bar counts finished trials, with complete/pruned/failed counts, the best value and tqdm's
    ETA. Elsewhere (a log file, nohup, a test) the bar is off and each trial's line carries the same numbers; so it is
    with ``bar=False``, for worker processes whose output interleaves.
    """

    def __init__(self, study: optuna.Study, total: int, *, file=None, bar: bool = True, every_s: float = 30.0):
        self.total = total
        self.file = file or sys.stdout
        self.every_s = every_s
        self._name = study.study_name
        self._said = time.monotonic()
        finished = self._finished(state_counts(study))
        self._initial = finished
        self._started = time.monotonic()
        # disable=None: tqdm turns itself off when stderr is not a terminal.
        self.bar = tqdm(
            total=total, initial=min(finished, total), desc=study.study_name, unit="trial", disable=None if bar else True, dynamic_ncols=True
        )
        self._postfix(study)

    @staticmethod
    def _finished(counts: dict[str, int]) -> int:
        return counts.get("complete", 0) + counts.get("pruned", 0)

    def write(self, line: str) -> None:
        """A line above the bar (or a plain line without one)."""
        tqdm.write(line, file=self.file)
        self.file.flush()

    def _postfix(self, study: optuna.Study) -> str:
        counts = state_counts(study)
        retried = "".join(f" {kind}={counts[kind]}" for kind in ("interrupted", "died") if counts.get(kind))
        text = (f"complete={counts.get('complete', 0)} pruned={counts.get('pruned', 0)} failed={counts.get('failed', 0)}{retried} "
                f"{best_text(study)}")
        self.bar.set_postfix_str(text, refresh=False)
        return text

    def eta(self, finished: int) -> str:
        done = finished - self._initial
        if done <= 0 or finished >= self.total:
            return "-"
        return tqdm.format_interval((time.monotonic() - self._started) / done * (self.total - finished))

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
        finished = self._finished(state_counts(study))
        seconds = trial.duration.total_seconds() if trial.duration else 0.0
        reason = trial.user_attrs.get("fail_reason", "")
        line = f"trial {trial.number:>3} {outcome(trial).upper():<8} {values_text(trial)} {seconds:6.1f}s {params_text(trial.params)}"
        if reason:
            line += f" ({reason})"
        if self.bar.disable:  # no bar to carry the counts: the line does
            line += f" [{finished}/{self.total} finished; {postfix}; eta {self.eta(finished)}]"
        self.write(line)
        if not self.bar.disable:
            self.bar.set_description_str(self._name, refresh=False)
        self.bar.update(max(0, min(finished, self.total) - self.bar.n))

    def close(self) -> None:
        self.bar.close()


class RunProgress:
    """The progress of one training run (a final retraining, a compare row): on a terminal a bar over its optimizer
    steps with the last validation accuracy; elsewhere a line every ``every_s`` seconds and one per evaluation. Pass
    ``on_step`` and ``on_eval`` to emotion_core's train."""

    def __init__(self, label: str, *, file=None, every_s: float = 30.0, bar: bool = True):
        self.label = label
        self.file = file or sys.stdout
        self.every_s = every_s
        self.bar = tqdm(desc=label, unit="step", disable=None if bar else True, dynamic_ncols=True, leave=False)
        self._started = self._said = time.monotonic()
        self._total = 0
        self._trained = False  # the last step's validation is done: a prediction pass now is the test

    def on_step(self, step: int, total: int) -> None:
        self._total = total
        if self.bar.total != total:
            self.bar.reset(total=total)
        self.bar.update(step - self.bar.n)
        now = time.monotonic()
        if self.bar.disable and now - self._said >= self.every_s:
            self._said = now
            elapsed = now - self._started
            eta = tqdm.format_interval(elapsed / step * (total - step)) if step else "-"
            self._line(f"step {step}/{total} ({step / max(total, 1):.0%}), {tqdm.format_interval(elapsed)} elapsed, eta {eta}")

    def on_eval(self, evaluation: Evaluation) -> None:
        self._trained = evaluation.step >= self._total
        text = f"epoch {evaluation.epoch:.2f} val_acc={evaluation.accuracy:.4f}"
        if self.bar.disable:
            self._line(f"step {evaluation.step}: {text}")
        else:
            self.bar.set_postfix_str(text)

    def on_predict(self, batch: int, batches: int) -> None:
        """A validation pass during training; the test pass once all steps are done (minutes on a CPU: said at once)."""
        text = f"{'testing' if self._trained else 'validating'}: batch {batch}/{batches}"
        now = time.monotonic()
        if not self.bar.disable:
            self.bar.set_postfix_str(text)
        elif (self._trained and batch == 1) or now - self._said >= self.every_s:
            self._said = now
            self._line(text)

    def _line(self, text: str) -> None:
        tqdm.write(f"  {self.label}: {text}", file=self.file)
        self.file.flush()

    def close(self) -> None:
        self.bar.close()
