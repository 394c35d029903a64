"""The trial loop of one worker: trials of a shared study until it holds its total (or a stop rule says enough), Ctrl-C
and SIGTERM handled.

Every worker runs trials until the study holds the requested total of finished trials. It starts a trial (a queued
one first: a retry, or one enqueued by hand) only while finished + running trials fall short of the total, and a
trial that still turns out one too many (two workers started at the same moment) fails at once as not needed: the
total is exact whatever the number of workers.
While the last trials run elsewhere a worker waits, since one of them may fail and need replacing.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

from study import records
from study._backends.heartbeat import retry
from study._opened import OpenedStudy
from study._errors import describe
from study._trials.liveness import Watcher, fail_and_retry, fail_stale_trials, recover_dead_trials, runs_in_this_process, worker_identity
from study._trials.objective import TrialFailed

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

# A worker gives up after this many failed trials in a row: a broken setup should not loop for ever.
MAX_CONSECUTIVE_FAILURES = 3
POLL_S = 1.0
SIGNALS = (signal.SIGINT, signal.SIGTERM)
NOT_NEEDED = records.Failure(records.Outcome.SURPLUS, "not needed: the study already had its total of finished and running trials")
INTERRUPTED = records.Failure(records.Outcome.INTERRUPTED, "interrupted (Ctrl-C or SIGTERM)")


class TrialsKeepFailing(RuntimeError):
    """Several trials in a row failed: the setup, not the parameters, is likely at fault."""


# A KeyboardInterrupt raised inside a storage call can leave its transaction open: a SQLite write lock that nothing
# rolls back, on which the next write (marking the trial failed) would wait for ever. A signal that comes during one
# is acted on when it returns.
_STORAGE_MODULES = ("sqlalchemy.", "optuna.storages.", "sqlite3")
_RETRY_S = 0.05


def _in_storage_call(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_STORAGE_MODULES):
            return True
        frame = frame.f_back
    return False


@contextmanager
def stop_on_first_signal():
    """Ctrl-C, or SIGTERM (how a machine is preempted), raises KeyboardInterrupt once, outside storage calls; later
    ones are ignored, so that the cleanup that marks the trial failed runs to its end."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    retry_signal = getattr(signal, "SIGALRM", None) if hasattr(signal, "setitimer") else None
    pending = False

    def handler(signum, frame):
        nonlocal pending
        if signum == retry_signal and not pending:  # an alarm that is not ours
            return
        pending = True
        if retry_signal is not None and _in_storage_call(frame):
            signal.setitimer(signal.ITIMER_REAL, _RETRY_S)  # back here once the storage call is over
            return
        for number in installed:
            signal.signal(number, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {number: signal.getsignal(number) for number in (*SIGNALS, retry_signal) if number is not None}
    # A process started to ignore a signal (nohup, &) keeps ignoring it.
    installed = [number for number, action in previous.items() if action is not signal.SIG_IGN or number == retry_signal]
    for number in installed:
        signal.signal(number, handler)
    try:
        yield
    finally:
        if retry_signal is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for number, action in previous.items():
            signal.signal(number, action)


class WorkerObjective:
    """The objective, plus what a shared study needs: this process's identity on the trial, the not-needed check, and
    a reason on every trial that fails, whatever raised."""

    def __init__(self, objective: Callable, total: int, log: Callable[[str, BaseException], None] | None = None):
        self.objective = objective
        self.total = total
        self.log = log  # where a failure's traceback goes (the study's errors.log)
        self.current: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        self.current = trial.number
        worker_identity(trial.number).write(trial)
        before = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and t.state != TrialState.FAIL]
        if len(before) >= self.total:
            NOT_NEEDED.write(trial)
            raise TrialFailed(NOT_NEEDED.reason)
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            INTERRUPTED.write(trial)
            raise
        except (TrialFailed, optuna.TrialPruned, optuna.exceptions.UpdateFinishedTrialError):
            raise  # recorded already, or not this process's to record
        except Exception as error:
            reason = describe(error)
            if self.log is not None:
                self.log(f"trial {trial.number} failed: {reason}", error)
            records.Failure(records.Outcome.FAILED, reason).write(trial)
            raise


def _mark_interrupted(opened: OpenedStudy, current: int | None) -> None:
    """After Ctrl-C or SIGTERM: no trial of this process stays RUNNING, and the interrupted one is queued to continue from its
    checkpoint when the command is run again."""
    for trial in opened.trials(TrialState.RUNNING, TrialState.FAIL):
        if not runs_in_this_process(trial):
            continue
        if trial.state == TrialState.RUNNING:  # the signal came while Optuna itself was busy with the trial
            fail_and_retry(opened, trial, INTERRUPTED)
        elif trial.number == current and records.outcome(trial) == records.Outcome.INTERRUPTED:
            retry(opened.study, trial, INTERRUPTED.reason)


StopRule = Callable[[optuna.Study], "str | None"]  # why the study should start no more trials, or None


def run_trials(opened: OpenedStudy, objective: Callable, total: int, callbacks: Sequence[Callable] = (),
               deadline: float | None = None, stop_rule: StopRule | None = None) -> str | None:
    """Run trials of the opened study in this process until it holds ``total`` finished trials or ``stop_rule`` gives a reason
    to stop (which it returns), while a watcher thread fails and retries the trials of dead workers (liveness).

    Raises KeyboardInterrupt after Ctrl-C (the current trial marked FAIL and queued for retry) and TrialsKeepFailing
    after MAX_CONSECUTIVE_FAILURES failed trials in a row.
    """
    worker = WorkerObjective(objective, total, getattr(objective, "log", None))
    with stop_on_first_signal(), Watcher(opened):
        return _run_trials(opened, total, callbacks, deadline, worker, stop_rule)


def taken_over(opened: OpenedStudy, number: int | None) -> FrozenTrial | None:
    """The trial this worker ran, if another process failed it (no heartbeat while this one stalled) and retried it:
    then telling its result raised ("Cannot tell a FAIL trial")."""
    if number is None:
        return None
    trial = opened.stored_trial(number)
    return trial if trial.state == TrialState.FAIL else None


def _run_trials(opened: OpenedStudy, total, callbacks, deadline, worker, stop_rule) -> str | None:
    study = opened.study
    failures_in_a_row = 0
    waiting_said = False
    try:
        while True:
            recover_dead_trials(opened)
            fail_stale_trials(opened)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if finished >= total:
                return None
            if deadline is not None and time.time() >= deadline:
                print(f"timeout reached with {finished}/{total} trials finished", flush=True)
                return None
            reason = stop_rule(study) if stop_rule is not None else None
            if reason is not None:
                return reason
            if finished + running >= total:
                if not waiting_said:
                    print(f"waiting for {running} trial(s) running elsewhere to finish", flush=True)
                    waiting_said = True
                time.sleep(POLL_S)
                continue
            waiting_said = False
            worker.current = None
            try:
                study.optimize(worker, n_trials=1, catch=(Exception,), callbacks=list(callbacks), gc_after_trial=True)
            except (ValueError, optuna.exceptions.UpdateFinishedTrialError):  # "Cannot tell a FAIL trial": see taken_over
                lost = taken_over(opened, worker.current)
                if lost is None:
                    raise
                print(f"trial {lost.number}: result dropped: another worker took it for dead while this one stalled "
                      f"({records.fail_reason(lost) or 'no heartbeat for the grace period'}); its retry continues it", flush=True)
                continue
            if worker.current is None:
                continue
            trial = study.get_trials(deepcopy=False)[worker.current]
            kind = records.outcome(trial)
            if trial.state != TrialState.FAIL:
                failures_in_a_row = 0
            elif kind != records.Outcome.SURPLUS:
                failures_in_a_row += 1
                if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                    reason = records.fail_reason(trial) or "no reason was recorded"
                    raise TrialsKeepFailing(f"{failures_in_a_row} trials in a row failed; the last one: {reason}")
    except KeyboardInterrupt:  # further signals are ignored by now (stop_on_first_signal)
        _mark_interrupted(opened, worker.current)
        raise
