"""Which process runs a trial, and what happens to a trial whose process died: failed with a reason that says which
machine died and when, and retried as a new trial with the same parameters, which continues from its last checkpoint.

Two ways to tell a trial is dead: a process that can see the trial's process (same kernel, same PID namespace) checks
it directly and recovers at once; any other machine waits until the trial has sent no heartbeat for the grace period
(Optuna's heartbeat and ``fail_stale_trials``). Every worker watches in a background thread, also while it trains, so
a dead machine's trial is noticed within about a heartbeat interval after the grace period, not when a survivor's
trial ends.
"""

from __future__ import annotations

import copy
import datetime
import os
import socket
import threading
import warnings
from functools import cache

import optuna
import psutil
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled
from optuna.trial import FrozenTrial, TrialState

# A trial without a heartbeat for GRACE_PERIOD_S is taken for dead by the other machines. Both can be set in the
# environment, e.g. a longer grace period for preemptible machines that stall.
HEARTBEAT_INTERVAL_S = int(os.environ.get("EMOTION_STUDY_HEARTBEAT_S", "20"))
GRACE_PERIOD_S = int(os.environ.get("EMOTION_STUDY_GRACE_PERIOD_S", "60"))
MAX_RETRY = 3
# The user attr that names the process running a trial.
WORKER_ATTR = "worker"
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
TAKEN_FOR_DEAD = "taken for dead"  # in the fail_reason of a trial another process failed because its own looked dead


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


def worker_identity(trial_number: int | None = None) -> dict:
    """This process, as stored on the trial it runs (the trial's number too: a retry inherits its origin's attrs)."""
    return {
        "host": socket.gethostname(),
        "kernel": _kernel(),
        "pid_namespace": _pid_namespace(),
        "pid": os.getpid(),
        "started": round(psutil.Process().create_time(), 2),
        "trial": trial_number,
    }


def runs_in_this_process(trial: FrozenTrial) -> bool:
    worker = trial.user_attrs.get(WORKER_ATTR)
    return isinstance(worker, dict) and worker.get("trial") == trial.number and worker == worker_identity(trial.number)


def _is_dead_here(trial: FrozenTrial) -> bool:
    """Whether this process can see the process that ran ``trial`` (same kernel and PID namespace), and it is gone."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(worker, dict) or worker.get("trial") != trial.number:
        return False
    if worker.get("kernel") is None or (worker.get("kernel"), worker.get("pid_namespace")) != (_kernel(), _pid_namespace()):
        return False
    try:
        return abs(psutil.Process(worker["pid"]).create_time() - worker["started"]) > 1.0  # the PID was reused
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError):
        return False


def taken_for_dead(trial: FrozenTrial) -> bool:
    return TAKEN_FOR_DEAD in str(trial.user_attrs.get("fail_reason", ""))


def _where(trial: FrozenTrial) -> str:
    worker = trial.user_attrs.get(WORKER_ATTR)
    return f"host {worker.get('host')} pid {worker.get('pid')}" if isinstance(worker, dict) else "a worker that never started it"


def _now() -> str:
    return datetime.datetime.now().isoformat(timespec="seconds")


def retry(study: optuna.Study, trial: FrozenTrial) -> None:
    """Queue a retry of a failed trial: a new trial with the same parameters, which continues from the trial's last
    checkpoint (its user attrs are copied, the checkpoint's too, but not its fail_reason)."""
    storage = study._storage
    callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
    if isinstance(callback, RetryDeadTrial):
        callback = callback.retry
    if callback is not None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback(study, trial)


def fail_and_retry(study: optuna.Study, trial: FrozenTrial, reason: str) -> bool:
    """Fail a RUNNING trial, saying why (a finished trial's attrs can no longer be written, so the reason comes
    first), and queue its retry. False when another process finished it first."""
    storage = study._storage
    try:
        storage.set_trial_user_attr(trial._trial_id, "fail_reason", reason)
        if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
            return False
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # another worker was first
    retry(study, storage.get_trial(trial._trial_id))
    return True


class RetryDeadTrial:
    """The storage's stale-trial callback, for when Optuna's own check (study.optimize runs it before each trial)
    fails a trial before fail_stale_trials here could say why: the retry then carries the reason."""

    def __init__(self):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        trial = copy.deepcopy(trial)
        trial.user_attrs["retried_because"] = _stale_reason(trial)
        retry(study, trial)


def _stale_reason(trial: FrozenTrial) -> str:
    return (f"no heartbeat from {_where(trial)} for more than {GRACE_PERIOD_S} s: {TAKEN_FOR_DEAD} by host "
            f"{socket.gethostname()} at {_now()}; retried from its last checkpoint")


def fail_stale_trials(study: optuna.Study) -> list[int]:
    """Optuna's heartbeat check, with the reason on each trial it fails: the running trials that sent no heartbeat for
    the grace period. (Optuna's fail_stale_trials fails them first and cannot say why; its stale-trial query is the
    storage's own, private, method.)"""
    storage = study._storage
    if not is_heartbeat_enabled(storage):
        return []
    failed = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):
        trial = storage.get_trial(trial_id)
        if trial.state == TrialState.RUNNING and fail_and_retry(study, trial, _stale_reason(trial)):
            failed.append(trial.number)
    return failed


def recover_dead_trials(study: optuna.Study) -> list[int]:
    """Fail the RUNNING trials whose process this one can see is gone (kill -9, a crash) and queue their retries,
    without waiting for the grace period. Returns the numbers of the trials recovered."""
    reason = f"its process was gone: {TAKEN_FOR_DEAD} by pid {os.getpid()} at {{}}; retried from its last checkpoint"
    return [trial.number for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if _is_dead_here(trial) and fail_and_retry(study, trial, f"{_where(trial)}: " + reason.format(_now()))]


class Watcher:
    """A daemon thread that fails and retries dead trials every ``interval_s``, also while this worker trains."""

    def __init__(self, study: optuna.Study, interval_s: float = HEARTBEAT_INTERVAL_S, on_recovered=None):
        self.study = study
        self.interval_s = interval_s
        self.on_recovered = on_recovered
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dead-trial-watcher", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                recovered = recover_dead_trials(self.study) + fail_stale_trials(self.study)
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
