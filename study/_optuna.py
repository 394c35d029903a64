"""Optuna's private names that emotion-study needs, each behind one small function or class here and pinned by
tests/test_optuna_compat.py, which fails when Optuna renames or changes one. Everything else uses Optuna's public API.

Why each is still needed (Optuna 5):
- ``optuna.storages._heartbeat.BaseHeartbeat``: Optuna runs a trial's heartbeat thread, and its public
  ``fail_stale_trials``, only for a storage that subclasses it. A journal file storage has no heartbeat of its own, and
  the storage that retries calls through database outages wraps RDBStorage's: both must be one.
- ``BaseHeartbeat._get_stale_trial_ids``: the one private method of that interface. Those two storages implement it,
  and it is asked directly to write why a trial is failed before failing it, which the public ``fail_stale_trials``
  cannot do (it fails first, and a finished trial's attrs can no longer be written).
"""

from __future__ import annotations

from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat, is_heartbeat_enabled


class Heartbeat(BaseHeartbeat):
    """Optuna's heartbeat interface, with its private method under a public name: a storage implements
    :meth:`stale_trial_ids` and Optuna's machinery finds it under its own name."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        return self.stale_trial_ids(study_id)

    def stale_trial_ids(self, study_id: int) -> list[int]:
        """The ids of the study's running trials that sent no heartbeat for the grace period."""
        raise NotImplementedError


def heartbeat_enabled(storage: BaseStorage) -> bool:
    """Whether Optuna runs heartbeats for trials in ``storage``."""
    return is_heartbeat_enabled(storage)


def stale_trial_ids(storage: BaseStorage, study_id: int) -> list[int]:
    """The ids of the running trials of the study that sent no heartbeat for the grace period; [] without heartbeats."""
    if not heartbeat_enabled(storage):
        return []
    return storage._get_stale_trial_ids(study_id)
