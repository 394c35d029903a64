"""Opening Optuna storage with a heartbeat, and recovering trials whose process died.

``--storage`` is an SQLAlchemy URL (``sqlite:///…``, ``postgresql://…``, ``mysql+pymysql://…``) or a journal file
(a path ending in ``.journal`` or ``.log``: Optuna's JournalStorage, which takes several writers on one machine).
Either way a running trial records a heartbeat; a trial whose process died is marked FAILED and retried as a new
trial with the same parameters, which continues from the dead trial's last checkpoint.
"""

from __future__ import annotations

import copy
import os
import socket
import time
import warnings
from pathlib import Path

import optuna
import psutil
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import ArgumentError, OperationalError

from study.errors import UsageError
from study.urls import is_journal, is_sqlite, mask_url, register_secret

# A trial without a heartbeat for GRACE_PERIOD_S is taken for dead (on another machine: a process on this one is
# recovered at once, see recover_dead_trials). Both can be set in the environment, e.g. for preemptible machines.
HEARTBEAT_INTERVAL_S = int(os.environ.get("EMOTION_STUDY_HEARTBEAT_S", "20"))
GRACE_PERIOD_S = int(os.environ.get("EMOTION_STUDY_GRACE_PERIOD_S", "60"))
MAX_RETRY = 3
# The user attr that names the process running a trial: what recover_dead_trials checks.
WORKER_ATTR = "worker"


class JournalFileStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage plus the heartbeat that RDBStorage has, so that Optuna's own stale-trial
    handling (``fail_stale_trials``, the retry callback) works on it too. The heartbeat is a system attr per trial."""

    def __init__(self, path: str, heartbeat_interval: int, grace_period: int, callback):
        super().__init__(JournalFileBackend(path))
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.heartbeat_stale_trial_callback = callback

    @staticmethod
    def _key(trial_id: int) -> str:
        # Keyed by trial id: a retried trial inherits its origin's system attrs, stale heartbeat included.
        return f"heartbeat:{trial_id}"

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, self._key(trial_id), time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        return [
            t._trial_id
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,))
            if now - t.system_attrs.get(self._key(t._trial_id), now) > self.grace_period
        ]

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self):
        return self.heartbeat_stale_trial_callback


# The driver SQLAlchemy picks for a bare scheme, and the one to use instead when only that one is installed.
DRIVER_FALLBACKS = {"postgresql": ("psycopg", "postgresql+psycopg2", "psycopg2"), "mysql": ("MySQLdb", "mysql+pymysql", "pymysql")}


def with_installed_driver(url: str) -> str:
    """``postgresql://`` and ``mysql://`` with whichever of their usual drivers is installed."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if scheme in DRIVER_FALLBACKS:
        default, fallback, module = DRIVER_FALLBACKS[scheme]
        if importlib.util.find_spec(default) is None and importlib.util.find_spec(module) is not None:
            return f"{fallback}{sep}{rest}"
    return url


def _engine_kwargs(url: str) -> dict:
    if is_sqlite(url):
        # Wait for a lock instead of failing at once, should two commands share one SQLite file.
        return {"connect_args": {"timeout": 60}}
    # A server that does not answer fails in seconds; connections dropped during an hour-long trial are renewed.
    return {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}


def open_storage(url: str, *, heartbeat: bool = True) -> BaseStorage:
    """The storage for ``url``, with heartbeat-based retry of trials whose process died.

    What a user can fix (a bad URL, an unknown or missing driver, a server that does not answer, a file that cannot be
    made) becomes a UsageError with the password masked; anything else keeps its type.
    """
    register_secret(url)
    options = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if heartbeat:
            options = dict(
                heartbeat_interval=HEARTBEAT_INTERVAL_S,
                grace_period=GRACE_PERIOD_S,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY, inherit_intermediate_values=True),
            )
        try:
            if "://" not in url and not is_journal(url):
                raise UsageError(
                    f"--storage {url!r} is neither a database URL nor a journal file; pass sqlite:///path.db, "
                    "postgresql://user@host/db, mysql+pymysql://user@host/db or a journal file path ending in .journal"
                )
            if is_sqlite(url) or is_journal(url):
                path = Path(url.removeprefix("sqlite:///")) if is_sqlite(url) else Path(url)
                path.expanduser().parent.mkdir(parents=True, exist_ok=True)
            if is_journal(url):
                return JournalFileStorage(
                    str(Path(url).expanduser()),
                    options.get("heartbeat_interval"),
                    GRACE_PERIOD_S,
                    options.get("heartbeat_stale_trial_callback"),
                )
            return RDBStorage(with_installed_driver(url), engine_kwargs=_engine_kwargs(url), **options)
        except (ArgumentError, OperationalError, ImportError, OSError) as error:
            message = " ".join(str(error).split())[:300].replace(url, mask_url(url))
            raise UsageError(f"cannot open storage {mask_url(url)}: {type(error).__name__}: {message}") from error


def study_exists(storage: BaseStorage, name: str) -> bool:
    try:
        storage.get_study_id_from_name(name)
        return True
    except KeyError:
        return False


# -- which process runs a trial: a dead one on this machine is recovered without waiting for the grace period


def _pid_namespace() -> str | None:
    try:
        return os.readlink("/proc/self/ns/pid")  # containers that share a host name do not share PIDs
    except OSError:
        return None


def worker_identity(trial_number: int | None = None) -> dict:
    """This process, as stored on the trial it runs (the trial's number too: a retry inherits its origin's attrs)."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "pid_namespace": _pid_namespace(),
        "started": round(psutil.Process().create_time(), 2),
        "trial": trial_number,
    }


def runs_in_this_process(trial: FrozenTrial) -> bool:
    worker = trial.user_attrs.get(WORKER_ATTR)
    return isinstance(worker, dict) and worker.get("trial") == trial.number and worker == worker_identity(trial.number)


def _is_dead_here(trial: FrozenTrial) -> bool:
    """Whether the process that ran ``trial`` was on this machine and no longer runs."""
    worker = trial.user_attrs.get(WORKER_ATTR)
    if not isinstance(worker, dict) or worker.get("trial") != trial.number:
        return False
    if worker.get("host") != socket.gethostname() or worker.get("pid_namespace") != _pid_namespace():
        return False
    try:
        return abs(psutil.Process(worker["pid"]).create_time() - worker["started"]) > 1.0  # the PID was reused
    except psutil.NoSuchProcess:
        return True
    except (psutil.Error, KeyError, TypeError):
        return False


def retry(study: optuna.Study, storage: BaseStorage, trial: FrozenTrial) -> None:
    """Queue a retry of a failed trial through the storage's stale-trial callback: same parameters, and the
    retry continues from the trial's checkpoint (see RetryHeartbeatStaleTrialCallback.retried_trial_number)."""
    callback = storage.get_heartbeat_stale_trial_callback() if isinstance(storage, BaseHeartbeat) else None
    if callback is not None:
        trial = copy.deepcopy(trial)
        trial.user_attrs = {k: v for k, v in trial.user_attrs.items() if k != "fail_reason"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback(study, trial)


def fail_stale_trials(study: optuna.Study) -> None:
    """Optuna's heartbeat check, which study.optimize runs only before it starts a trial: a waiting worker runs it too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def recover_dead_trials(study: optuna.Study, storage: BaseStorage) -> list[int]:
    """Fail the RUNNING trials whose process on this machine is gone (kill -9, a crash) and queue their retries.

    The heartbeat does the same for any machine once the grace period has passed; a rerun on the same machine
    need not wait for it. Returns the numbers of the trials recovered.
    """
    recovered = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _is_dead_here(trial):
            continue
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker recovered it first
        retry(study, storage, storage.get_trial(trial._trial_id))
        recovered.append(trial.number)
    return recovered
