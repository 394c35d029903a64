"""An interrupted study loses nothing, workers share a study, failing trials and bad input never break it.

The kill and Ctrl-C tests run `python -m study.run` as a real subprocess and send it real signals.
"""

import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState

from study import records, run
from study._backends import open_storage
from study._opened import OpenedStudy
from study._backends.heartbeat import JournalFileStorage
from study._trials.liveness import fail_stale_trials
from tests.conftest import study_dir, wait_while_running

ROOT = Path(__file__).resolve().parents[1]
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
POSTGRES = os.environ.get("EMOTION_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
# Small trials: 6 steps per epoch, an evaluation (and a checkpoint) every 2 steps.
SMALL = ["--max-train-samples", "96", "--max-eval-samples", "30", "--pruner", "none"]
# For the kill and Ctrl-C tests: 6 epochs (36 steps, a checkpoint every 2) leave seconds between a trial's first
# checkpoint and its end, for the signal to land mid-trial on a slow or busy machine.
LONGER = ["--epochs", "6"]


def retry_of(trial):
    retry = records.Retry.read(trial)
    return retry.of if retry is not None else None


def value_of(args, flag):
    return args[args.index(flag) + 1]


def load(args):
    return optuna.load_study(study_name=value_of(args, "--study-name"), storage=value_of(args, "--storage"))


ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def command(args) -> list[str]:
    return [sys.executable, "-m", "study.run", *args]


def start(args) -> subprocess.Popen:
    return subprocess.Popen(command(args), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(process: subprocess.Popen, args: list[str], number: int, timeout: float = 180) -> None:
    """Until trial ``number`` has a checkpoint a retry can resume from: saved, put in the artifact store and pointed to
    by the trial (a kill between the local save and the pointer leaves the retry nothing to resume from). The study is
    loaded once and then only queried: loading it anew each time was slow enough to miss a short trial."""
    study = None

    def stored() -> bool:
        nonlocal study
        try:
            study = study or load(args)
            trials = study.get_trials(deepcopy=False)
            return len(trials) > number and records.Checkpoint.read(trials[number]) is not None
        except (KeyError, optuna.exceptions.StorageInternalError, sqlalchemy.exc.SQLAlchemyError):  # no study yet, or a write holds the file
            return False

    wait_while_running(process, stored, timeout, f"trial {number} stored a checkpoint")


def snapshot(study):
    return {t.number: (t.state, t.value, t.params, t.intermediate_values) for t in study.get_trials(states=FINISHED)}


def test_kill_9_mid_trial_then_the_same_command_finishes_the_study(study_args, tmp_path):
    args = ["--trials", "4", *SMALL, *study_args, *LONGER]
    checkpoints = study_dir(args) / "checkpoints"
    process = start(args)
    wait_for_checkpoint(process, args, 2)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    before = snapshot(load(args))
    assert sorted(before) == [0, 1]
    assert load(args).trials[2].state == TrialState.RUNNING

    rerun = subprocess.run(command(args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "trial 2 was left running by a process that died" in rerun.stdout

    study = load(args)
    after = snapshot(study)
    assert len(after) == 4  # exactly the total asked for
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
    assert {n: after[n] for n in before} == before  # what finished before the kill is unchanged
    assert study.trials[2].state == TrialState.FAIL
    (retried,) = [t for t in study.trials if retry_of(t) == 2]
    assert retried.state == TrialState.COMPLETE and retried.params == study.trials[2].params
    assert retried.user_attrs["resumed_from_step"] >= 2  # it continued from trial 2's checkpoint (the first is at step 2)
    assert sorted(retried.intermediate_values) == list(range(2, 37, 2))  # every report, those before the kill included
    assert not list(checkpoints.glob("trial-*"))  # finished trials leave no checkpoint behind
    assert not list(Path(study.user_attrs["artifact_store"]).glob("checkpoints-*"))  # nor in the artifact store
    params = [str(sorted(t.params.items())) for t in study.get_trials(states=FINISHED)]
    assert len(set(params)) == 4  # the rerun's sampler does not propose the first run's parameters again


def test_ctrl_c_marks_the_trial_failed_and_says_how_to_resume(study_args, tmp_path):
    args = ["--trials", "3", *SMALL, *study_args, *LONGER]
    process = start(args)
    wait_for_checkpoint(process, args, 1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "emotion-study run --trials 3" in err and "resume" in err
    study = load(args)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    interrupted = study.trials[1]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["fail_reason"].startswith("interrupted")
    (queued,) = study.get_trials(states=(TrialState.WAITING,))  # the rerun continues it from its checkpoint
    assert queued.params == interrupted.params and queued.system_attrs["failed_trial"] == 1
    summary = subprocess.run([sys.executable, "-m", "study.report", "--storage", value_of(args, "--storage"), "--json"], cwd=ROOT, env=ENV,
                             capture_output=True, text=True, timeout=120)
    assert json.loads(summary.stdout)["counts"] == {"complete": 1, "interrupted": 1, "waiting": 1}  # not counted as failed


def postgres_or_skip(url: str):
    """The test PostgreSQL as an Optuna storage, or a skip that says why."""
    try:
        return open_storage(url, heartbeat=False)
    except Exception as error:
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES} ({error}); start it to run the worker test")


def test_three_workers_on_postgresql_finish_exactly_the_total_and_never_show_the_password(study_args, tmp_path, capfd):
    # With trust authentication the server ignores the password; what matters is that nothing shows it.
    url = POSTGRES.replace("://postgres@", "://postgres:s3cret-pw@")
    storage = postgres_or_skip(url)
    name = f"workers-{uuid.uuid4().hex[:8]}"
    args = list(study_args)
    args[args.index("--storage") + 1] = url
    args[args.index("--study-name") + 1] = name
    try:
        assert run.main(["--trials", "9", "--workers", "3", "--epochs", "1", *SMALL, *args]) == 0
        study = optuna.load_study(study_name=name, storage=storage)
        trials = study.get_trials()
        assert len(study.get_trials(states=FINISHED)) == 9
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        assert len({t.number for t in trials}) == len(trials)
        assert len({records.Worker.read(t).pid for t in trials}) == 3  # the three processes shared the work

        from study import final

        assert final.main(["--storage", url, "--study-name", name, "--output-dir", str(tmp_path / "out")]) == 0
        reports = {p.name: p.read_text() for p in (study_dir(url, str(tmp_path / "out"), name) / "final").glob("report.*")}
        assert len(reports) == 2 and not any("s3cret-pw" in r for r in reports.values())
        assert "postgres:***@" in reports["report.json"]
        out, err = capfd.readouterr()  # this command's own lines (workers forked from a server write where it does)
        assert "9 complete" in out and "s3cret-pw" not in out + err
    finally:
        if name in optuna.get_all_study_names(storage):
            optuna.delete_study(study_name=name, storage=storage)


def test_a_journal_file_has_a_heartbeat_and_retries_a_trial_whose_process_died(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = JournalFileStorage(str(tmp_path / "s.journal"), 1, 1, RetryHeartbeatStaleTrialCallback(max_retry=3))
    assert isinstance(open_storage(str(tmp_path / "other.journal")), JournalFileStorage)
    study = optuna.create_study(storage=storage)
    trial = study.ask({"x": FloatDistribution(0, 1)})
    storage.record_heartbeat(OpenedStudy(storage, study, None).trial_id(trial.number))  # then its process "dies": no more heartbeats
    study_id = storage.get_study_id_from_name(study.study_name)
    assert storage.stale_trial_ids(study_id) == []
    time.sleep(2.2)
    fail_stale_trials(OpenedStudy(storage, study, None))
    dead, queued = study.get_trials()
    assert dead.state == TrialState.FAIL and queued.state == TrialState.WAITING
    assert queued.system_attrs["failed_trial"] == 0 and queued.params == dead.params
    retried = study.ask()  # the retry runs: the heartbeat it inherited from the dead trial does not make it stale
    assert retried.number == 1 and storage.stale_trial_ids(study_id) == []


def test_twenty_trials_in_one_process_do_not_grow_memory_and_failures_do_not_stop_the_study(study_args):
    storage = value_of(study_args, "--storage")
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    study.enqueue_trial({"lora_dropout": 1.5})  # torch refuses it while the model is built: the trial fails
    study.enqueue_trial({"learning_rate": 1e4})  # the loss becomes NaN or inf: the trial is pruned as diverged
    args = ["--trials", "20", "--epochs", "1", "--sampler", "random", *SMALL, "--max-train-samples", "48", "--max-eval-samples", "12", *study_args]
    assert run.main(args) == 0
    study = load(args)
    failed, diverged = study.trials[0], study.trials[1]
    assert failed.state == TrialState.FAIL and "dropout probability" in failed.user_attrs["fail_reason"]
    assert diverged.state == TrialState.PRUNED and "loss became" in diverged.user_attrs["fail_reason"]
    finished = study.get_trials(states=FINISHED)
    assert len(finished) == 20
    peaks = [t.user_attrs["peak_rss_mib"] for t in finished if "peak_rss_mib" in t.user_attrs]
    first, last = statistics.median(peaks[:5]), statistics.median(peaks[-5:])
    print(f"peak RSS MiB, first 5 trials: {peaks[:5]}, last 5: {peaks[-5:]}")
    assert last <= first * 1.05, (peaks[:5], peaks[-5:])


def test_a_truncated_checkpoint_is_removed_and_its_retry_starts_from_step_0_saying_why(study_args, tmp_path):
    args = ["--trials", "2", *SMALL, *study_args, *LONGER]
    process = start(args)
    wait_for_checkpoint(process, args, 0)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    pointer = records.Checkpoint.read(load(args).trials[0])
    archive = Path(records.StudyRecord.read(load(args)).artifact_store) / pointer.artifact_id
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])  # a half-written upload

    rerun = subprocess.run(command(args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    line = next(line for line in rerun.stdout.splitlines() if "continues trial 0" in line)
    assert f"from step 0: its checkpoint {pointer.artifact_id} cannot be read (ReadError" in line and "so it was removed" in line
    study = load(args)
    (retried,) = [t for t in study.trials if retry_of(t) == 0]
    assert retried.state == TrialState.COMPLETE and records.TrialResult.read(retried).resumed_from_step == 0
    assert not archive.exists()
    log = (study_dir(args) / "errors.log").read_text()
    assert "checkpoint of trial 0 unreadable" in log and "tarfile.ReadError" in log
    assert len(study.get_trials(states=FINISHED)) == 2
