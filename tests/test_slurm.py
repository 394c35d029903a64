"""emotion-study under a real Slurm (tests/slurm.py starts a one-node cluster): deploy/slurm/emotion-study.sbatch as an
array job whose tasks are the workers of one study in the test PostgreSQL, with a folder as the shared artifact store.

- Two array tasks share a study and finish exactly its total, both running trials.
- A task signalled mid-trial as Slurm does before a time limit (SIGTERM to its batch shell) stops its trial, is requeued
  by the script, and a retry continues the trial from its checkpoint; the study still ends with exactly its total.

Each test prints its steps with wall times (pytest -s shows them). Every wait is bounded and fails with the task logs.
"""

import os
import re
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study import records
from tests.cluster import postgres_url_or_skip, sqlalchemy_url
from tests.slurm import FINAL_STATES, slurm_cluster

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "slurm" / "emotion-study.sbatch"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Small trials: 6 steps per epoch, an evaluation and a checkpoint every 2 steps; every --trials trial runs (no stop rule).
SMALL = "--batch-size 16 --max-train-samples 96 --max-eval-samples 30 --pruner none --patience 0"


class Clock:
    """Prints each step with the seconds since the test began."""

    def __init__(self):
        self.start = time.monotonic()

    def step(self, what: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {what}", flush=True)


def job_env(tiny_model, data_folder, url, name, root: Path, trials: int, extra: str, python: str | None = None) -> dict[str, str]:
    """The environment sbatch passes on to the job: the script's EMOTION_* settings, offline hubs, this project's code."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(ROOT), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "EMOTION_STORAGE": url, "EMOTION_ARTIFACT_STORE": str(root / "shared-store"), "EMOTION_MODEL": tiny_model,
           "EMOTION_DATA": data_folder, "EMOTION_TRIALS": str(trials), "EMOTION_STUDY_NAME": name,
           "EMOTION_OUTPUT_DIR": str(root / "out"), "EMOTION_EXTRA_ARGS": extra}
    env.pop("EMOTION_PYTHON", None)
    if python:
        env["EMOTION_PYTHON"] = python
    return env


def submit_dir(root: Path) -> Path:
    """The folder sbatch runs in: the script's --output puts the task logs in its logs/, which Slurm does not make."""
    (root / "submit" / "logs").mkdir(parents=True)
    return root / "submit"


def task_log(folder: Path, task: str) -> str:
    path = folder / "logs" / f"emotion-study-{task}.out"
    return path.read_text(errors="replace") if path.exists() else ""


def all_logs(folder: Path) -> str:
    return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted((folder / "logs").glob("*.out")))


def load(url, name):
    return optuna.load_study(study_name=name, storage=sqlalchemy_url(url))


def retry_of(trial):
    retry = records.Retry.read(trial)
    return retry.of if retry is not None else None


def task_of(pid: int) -> str:
    """The array task ("JOB_TASK") that the process ``pid`` of this host runs in, from the environment Slurm gave it."""
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError as error:
        pytest.fail(f"cannot read the environment of worker {pid}: {error}")
    env = dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
    return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"


def test_an_array_job_of_two_tasks_shares_one_study_and_finishes_exactly_its_total(tiny_model, data_folder, tmp_path):
    clock = Clock()
    with postgres_url_or_skip() as (url, prefix), slurm_cluster() as slurm:
        clock.step(f"one-node Slurm up ({slurm.conf}); node {slurm.node_state()}")
        folder, name = submit_dir(tmp_path), prefix + "array"
        # The `emotion-study` console script on PATH runs the workers (EMOTION_PYTHON unset).
        env = job_env(tiny_model, data_folder, url, name, tmp_path, 6, f"--epochs 1 {SMALL}")
        job = slurm.submit(SCRIPT, env, array="0-1", cwd=folder, options=["--cpus-per-task=1"])
        clock.step(f"submitted job {job}: array 0-1, --trials 6 on PostgreSQL, study {name}")
        deadline = time.monotonic() + 60
        while (states := set(slurm.tasks(job).values())) != {"RUNNING"}:
            if time.monotonic() > deadline or states & FINAL_STATES:
                pytest.fail(f"both tasks did not run side by side within 60s: {slurm.tasks(job)}{all_logs(folder)}")
            time.sleep(0.5)
        clock.step(f"both tasks running: {slurm.tasks(job)}")

        states = slurm.wait_until_done(job, 180, folder / "logs")
        clock.step(f"job done: {states}")
        assert states == {f"{job}_0": "COMPLETED", f"{job}_1": "COMPLETED"}, all_logs(folder)

        study = load(url, name)
        finished = study.get_trials(states=FINISHED)
        assert len(finished) == 6, [(t.number, records.outcome(t).value) for t in study.trials]  # exactly the total
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        workers = {records.Worker.read(t).pid for t in finished}
        clock.step(f"study holds {len(finished)} finished trials, none running; worker pids {sorted(workers)}")
        assert len(workers) == 2, all_logs(folder)  # both array tasks ran trials
        for task in states:
            log = task_log(folder, task)
            assert re.search(r"trial +\d+ (COMPLETE|PRUNED)", log) and "worker exited 0" in log, all_logs(folder)
        clock.step("each task's log shows a finished trial and exit 0")


def test_a_task_signalled_mid_trial_is_requeued_and_its_trial_continues_from_its_checkpoint(tiny_model, data_folder, tmp_path):
    clock = Clock()
    trials = 3
    with postgres_url_or_skip() as (url, prefix), slurm_cluster() as slurm:
        clock.step(f"one-node Slurm up ({slurm.conf}); node {slurm.node_state()}")
        folder, name = submit_dir(tmp_path), prefix + "requeue"
        # 10 epochs: 60 steps, a checkpoint every 2, leave time to signal a trial after its first checkpoint. This time
        # the workers are `$EMOTION_PYTHON -m study.run`, the script's other way.
        env = job_env(tiny_model, data_folder, url, name, tmp_path, trials, f"--epochs 10 {SMALL}", python=sys.executable)
        job = slurm.submit(SCRIPT, env, array="0-1", cwd=folder, options=["--cpus-per-task=1"])
        clock.step(f"submitted job {job}: array 0-1, --trials {trials}, --epochs 10, study {name}")

        def a_running_trial_with_a_stored_checkpoint():
            try:
                running = load(url, name).get_trials(states=(TrialState.RUNNING,))
            except KeyError:  # the study is not made yet
                return None
            return next((t for t in running if records.Checkpoint.read(t) is not None), None)

        deadline = time.monotonic() + 150
        while (victim := a_running_trial_with_a_stored_checkpoint()) is None:
            states = slurm.tasks(job)
            if time.monotonic() > deadline or (states and set(states.values()) <= FINAL_STATES):
                pytest.fail(f"no running trial stored a checkpoint within 150s (tasks: {states}){all_logs(folder)}")
            time.sleep(0.2)
        checkpoint = records.Checkpoint.read(victim)
        task = task_of(records.Worker.read(victim).pid)
        clock.step(f"trial {victim.number} (task {task}) stored {checkpoint.folder}; SIGTERM to the task's batch shell")
        slurm.signal(task, "TERM")  # scancel --signal=TERM --batch: what --signal=B:TERM@120 sends before the time limit

        deadline = time.monotonic() + 90
        while int(slurm.info(task).get("Restarts", 0)) < 1:
            if time.monotonic() > deadline:
                pytest.fail(f"task {task} was not requeued within 90s: {slurm.info(task)}{all_logs(folder)}")
            time.sleep(0.5)
        clock.step(f"task {task} requeued by its script: {slurm.info(task)['JobState']}, restarts {slurm.info(task)['Restarts']}")
        deadline = time.monotonic() + 90
        while "SLURM_RESTART_COUNT=1" not in task_log(folder, task):  # the script's header, once it starts again
            if time.monotonic() > deadline:
                pytest.fail(f"requeued task {task} did not start again within 90s: {slurm.tasks(job)}{all_logs(folder)}")
            time.sleep(0.5)
        clock.step(f"task {task} runs again (SLURM_RESTART_COUNT=1)")

        states = slurm.wait_until_done(job, 240, folder / "logs")
        clock.step(f"job done: {states}")
        assert set(states.values()) == {"COMPLETED"}, all_logs(folder)

        study = load(url, name)
        stopped = study.trials[victim.number]
        assert records.outcome(stopped) == records.Outcome.INTERRUPTED, (records.fail_reason(stopped), all_logs(folder))
        (retry,) = [t for t in study.trials if retry_of(t) == victim.number]
        step = records.TrialResult.read(retry).resumed_from_step
        where = task_of_log(folder, states, f"trial {retry.number} continues trial {victim.number} from step {step}")
        clock.step(f"trial {retry.number} continued trial {victim.number} from step {step} (in task {where}): {retry.state.name}")
        assert retry.state in FINISHED and retry.params == stopped.params
        assert step > 0, all_logs(folder)  # from the checkpoint in the shared store, not from scratch
        assert where is not None, all_logs(folder)
        assert len(study.get_trials(states=FINISHED)) == trials  # exactly the total
        assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))
        log = task_log(folder, task)
        assert "SIGTERM: passed on to the worker" in log and "worker exited 130" in log and "requeueing task" in log, log
        assert "SLURM_RESTART_COUNT=1" in log and "worker exited 0" in log, log
        clock.step(f"study holds exactly {trials} finished trials; task {task}'s log shows exit 130, the requeue and exit 0")


def task_of_log(folder: Path, tasks, line: str) -> str | None:
    """The task whose log has ``line``."""
    return next((task for task in tasks if line in task_log(folder, task)), None)
