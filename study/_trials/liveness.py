"""Which process runs a trial, and what happens to a trial whose process died: failed with a reason that says which
machine died and when, and retried as a new trial with the same parameters, which continues from its last checkpoint.

Two ways to tell a trial is dead: a process that can see the trial's process (same kernel, same PID namespace) checks
it directly and recovers at once; any other machine waits until the trial has sent no heartbeat for the grace period
(study._backends.heartbeat). Every worker watches in a background thread, also while it trains, so a dead machine's
trial is noticed within about a heartbeat interval after the grace period, not when a survivor's trial ends.
"""

from __future__ import annotations

import os
import socket
import threading
from functools import cache

import optuna
import psutil
from optuna.trial import FrozenTrial, TrialState

from study import _optuna, records
from study._backends.heartbeat import heartbeat_interval_s, now, retry, stale_reason
from study._opened import OpenedStudy


@cache
def _kernel() -> str | None:
    """What tells this kernel from another machine's: its boot id, random at every boot (not the host name, which
    containers often share, nor the machine id, which cloned images share)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return None


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")  # the initial namespace reads the same on every host: see _kernel
    except OSError:
        return None


def worker_identity(trial_number: int | None = None) -> records.Worker:
    """This process, as stored on the trial it runs (the trial's number too: a retry inherits its origin's attrs)."""
    return records.Worker(host=socket.gethostname(), kernel=_kernel(), pid_namespace=_pid_namespace(), pid=os.getpid(),
                          started=round(psutil.Process().create_time(), 2), trial=trial_number)


def runs_in_this_process(trial: FrozenTrial) -> bool:
    worker = records.Worker.read(trial)
    return worker is not None and worker.trial == trial.number and worker == worker_identity(trial.number)


def _is_dead_here(trial: FrozenTrial) -> bool:
    """Whether this process can see the process that ran ``trial`` (same kernel and PID namespace), and it is gone."""
    worker = records.Worker.read(trial)
    if worker is None or worker.trial != trial.number:
        return False
    if worker.kernel is None or (worker.kernel, worker.pid_namespace) != (_kernel(), _pid_namespace()):
        return False
    try:
        return abs(psutil.Process(worker.pid).create_time() - worker.started) > 1.0  # the PID was reused
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, TypeError):
        return False


def fail_and_retry(opened: OpenedStudy, trial: FrozenTrial, failure: records.Failure) -> bool:
    """Fail a RUNNING trial, saying why (a finished trial's attrs can no longer be written, so the reason comes
    first), and queue its retry. False when another process finished it first."""
    storage = opened.storage
    stored = records.StoredTrial(storage, opened.trial_id(trial.number))
    try:
        failure.write(stored)
        if not storage.set_trial_state_values(stored.trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another worker was first
    retry(opened.study, storage.get_trial(stored.trial_id), failure.reason)
    return True


def fail_stale_trials(opened: OpenedStudy) -> list[int]:
    """Optuna's heartbeat check, with the reason on each trial it fails: the running trials that sent no heartbeat for
    the grace period. (Optuna's public fail_stale_trials fails them first and cannot say why.)"""
    failed = []
    for stale in _optuna.stale_trial_ids(opened.storage, opened.study_id):
        trial = opened.storage.get_trial(stale)
        if trial.state == TrialState.RUNNING and fail_and_retry(opened, trial, records.Failure(records.Outcome.DIED, stale_reason(trial))):
            failed.append(trial.number)
    return failed


def recover_dead_trials(opened: OpenedStudy) -> list[int]:
    """Fail the RUNNING trials whose process this one can see is gone (kill -9, a crash) and queue their retries,
    without waiting for the grace period. Returns the numbers of the trials recovered."""
    recovered = []
    for trial in opened.trials(TrialState.RUNNING):
        if not _is_dead_here(trial):
            continue
        reason = (f"{records.Worker.read(trial).where()}: its process was gone: taken for dead by pid {os.getpid()} at {now()}; "
                  "retried from its last checkpoint")
        if fail_and_retry(opened, trial, records.Failure(records.Outcome.DIED, reason)):
            recovered.append(trial.number)
    return recovered


class Watcher:
    """A daemon thread that fails and retries dead trials every ``interval_s``, also while this worker trains."""

    def __init__(self, opened: OpenedStudy, interval_s: float | None = None, on_recovered=None):
        self.opened = opened
        self.interval_s = interval_s or heartbeat_interval_s()
        self.on_recovered = on_recovered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dead-trial-watcher", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                recovered = recover_dead_trials(self.opened) + fail_stale_trials(self.opened)
            except Exception as error:  # noqa: BLE001 - a check that failed now runs again next interval
                print(f"dead-trial check failed ({type(error).__name__}: {error}); trying again in {self.interval_s:.0f} s", flush=True)
                continue
            if recovered and self.on_recovered is not None:
                self.on_recovered(recovered)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
