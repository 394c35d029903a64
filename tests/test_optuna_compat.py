"""Optuna's private names go through study/_optuna.py alone, and each one used there still is what the project relies on:
these tests fail when Optuna renames or changes one."""

import inspect
import re
import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from study import _optuna
from study._backends import open_storage
from study._backends.heartbeat import JournalFileStorage
from study._backends.retrying import RetryingStorage

ROOT = Path(__file__).resolve().parents[1]
# What reaches into Optuna's privates: an underscored attribute of an Optuna object, or a private Optuna module.
PRIVATE = re.compile(r"\._(storage|trial_id|study_id|get_stale_trial_ids|cached_frozen_trial|run_trial|optimize)\b|"
                     r"optuna(\.[a-z_]+)*\._[a-z]")


def test_private_optuna_names_appear_in_the_compat_module_only():
    offenders = []
    for path in sorted([*(ROOT / "study").rglob("*.py"), *(ROOT / "emotion_core").rglob("*.py"), *(ROOT / "scripts").glob("*.py")]):
        if path == ROOT / "study" / "_optuna.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if PRIVATE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, offenders


def test_the_checker_sees_a_private_use():
    assert PRIVATE.search("storage = study._storage") and PRIVATE.search("from optuna.storages._heartbeat import x")
    assert PRIVATE.search("storage._get_stale_trial_ids(1)") and not PRIVATE.search("storage.stale_trial_ids(1)")


def test_heartbeat_interface_is_what_the_compat_class_implements():
    """BaseHeartbeat's abstract methods are the three public ones plus the one private method Heartbeat renames."""
    from optuna.storages._heartbeat import BaseHeartbeat

    assert issubclass(_optuna.Heartbeat, BaseHeartbeat)
    assert BaseHeartbeat.__abstractmethods__ == {"record_heartbeat", "_get_stale_trial_ids", "get_heartbeat_interval",
                                                 "get_heartbeat_stale_trial_callback"}
    assert list(inspect.signature(BaseHeartbeat._get_stale_trial_ids).parameters) == ["self", "study_id"]


def test_optuna_runs_heartbeats_for_a_heartbeat_storage_and_not_for_others(tmp_path):
    journal = JournalFileStorage(str(tmp_path / "j.journal"), 1, 1, None)
    plain = optuna.storages.InMemoryStorage()
    assert _optuna.heartbeat_enabled(journal) and not _optuna.heartbeat_enabled(plain)
    assert not _optuna.heartbeat_enabled(JournalFileStorage(str(tmp_path / "k.journal"), None, 1, None))
    assert _optuna.stale_trial_ids(plain, 0) == []


@pytest.mark.parametrize("kind", ["rdb", "journal", "retrying"])
def test_stale_trial_ids_finds_a_trial_without_heartbeats_and_optuna_fails_it(tmp_path, kind):
    """The private query answers for RDBStorage, the journal storage and the retrying wrapper, and Optuna's public
    fail_stale_trials (which asks it under its private name) fails the trial and calls the retry callback."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = RetryHeartbeatStaleTrialCallback(max_retry=1)
        if kind == "journal":
            storage = JournalFileStorage(str(tmp_path / "s.journal"), 1, 1, callback)
        else:
            storage = RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=1,
                                 heartbeat_stale_trial_callback=callback)
            if kind == "retrying":
                storage = RetryingStorage(optuna.storages.get_storage(storage))
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": FloatDistribution(0, 1)})
    study_id = storage.get_study_id_from_name("s")
    storage.record_heartbeat(storage.get_trial_id_from_study_id_trial_number(study_id, trial.number))
    assert _optuna.stale_trial_ids(storage, study_id) == []
    time.sleep(2.2)
    assert _optuna.stale_trial_ids(storage, study_id) == [storage.get_trial_id_from_study_id_trial_number(study_id, 0)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    states = [t.state.name for t in study.get_trials()]
    assert states == ["FAIL", "WAITING"]


def test_the_retrying_storage_covers_optunas_whole_storage_interface(tmp_path):
    """Every abstract method of BaseStorage is a retried call (instantiation would fail otherwise), and every public
    method of BaseStorage answers through the wrapper."""
    storage = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    assert isinstance(storage, RetryingStorage)
    public = {name for name, value in vars(optuna.storages.BaseStorage).items() if callable(value) and not name.startswith("_")}
    assert public <= set(vars(RetryingStorage)), public - set(vars(RetryingStorage))
