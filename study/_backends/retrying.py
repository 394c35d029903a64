"""Riding out a database outage: every storage call is retried with backoff while the database cannot be reached.

A worker shares its study through a database that can go away for a while (a restart, a network partition, a
failover). Optuna's RDBStorage fails at the first lost connection, and its heartbeat thread stops after one failed
write; so the storage a study uses is wrapped in RetryingStorage, which retries what failed for a reason that may
pass (a lost or refused connection) for up to RETRY_FOR_S seconds, and raises anything else at once.

A write whose commit went through but whose reply was lost must not be made twice: a study is created under its name,
and a trial carries a unique tag, so that a retry finds what the lost attempt made instead of making another (and a copy
that Optuna's own retry of trial creation made is failed as surplus, never left running with no process to run it).
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import BaseStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.exc import DBAPIError, OperationalError

from study import _optuna, records
from study._optuna import Heartbeat

RETRY_FOR_S = float(os.environ.get("EMOTION_STUDY_STORAGE_RETRY_S", "300"))
BACKOFF_S = (0.5, 10.0)  # first and longest wait between attempts


def to_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


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
        self.log = log or to_stderr
        self._lock = threading.Lock()
        self._down_since: float | None = None

    def __getstate__(self) -> dict[str, Any]:  # a study pickles with its storage (joblib, multiprocessing)
        return {key: value for key, value in vars(self).items() if key != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state, _lock=threading.Lock())

    # Optuna's storage interface (BaseStorage), public methods only.
    delete_study = _Retried()
    set_study_user_attr = _Retried()
    set_study_system_attr = _Retried()
    get_study_id_from_name = _Retried()
    get_study_name_from_id = _Retried()
    get_study_directions = _Retried()
    get_study_user_attrs = _Retried()
    get_study_system_attrs = _Retried()
    get_all_studies = _Retried()
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

    # The writes that a retry must not make twice.
    def create_new_study(self, directions: Sequence[StudyDirection], study_name: str | None = None) -> int:
        study_name = study_name or f"no-name-{uuid.uuid4()}"  # named here, so that a retry can tell it was made

        def made() -> int | None:
            try:
                return self.inner.get_study_id_from_name(study_name)
            except KeyError:
                return None

        return self._retried(self.inner.create_new_study, "create_new_study", directions, study_name, made=made)

    def create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> int:
        tag = uuid.uuid4().hex
        template = records.tagged_template(template_trial, tag)
        state = template.state
        trial_id = self._retried(self.inner.create_new_trial, "create_new_trial", study_id, template,
                                 made=lambda: next(iter(self._tagged(study_id, tag, state)), None))
        copies = [] if state.is_finished() else self._retried(self._tagged, "create_new_trial", study_id, tag, state)
        for copied in set(copies) - {trial_id}:
            reason = (f"a second copy of trial {self.get_trial_number_from_id(trial_id)}, made when the reply to its "
                      "creation was lost; no process runs it")
            records.Failure(records.Outcome.SURPLUS, reason).write(records.StoredTrial(self, copied))
            self.set_trial_state_values(copied, TrialState.FAIL)
        return trial_id

    def _tagged(self, study_id: int, tag: str, state: TrialState) -> list[int]:
        """The ids of the study's trials in ``state`` that the create_new_trial call with ``tag`` made."""
        trials = self.inner.get_all_trials(study_id, deepcopy=False, states=(state,))
        return [self.inner.get_trial_id_from_study_id_trial_number(study_id, t.number)
                for t in trials if records.creation_tag(t) == tag]

    def stale_trial_ids(self, study_id: int) -> list[int]:
        return self._retried(_optuna.stale_trial_ids, "stale_trial_ids", self.inner, study_id)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return self._retried(getattr(self.inner, name), name, *args, **kwargs)

    def _retried(self, method, name: str, *args: Any, made: Callable[[], Any] | None = None, **kwargs: Any) -> Any:
        """``method``'s result, retried through outages. ``made`` says, before a retry, what the attempt that the outage
        cut off had committed (None: nothing), for a write that must not be made twice."""
        deadline = None
        wait = BACKOFF_S[0]
        while True:
            try:
                result = made() if deadline is not None and made is not None else None
                if result is None:
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
                if isinstance(error, StorageInternalError) and error.__cause__ is not None:  # what failed, not Optuna's guess
                    error = error.__cause__
                self.log(f"storage unreachable ({type(error).__name__}: {str(error).strip().splitlines()[0][:160]}); "
                         f"retrying for up to {self.retry_for_s:.0f} s")

    def _came_back(self) -> None:
        with self._lock:
            if self._down_since is not None:
                self.log(f"storage reachable again after {time.monotonic() - self._down_since:.0f} s")
                self._down_since = None

    def __getattr__(self, name: str) -> Any:  # anything else the inner storage has (engine, url, ...)
        if name == "inner":  # not set yet (while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)
