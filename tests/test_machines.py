"""Many machines, one study: each "machine" is its own copy of the project under its own host name (tests/cluster.py),
with its own output folder and its own copy of the model and data at its own path; they share one PostgreSQL study
and an artifact store (a folder standing for a shared filesystem, or an S3 server on 127.0.0.1)."""

import json
import shutil
import signal
import socket
import sys
import time
import urllib.request

import optuna
import pytest
from optuna.trial import TrialState

from study import records
from tests import cluster
from tests.cluster import TcpProxy, postgres_url_or_skip, s3_server, sqlalchemy_url

machines = cluster.machines
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def retry_of(trial):
    retry = records.Retry.read(trial)
    return retry.of if retry is not None else None


def study_flags(machine, tiny_model, data_folder, url, name, store, trials, *extra) -> list[str]:
    """A small study on ``machine``: its own copy of the model and data, at a path of its own."""
    model, data = machine.home / "models" / "tiny", machine.home / "data" / "emotion"
    if not model.exists():
        shutil.copytree(tiny_model, model)
        shutil.copytree(data_folder, data)
    flags = {"--trials": trials, "--model": model, "--data": data, "--epochs": 2, "--batch-size": 16, "--max-train-samples": 96,
             "--max-eval-samples": 30, "--pruner": "none", "--storage": url, "--study-name": name,
             "--output-dir": machine.output_dir, "--artifact-store": store}
    return [sys.executable, "-m", "study.run", *(str(x) for item in flags.items() for x in item), *map(str, extra)]  # later flags win


def wait(processes, timeout=600):
    deadline = time.monotonic() + timeout
    for process in processes:
        process.wait(timeout=max(1, deadline - time.monotonic()))


def load(url, name):
    return optuna.load_study(study_name=name, storage=sqlalchemy_url(url))


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout}s")
        time.sleep(0.05)


def test_two_machines_started_together_propose_distinct_parameters_and_share_the_work(machines, tiny_model, data_folder, tmp_path):
    with postgres_url_or_skip() as (url, prefix):
        a, b = machines("machine-a", "machine-b")
        name, store = prefix + "together", tmp_path / "shared-store"
        processes = [m.popen(study_flags(m, tiny_model, data_folder, url, name, store, 8)) for m in (a, b)]  # the same instant
        wait(processes)
        for machine, process in zip((a, b), processes):
            assert process.returncode == 0, machine.output(process)
        trials = load(url, name).get_trials()
        finished = [t for t in trials if t.state in FINISHED]
        assert len(finished) == 8
        assert len({json.dumps(t.params, sort_keys=True) for t in trials}) == len(trials)  # no two trials alike
        assert {records.Worker.read(t).host for t in finished} == {"machine-a", "machine-b"}  # both did work


def test_a_killed_machines_trial_continues_on_the_other_from_its_checkpoint_in_the_shared_store(machines, tiny_model, data_folder, tmp_path):
    with postgres_url_or_skip() as (url, prefix), s3_server() as s3:
        a, b = machines("machine-a", "machine-b")
        name, store = prefix + "killed", f"s3://{s3.bucket}/studies/kill"  # a prefix: the store is the bucket's sub-folder
        flags = {m: study_flags(m, tiny_model, data_folder, url, name, store, 6, "--epochs", 4) for m in (a, b)}
        a.popen(flags[a], env=s3.env)

        def a_trial_with_a_stored_checkpoint():
            try:
                return next(t for t in load(url, name).get_trials(states=(TrialState.RUNNING,)) if "checkpoint" in t.user_attrs)
            except (KeyError, StopIteration):
                return None

        wait_until(a_trial_with_a_stored_checkpoint, 240, "a checkpoint of machine-a in the store")
        victim = a_trial_with_a_stored_checkpoint()
        a.kill()  # SIGKILL, mid-trial
        killed_at = time.monotonic()
        survivor = b.popen(flags[b], env=s3.env)
        wait([survivor])
        assert survivor.returncode == 0, b.output(survivor)
        study = load(url, name)
        assert len(study.get_trials(states=FINISHED)) == 6  # exactly the total
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        dead = study.trials[victim.number]
        assert dead.state == TrialState.FAIL and "machine-a" in dead.user_attrs["fail_reason"]
        (retry,) = [t for t in study.trials if retry_of(t) == victim.number]
        assert retry.state in FINISHED and retry.params == dead.params and records.Worker.read(retry).host == "machine-b"
        assert retry.user_attrs["resumed_from_step"] > 0  # it continued from machine-a's checkpoint, fetched from S3
        listed = s3.client().list_objects_v2(Bucket=s3.bucket, Prefix="studies/kill/").get("Contents", [])
        assert not [o["Key"] for o in listed if "checkpoints-" in o["Key"]]  # finished trials leave no checkpoint behind
        print(f"machine-a killed; its trial {victim.number} retried as {retry.number} from step {retry.user_attrs['resumed_from_step']}, "
              f"study done {time.monotonic() - killed_at:.1f}s after the kill")


def test_a_database_cut_and_a_stalled_machine_lose_nothing(machines, tiny_model, data_folder, tmp_path):
    """machine-a reaches PostgreSQL through a proxy that is cut for 60 s; machine-b is stopped (SIGSTOP) for 90 s, longer
    than the 60 s grace period, so machine-a takes its trial for dead and retries it; neither crashes."""
    with postgres_url_or_skip() as (url, prefix), TcpProxy(url) as proxy:
        a, b = machines("machine-a", "machine-b")
        name, store = prefix + "outage", tmp_path / "shared-store"
        processes = {a: a.popen(study_flags(a, tiny_model, data_folder, proxy.url, name, store, 8, "--epochs", 6)),
                     b: b.popen(study_flags(b, tiny_model, data_folder, url, name, store, 8, "--epochs", 6))}

        def both_running():
            try:
                running = load(url, name).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # not made yet
                return False
            return {"machine-a", "machine-b"} <= {t.user_attrs.get("worker", {}).get("host") for t in running}

        wait_until(both_running, 240, "a trial running on each machine")
        proxy.cut("reset")
        b.freeze()
        time.sleep(60)
        proxy.restore()
        time.sleep(30)
        b.thaw()
        wait(processes.values())
        for machine, process in processes.items():
            out, err = machine.output(process)
            assert process.returncode == 0, (machine.name, out[-3000:], err[-3000:])
        out_a, err_a = a.output(processes[a])
        out_b, _ = b.output(processes[b])
        assert "storage unreachable" in err_a and "storage reachable again" in err_a
        assert "result dropped: another worker took it for dead" in out_b
        study = load(url, name)
        assert len(study.get_trials(states=FINISHED)) == 8
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        taken = [t for t in study.trials if t.state == TrialState.FAIL and "no heartbeat from host machine-b" in t.user_attrs.get("fail_reason", "")]
        assert taken and all(any(retry_of(r) == t.number and r.state in FINISHED for r in study.trials) for t in taken)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_final_on_one_machine_then_predict_and_the_dashboard_on_another(machines, tiny_model, data_folder, tmp_path):
    with postgres_url_or_skip() as (url, prefix), s3_server() as s3:
        a, b = machines("machine-a", "machine-b")
        name, store = prefix + "final", f"s3://{s3.bucket}"
        done = a.run(study_flags(a, tiny_model, data_folder, url, name, store, 2, "--variant", "head"), env=s3.env)
        assert done.returncode == 0, done.stderr
        final = a.run([sys.executable, "-m", "study.final", "--storage", url, "--study-name", name, "--output-dir", a.output_dir], env=s3.env)
        assert final.returncode == 0, final.stderr

        # machine-b has its own copy of the model elsewhere, and none of machine-a's files.
        model_b = b.home / "elsewhere" / "tiny"
        shutil.copytree(tiny_model, model_b)
        predicted = b.run([sys.executable, "-m", "study.predict", "--storage", url, "--study-name", name, "--output-dir", b.output_dir,
                           "--model", model_b, "i feel happy", "the news made me feel scared"], env=s3.env)
        assert predicted.returncode == 0, predicted.stderr
        rows = [line.split("\t") for line in predicted.stdout.splitlines()]
        assert [text for _, _, text in rows] == ["i feel happy", "the news made me feel scared"] and all(float(p) > 0 for _, p, _ in rows)

        report = b.run([sys.executable, "-m", "study.report", "--storage", url, "--study-name", name, "--output-dir", b.output_dir], env=s3.env)
        assert report.returncode == 0, report.stderr
        command = next(line.split(": ", 1)[1] for line in report.stdout.splitlines() if line.startswith("dashboard:"))
        assert "--from-config" in command  # an S3 store: the dashboard reads the bucket from a config file
        port = free_port()
        dashboard = b.popen([*command.split(), "--host", "127.0.0.1", "--port", str(port)], env=s3.env)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda: _answers(f"{base}/api/meta"), 60, "the dashboard")
            studies = json.load(urllib.request.urlopen(f"{base}/api/studies"))["study_summaries"]
            study_id = next(s["study_id"] for s in studies if s["study_name"] == name)
            artifacts = json.load(urllib.request.urlopen(f"{base}/api/studies/{study_id}?after=0"))["artifacts"]
            assert {"report.json", "confusion_matrix.png", "trained.safetensors"} <= {x["filename"] for x in artifacts}
            for artifact in artifacts:  # every artifact of the study is served
                with urllib.request.urlopen(f"{base}/artifacts/{study_id}/{artifact['artifact_id']}") as response:
                    assert response.status == 200 and response.read()
        finally:
            b.signal(signal.SIGKILL, dashboard)


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=2)
        return True
    except OSError:
        return False


def test_a_machine_given_only_the_storage_and_the_study_name_joins_with_the_stored_definition(machines, tiny_model, data_folder, tmp_path):
    with postgres_url_or_skip() as (url, prefix):
        a, b = machines("machine-a", "machine-b")
        name, store = prefix + "by-name", tmp_path / "shared-store"
        # Machine a defines the study (a head study on 96 sentences, 12 trials) and starts no trial after its first second: a
        # head trial on the tiny model takes a fraction of a second, so a leaves some of the 12 to b.
        made = a.run(study_flags(a, tiny_model, data_folder, url, name, store, 12, "--variant", "head", "--patience", "0", "--timeout", "1"))
        assert made.returncode == 0, made.stderr
        by_a = len([t for t in load(url, name).get_trials() if t.state in FINISHED])
        assert 1 <= by_a < 12
        joined = b.run([sys.executable, "-m", "study.run", "--storage", url, "--study-name", name, "--output-dir", str(b.output_dir)])
        assert joined.returncode == 0, joined.stderr
        finished = [t for t in load(url, name).get_trials() if t.state in FINISHED]
        assert len(finished) == 12  # the stored total, not the default 30
        by_b = [t for t in finished if records.Worker.read(t).host == "machine-b"]
        assert len(by_b) == 12 - by_a
        assert {records.TrialStart.read(t).variant for t in by_b} == {"head"}
        assert {records.TrialResult.read(t).n_train for t in by_b} == {96} and {records.TrialResult.read(t).n_validation for t in by_b} == {30}
        # A machine that brings another definition is refused, naming what differs.
        other = b.run([sys.executable, "-m", "study.run", "--storage", url, "--study-name", name, "--variant", "lora", "--epochs", "3",
                       "--trials", "6", "--output-dir", str(b.output_dir)])
        assert other.returncode == 2 and "--variant: stored 'head', given 'lora'" in other.stderr and "--epochs" in other.stderr
