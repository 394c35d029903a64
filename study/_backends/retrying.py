"""Riding out a database outage: every storage call is retried with backoff while the database cannot be reached.

A worker shares its study through a database that can go away for a while (a restart, a network partition, a
failover). Optuna's RDBStorage fails at the first lost connection, and its heartbeat thread stops after one failed
write; so the storage a study uses is wrapped in RetryingStorage, which retries what failed for a reason that may
pass (a lost or refused connection) for up to RETRY_FOR_S seconds, and raises anything else at once.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
from typing import Any

from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from sqlalchemy.exc import DBAPIError, OperationalError

from study import _optuna
from study._optuna import Heartbeat

RETRY_FOR_S = float(os.environ.get("EMOTION_STUDY_STORAGE_RETRY_S", "300"))
BACKOFF_S = (0.5, 10.0)  # first and longest wait between attempts


def transient(error: BaseException) -> bool:
    """A lost or refused connection (it may come back), not a bad query or a constraint."""
    if isinstance(error, OperationalError):
        return True
    if isinstance(error, DBAPIError):
        return bool(error.connection_invalidated)
    if isinstance(error, StorageInternalError):  # RDBStorage wraps what failed in its session
        return error.__cause__ is not None and transient(error.__cause__)
    return False


class _Retried:
    """A storage method that calls the inner storage's method of the same name through RetryingStorage._call."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, storage: RetryingStorage | None, owner: type | None = None):
        return self if storage is None else functools.partial(storage._call, self.name)


class RetryingStorage(BaseStorage, Heartbeat):
    """``inner`` (an Optuna storage), with its calls retried through outages. Heartbeat calls too, so that Optuna's
    heartbeat thread keeps beating once the database is back instead of dying with the first failed write."""

    def __init__(self, inner: BaseStorage, retry_for_s: float = RETRY_FOR_S, log=None):
        self.inner = inner
        self.retry_for_s = retry_for_s
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self._lock = threading.Lock()
        self._down_since: float | None = None

    # Optuna's storage interface (BaseStorage), public methods only.
    create_new_study = _Retried()
    delete_study = _Retried()
    set_study_user_attr = _Retried()
    set_study_system_attr = _Retried()
    get_study_id_from_name = _Retried()
    get_study_name_from_id = _Retried()
    get_study_directions = _Retried()
    get_study_user_attrs = _Retried()
    get_study_system_attrs = _Retried()
    get_all_studies = _Retried()
    create_new_trial = _Retried()
    set_trial_param = _Retried()
    get_trial_id_from_study_id_trial_number = _Retried()
    get_trial_number_from_id = _Retried()
    get_trial_param = _Retried()
    set_trial_state_values = _Retried()
    set_trial_intermediate_value = _Retried()
    set_trial_user_attr = _Retried()
    set_trial_system_attr = _Retried()
    get_trial = _Retried()
    get_all_trials = _Retried()
    get_n_trials = _Retried()
    get_best_trial = _Retried()
    get_trial_params = _Retried()
    get_trial_user_attrs = _Retried()
    get_trial_system_attrs = _Retried()
    remove_session = _Retried()
    check_trial_is_updatable = _Retried()
    # Its heartbeat interface.
    record_heartbeat = _Retried()
    get_heartbeat_interval = _Retried()
    get_heartbeat_stale_trial_callback = _Retried()

    def stale_trial_ids(self, study_id: int) -> list[int]:
        return self._retried(_optuna.stale_trial_ids, "stale_trial_ids", self.inner, study_id)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._retried(getattr(self.inner, name), name, *args, **kwargs)

    def _retried(self, method, name: str, *args: Any, **kwargs: Any) -> Any:
        deadline = None
        wait = BACKOFF_S[0]
        while True:
            try:
                result = method(*args, **kwargs)
            except UpdateFinishedTrialError:
                if deadline is not None and name == "set_trial_state_values" and self._already_set(*args, **kwargs):
                    return True  # the attempt the outage cut off had committed: the state is ours
                raise
            except Exception as error:
                if not transient(error):
                    raise
                now = time.monotonic()
                deadline = deadline or now + self.retry_for_s
                self._went_down(error, now)
                if now >= deadline:
                    raise
                time.sleep(min(wait, max(deadline - now, 0)))
                wait = min(wait * 2, BACKOFF_S[1])
                continue
            if deadline is not None:
                self._came_back()
            return result

    def _already_set(self, trial_id: int, state, values=None) -> bool:
        trial = self.inner.get_trial(trial_id)
        return trial.state == state and (values is None or list(trial.values or []) == list(values))

    def _went_down(self, error: BaseException, now: float) -> None:
        with self._lock:
            if self._down_since is None:
                self._down_since = now
                self.log(f"storage unreachable ({type(error).__name__}: {str(error).strip().splitlines()[0][:160]}); "
                         f"retrying for up to {self.retry_for_s:.0f} s")

    def _came_back(self) -> None:
        with self._lock:
            if self._down_since is not None:
                self.log(f"storage reachable again after {time.monotonic() - self._down_since:.0f} s")
                self._down_since = None

    def __getattr__(self, name: str) -> Any:  # anything else the inner storage has (engine, url, ...)
        return getattr(self.inner, name)
