"""Every record the project writes into Optuna storage reads back as it was written, through a real SQLite storage; a
study written by the previous layout still reads; and no module but study/records.py reads or writes an attr key."""

import ast
import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from study import records
from study._backends import open_storage
from study._opened import OpenedStudy
from study.records import Outcome

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def stored(tmp_path):
    """A study in a real SQLite storage with one running trial: (storage, study, trial)."""
    storage = open_storage(f"sqlite:///{tmp_path / 'records.db'}", heartbeat=False)
    study = optuna.create_study(study_name="r", storage=storage, direction="maximize")
    return storage, study, study.ask({"x": FloatDistribution(0, 1)})


def reloaded(storage, study, number=0):
    return optuna.load_study(study_name=study.study_name, storage=storage).trials[number]


def test_study_records_round_trip(stored):
    storage, study, _ = stored
    record = records.StudyRecord(settings={"model": "/m", "epochs": 2.0}, labels=("a", "b"), fingerprints={"model": "sha256:1"},
                                 artifact_store="/store", max_length=64)
    final = records.FinalRecord(trial=3, files={"report.json": "id1"}, time="2026-01-01T00:00:00", test_accuracy=0.8,
                                test_accuracy_ci95=[0.78, 0.82], test_macro_f1=0.7, seeds=[1, 2])
    stop = records.StopRecord(patience=5, finished=12, best_trial=4, time="2026-01-01T00:00:01")
    for written in (record, final, stop):
        written.write(study)
    again = optuna.load_study(study_name="r", storage=storage)
    assert records.StudyRecord.read(again) == record and records.FinalRecord.read(again) == final
    assert records.StopRecord.read(again) == stop
    assert records.StudyRecord.read({}) is None and records.FinalRecord.read({}) is None and records.StopRecord.read({}) is None


def test_trial_records_round_trip(stored):
    storage, study, trial = stored
    written = [
        records.TrialStart(variant="qlora", baseline=True),
        records.Worker(host="h", kernel="k", pid_namespace="pid:[1]", pid=7, started=1.5, trial=0),
        records.Checkpoint(artifact_id="checkpoints-study1-trial0-checkpoint-4.tar", folder="checkpoint-4", trial=0),
        records.Retry(of=2, history=[1, 2], reason="no heartbeat"),
        records.TrialResult(trainable_params=10, total_params=100, peak_memory_mib=1.5, peak_rss_mib=300.0, weights_mib=2.0,
                            train_seconds=3.0, train_samples_per_second=4.0, optimizer_steps=5, n_train=6, n_validation=7,
                            epoch_val_accuracy=[0.5], resumed_from_step=4),
        records.Failure(Outcome.DIED, "its process was gone"),
    ]
    for record in written:
        record.write(trial)
    evidence = records.Evidence(correct=np.array([True, False, True] * 667 + [False]), data="key")
    evidence.write(trial)
    frozen = reloaded(storage, study)
    for record in written:
        assert type(record).read(frozen) == record
    again = records.Evidence.read(frozen)
    assert again.data == "key" and again.correct.dtype == bool and np.array_equal(again.correct, evidence.correct)
    assert len(frozen.user_attrs["evidence"]["bits"]) < 400  # 2002 sentences in a few hundred bytes
    assert records.Checkpoint.read(frozen).step == 4


def test_a_record_written_to_another_process_trial_by_its_storage_id(stored):
    storage, study, trial = stored
    stored_id = OpenedStudy(storage, study, None).trial_id(trial.number)
    records.Failure(Outcome.INTERRUPTED, "interrupted").write(records.StoredTrial(storage, stored_id))
    storage.set_trial_state_values(stored_id, TrialState.FAIL)
    frozen = reloaded(storage, study)
    assert records.outcome(frozen) == Outcome.INTERRUPTED and records.outcome(frozen).retried


def test_outcomes_come_from_states_and_failure_records(stored):
    storage, study, trial = stored
    study.tell(trial, 0.5)
    diverged = study.ask({"x": FloatDistribution(0, 1)})
    records.Failure(Outcome.DIVERGED, "training loss became nan at step 3").write(diverged)
    study.tell(diverged, state=TrialState.PRUNED)
    failed = study.ask({"x": FloatDistribution(0, 1)})
    study.tell(failed, state=TrialState.FAIL)  # failed without a record: still a failure
    trials = optuna.load_study(study_name="r", storage=storage).trials
    assert [records.outcome(t) for t in trials] == [Outcome.COMPLETE, Outcome.DIVERGED, Outcome.FAILED]


def test_an_empty_reason_is_never_written(stored):
    _, study, trial = stored
    records.Failure(Outcome.FAILED, "").write(trial)
    assert records.fail_reason(reloaded(*stored[:2])) == "failed (no message)"


def test_a_retry_keeps_what_it_continues_and_drops_how_its_origin_ended(stored):
    storage, study, trial = stored
    records.TrialStart(variant="lora", baseline=True).write(trial)
    records.Checkpoint(artifact_id="a", folder="checkpoint-2", trial=0).write(trial)
    records.Failure(Outcome.INTERRUPTED, "interrupted").write(trial)
    records.TrialResult(train_seconds=3.0).write(trial)
    study.tell(trial, state=TrialState.FAIL)
    attrs = records.retry_attrs(reloaded(storage, study), "interrupted")
    assert set(attrs) == {"variant", "baseline", "checkpoint", "retry"}
    assert records.Retry.read(attrs) == records.Retry(of=0, history=[0], reason="interrupted")


def test_a_study_written_by_the_previous_layout_still_reads(tmp_path):
    """Layout 1 wrote the final model's test numbers as study attrs of their own, the retry origin as retry_of, and no
    outcome: a failed trial's kind was its reason's words."""
    storage = open_storage(f"sqlite:///{tmp_path / 'old.db'}", heartbeat=False)
    study = optuna.create_study(study_name="old", storage=storage, direction="maximize")
    old_study_attrs = {"artifact_store": "/a", "labels": ["x", "y"], "fingerprints": {"model": "m"}, "settings": {"model": "m"},
                       "final": {"files": {"report.json": "id"}, "trial": 2, "time": "t"}, "test_accuracy": 0.9,
                       "test_accuracy_ci95": [0.88, 0.92], "test_macro_f1": 0.8, "seeds": [0]}
    for key, value in old_study_attrs.items():
        study.set_user_attr(key, value)
    interrupted = study.ask({"x": FloatDistribution(0, 1)})
    interrupted.set_user_attr("fail_reason", "interrupted (Ctrl-C or SIGTERM)")
    study.tell(interrupted, state=TrialState.FAIL)
    retry = study.ask({"x": FloatDistribution(0, 1)})
    retry.set_user_attr("retry_of", 0)
    retry.set_user_attr("retried_because", "no heartbeat")
    study = optuna.load_study(study_name="old", storage=storage)
    record = records.StudyRecord.read(study)
    assert record.layout == 1 and record.labels == ("x", "y") and record.max_length is None
    final = records.FinalRecord.read(study)
    assert (final.trial, final.test_accuracy, final.test_accuracy_ci95, final.seeds) == (2, 0.9, [0.88, 0.92], [0])
    assert records.outcome(study.trials[0]) == Outcome.INTERRUPTED
    assert records.Retry.read(study.trials[1]) == records.Retry(of=0, history=[0], reason="no heartbeat")


def test_report_after_final_names_the_retrained_trial_and_its_test_accuracy(finished_study, capsys):
    from study import report

    where = ["--storage", finished_study["storage"], "--study-name", "done"]
    assert report.main(where) == 0
    final = records.FinalRecord.read(optuna.load_study(study_name="done", storage=finished_study["storage"]))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("final:"))
    assert line.startswith(f"final: trial {final.trial} retrained") and f"test accuracy {final.test_accuracy:.4f}" in line
    assert report.main([*where, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["final"]["trial"] == final.trial


# -- no attr key outside the records module ---------------------------------------------------------------------------

ATTR_CALLS = {"set_user_attr", "set_system_attr", "set_trial_user_attr", "set_trial_system_attr", "set_study_user_attr",
              "set_study_system_attr", "get_trial_user_attrs", "get_trial_system_attrs", "get_study_user_attrs",
              "get_study_system_attrs"}
ATTR_FIELDS = {"user_attrs", "system_attrs"}


def attr_uses(source: str) -> list[str]:
    """Where ``source`` reads or writes an Optuna attr itself: a call of a setter or getter, or a ``user_attrs`` /
    ``system_attrs`` field; a function passed on (StoredTrial's storage) is not a use."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ATTR_CALLS:
            found.append(f"line {node.lineno}: .{node.func.attr}(...)")
        elif isinstance(node, ast.Attribute) and node.attr in ATTR_FIELDS:
            found.append(f"line {node.lineno}: .{node.attr}")
        elif isinstance(node, ast.keyword) and node.arg in ATTR_FIELDS:
            found.append(f"line {node.lineno}: {node.arg}=")
    return found


def test_no_module_but_records_reads_or_writes_an_attr_key():
    offenders = {}
    for path in sorted((ROOT / "study").rglob("*.py")):
        if path.name == "records.py":
            continue
        uses = attr_uses(path.read_text())
        if uses:
            offenders[str(path.relative_to(ROOT))] = uses
    assert not offenders, f"attr keys outside study/records.py: {offenders}"


def test_no_bare_key_string_of_a_record_outside_records():
    keys = {"fail_reason", "retry_of", "retried_because", "final_trial", "artifact_store", "fingerprints",
            "outcome", "evidence", "checkpoint", "worker"}
    offenders = []
    for path in sorted((ROOT / "study").rglob("*.py")):
        if path.name == "records.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant) and node.slice.value in keys:
                offenders.append(f"{path.name}:{node.lineno} [{node.slice.value!r}]")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" and node.args \
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in keys:
                offenders.append(f"{path.name}:{node.lineno} .get({node.args[0].value!r})")
    assert not offenders, offenders


def test_the_checker_sees_an_attr_use():
    assert attr_uses("trial.set_user_attr('fail_reason', 'x')") and attr_uses("t.user_attrs.get('variant')")
    assert attr_uses("optuna.trial.create_trial(user_attrs={'a': 1})")
    assert not attr_uses("records.Failure(kind, reason).write(trial)")
