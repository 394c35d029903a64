"""Heartbeats and the retry of a trial whose process stopped sending them.

A running trial records a heartbeat every heartbeat_interval_s(); one without a heartbeat for grace_period_s() is taken
for dead by the other workers, failed, and retried as a new trial with the same parameters, which continues from its
last checkpoint (study._trials.liveness says why in the failed trial's record). RDBStorage has Optuna's heartbeat; a
journal file gets one here (:class:`JournalFileStorage`).
"""

from __future__ import annotations

import datetime
import os
import socket
import time
import warnings

import optuna
from optuna.storages import JournalStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState

from study import records
from study._errors import UsageError
from study._optuna import Heartbeat

MAX_RETRY = 3


def _seconds(variable: str, default: int) -> int:
    """A whole number of seconds from the environment, positive as Optuna's heartbeat requires: a negative grace
    period would take every running trial for dead."""
    text = os.environ.get(variable, "").strip() or str(default)
    try:
        seconds = int(text)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise UsageError(f"{variable}={text!r}: give a positive whole number of seconds (default {default})")
    return seconds


# Both can be set in the environment, e.g. a longer grace period for preemptible machines that stall.
def heartbeat_interval_s() -> int:
    return _seconds("EMOTION_STUDY_HEARTBEAT_S", 20)


def grace_period_s() -> int:
    return _seconds("EMOTION_STUDY_GRACE_PERIOD_S", 60)


class JournalFileStorage(JournalStorage, Heartbeat):
    """Optuna's journal file storage plus the heartbeat that RDBStorage has, so that Optuna's own stale-trial
    handling (``fail_stale_trials``, the retry callback) works on it too. The heartbeat is a system attr per trial.
    ``heartbeat_interval`` and ``grace_period`` are None or positive, as RDBStorage's; no grace period is two intervals."""

    def __init__(self, path: str, heartbeat_interval: int | None, grace_period: int | None, callback):
        if heartbeat_interval is not None and heartbeat_interval <= 0:
            raise ValueError("The value of `heartbeat_interval` should be a positive integer.")
        if grace_period is not None and grace_period <= 0:
            raise ValueError("The value of `grace_period` should be a positive integer.")
        super().__init__(JournalFileBackend(path))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = callback

    def record_heartbeat(self, trial_id: int) -> None:
        records.write_heartbeat(self, trial_id, time.time())

    def stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        grace = self.grace_period or 2 * self.heartbeat_interval
        running = self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
        ids = [(self.get_trial_id_from_study_id_trial_number(study_id, t.number), t) for t in running]
        return [trial_id for trial_id, t in ids if now - (records.last_heartbeat(t, trial_id) or now) > grace]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.heartbeat_stale_trial_callback


def now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def retry(study: optuna.Study, trial: FrozenTrial, reason: str | None) -> None:
    """Queue a retry of a failed trial: a new trial with the same parameters and intermediate values, which continues
    from the trial's last checkpoint (records.retry_attrs says what it inherits)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True)(study, records.as_retry(trial, reason))


def stale_reason(trial: FrozenTrial) -> str:
    worker = records.Worker.read(trial)
    where = worker.where() if worker is not None else "a worker that never started it"
    return (f"no heartbeat from {where} for more than {grace_period_s()} s: taken for dead by host {socket.gethostname()} "
            f"at {now()}; retried from its last checkpoint")


class RetryDeadTrial:
    """The storage's stale-trial callback, for when Optuna's own check (study.optimize runs it before each trial)
    fails a trial before study._trials.liveness could say why: the retry then carries the reason."""

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        retry(study, trial, stale_reason(trial))
