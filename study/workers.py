"""Running the trials of a study: the loop of one worker, and --workers K processes sharing one study.

Every worker runs trials until the study holds the requested total of finished trials. It starts a trial (a queued
one first: a retry, or one enqueued by hand) only while finished + running trials fall short of the total, and a
trial that still turns out one too many (two workers started at the same moment) fails at once as not needed: the
total is exact whatever the number of workers.
While the last trials run elsewhere a worker waits, since one of them may fail and need replacing.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import numpy as np
import optuna
from optuna.trial import TrialState

from study.objective import TrialFailed
from study.settings import StudySettings
from study.storage import WORKER_ATTR, fail_stale_trials, recover_dead_trials, retry, runs_in_this_process, worker_identity

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A worker gives up after this many failed trials in a row: a broken setup should not loop for ever.
MAX_CONSECUTIVE_FAILURES = 3
POLL_S = 1.0
INTERRUPTED = "interrupted (Ctrl-C or SIGTERM)"
SIGNALS = (signal.SIGINT, signal.SIGTERM)
NOT_NEEDED = "not needed: the study already had its total of finished and running trials"


class TrialsKeepFailing(RuntimeError):
    """Several trials in a row failed: the setup, not the parameters, is likely at fault."""


# A KeyboardInterrupt raised inside a storage call can leave its transaction open: a SQLite write lock that nothing
# rolls back, on which the next write (marking the trial failed) then waited for ever (seen in 1 of 17 Ctrl-C runs, and
# 2 more of them exited 1). A signal that comes during one is acted on when it returns.
_STORAGE_MODULES = ("sqlalchemy.", "optuna.storages.", "sqlite3")
_RETRY_S = 0.05


def _in_storage_call(frame) -> bool:
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(_STORAGE_MODULES):
            return True
        frame = frame.f_back
    return False


@contextmanager
def stop_on_first_signal():
    """Ctrl-C, or SIGTERM (how a machine is preempted), raises KeyboardInterrupt once, outside storage calls; later
    ones are ignored, so that the cleanup that marks the trial failed runs to its end."""
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    retry_signal = getattr(signal, "SIGALRM", None) if hasattr(signal, "setitimer") else None
    pending = False

    def handler(signum, frame):
        nonlocal pending
        if signum == retry_signal and not pending:  # an alarm that is not ours
            return
        pending = True
        if retry_signal is not None and _in_storage_call(frame):
            signal.setitimer(signal.ITIMER_REAL, _RETRY_S)  # back here once the storage call is over
            return
        for number in installed:
            signal.signal(number, signal.SIG_IGN)
        raise KeyboardInterrupt

    previous = {number: signal.getsignal(number) for number in (*SIGNALS, retry_signal) if number is not None}
    # A process started to ignore a signal (nohup, &) keeps ignoring it.
    installed = [number for number, action in previous.items() if action is not signal.SIG_IGN or number == retry_signal]
    for number in installed:
        signal.signal(number, handler)
    try:
        yield
    finally:
        if retry_signal is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for number, action in previous.items():
            signal.signal(number, action)


class _Guarded:
    """The objective, plus what a shared study needs: this process's name on the trial, and the not-needed check."""

    def __init__(self, objective: Callable, total: int):
        self.objective = objective
        self.total = total
        self.current: int | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        self.current = trial.number
        trial.set_user_attr(WORKER_ATTR, worker_identity(trial.number))
        before = [t for t in trial.study.get_trials(deepcopy=False) if t.number < trial.number and t.state != TrialState.FAIL]
        if len(before) >= self.total:
            trial.set_user_attr("fail_reason", NOT_NEEDED)
            raise TrialFailed(NOT_NEEDED)
        try:
            return self.objective(trial)
        except KeyboardInterrupt:
            trial.set_user_attr("fail_reason", INTERRUPTED)
            raise


def _mark_interrupted(study: optuna.Study, storage, current: int | None) -> None:
    """After Ctrl-C or SIGTERM: no trial of this process stays RUNNING, and the interrupted one is queued to continue from its
    checkpoint when the command is run again."""
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)):
        if not runs_in_this_process(trial):
            continue
        if trial.state == TrialState.RUNNING:  # the signal came while Optuna itself was busy with the trial
            try:
                storage.set_trial_user_attr(trial._trial_id, "fail_reason", INTERRUPTED)
                storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        elif trial.number != current or trial.user_attrs.get("fail_reason") != INTERRUPTED:
            continue
        retry(study, storage, storage.get_trial(trial._trial_id))


def run_trials(study: optuna.Study, storage, objective: Callable, settings: StudySettings, callbacks: Sequence[Callable] = (),
               deadline: float | None = None) -> None:
    """Run trials of ``study`` in this process until it holds ``settings.trials`` finished trials.

    Raises KeyboardInterrupt after Ctrl-C (the current trial marked FAIL and queued for retry) and TrialsKeepFailing
    after MAX_CONSECUTIVE_FAILURES failed trials in a row.
    """
    guarded = _Guarded(objective, settings.trials)
    with stop_on_first_signal():
        _run_trials(study, storage, settings, callbacks, deadline, guarded)


def _run_trials(study, storage, settings, callbacks, deadline, guarded) -> None:
    failures_in_a_row = 0
    waiting_said = False
    try:
        while True:
            recover_dead_trials(study, storage)
            fail_stale_trials(study)
            trials = study.get_trials(deepcopy=False)
            finished = sum(t.state in FINISHED for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if finished >= settings.trials:
                return
            if deadline is not None and time.time() >= deadline:
                print(f"timeout reached with {finished}/{settings.trials} trials finished", flush=True)
                return
            if finished + running >= settings.trials:
                if not waiting_said:
                    print(f"waiting for {running} trial(s) running elsewhere to finish", flush=True)
                    waiting_said = True
                time.sleep(POLL_S)
                continue
            waiting_said = False
            guarded.current = None
            study.optimize(guarded, n_trials=1, catch=(Exception,), callbacks=list(callbacks), gc_after_trial=True)
            if guarded.current is None:
                continue
            trial = study.get_trials(deepcopy=False)[guarded.current]
            reason = trial.user_attrs.get("fail_reason", "see the log above")
            if trial.state != TrialState.FAIL:
                failures_in_a_row = 0
            elif reason != NOT_NEEDED:
                failures_in_a_row += 1
                if failures_in_a_row >= MAX_CONSECUTIVE_FAILURES:
                    raise TrialsKeepFailing(f"{failures_in_a_row} trials in a row failed; the last one: {reason}")
    except KeyboardInterrupt:  # further signals are ignored by now (stop_on_first_signal)
        _mark_interrupted(study, storage, guarded.current)
        raise


def sampler_seed(seed: int, trials_so_far: int, worker: int = 0) -> int:
    """The sampler's seed for a worker joining a study: --seed itself for the first worker of a new study, else one
    derived from it, so that a resumed study or a second worker does not propose the same parameters again."""
    if trials_so_far == 0 and worker == 0:
        return seed
    return int(np.random.SeedSequence([seed, trials_so_far, worker]).generate_state(1)[0])


# -- several worker processes on this machine


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def process_context(gpu: bool, preload: Sequence[str]) -> multiprocessing.context.BaseContext:
    """How to start fresh processes: forked from a server that has imported ``preload`` once, instead of each process
    importing the libraries; on a GPU spawned, since the preloaded imports start CUDA (peft imports bitsandbytes),
    which a forked child cannot use."""
    if gpu:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(preload))
    return context


@contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _stop_with_command(command_pid: int) -> None:
    """SIGTERM to this worker once the command that started it is gone, however it ended (kill -9 included): the
    worker then marks its trial as on Ctrl-C. A thread polls, since a worker's parent may be a fork server, which
    outlives the command."""

    def watch() -> None:
        while True:
            try:
                os.kill(command_pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(POLL_S)

    threading.Thread(target=watch, name="stop-with-command", daemon=True).start()


def worker_process(settings: StudySettings, index: int, deadline: float | None, command_pid: int) -> None:
    """Entry point of a worker process: open the study and run trials (exit code 130 after Ctrl-C, 1 on failure)."""
    _stop_with_command(command_pid)
    from study import run
    from study.cli import configure_logging
    from study.objective import Objective
    from study.progress import Progress
    from study.storage import open_storage

    configure_logging(settings.verbose)
    import torch

    if not torch.cuda.is_available():  # share the cores instead of each worker taking them all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    storage = open_storage(settings.storage)
    study = optuna.load_study(study_name=settings.resolved_study_name(), storage=storage, pruner=run.make_pruner(settings))
    study.sampler = run.make_sampler(dataclasses.replace(settings, seed=sampler_seed(settings.seed, len(study.trials), index)))
    tokenizer, data = run.prepare_data(settings)
    try:
        progress = Progress(study, settings.trials, bar=False)  # the workers' lines interleave: no bars
        run_trials(study, storage, Objective(settings, data, tokenizer, progress), settings, [progress], deadline)
    except KeyboardInterrupt:
        sys.exit(130)
    except TrialsKeepFailing as error:
        print(f"worker {index}: {error}", file=sys.stderr, flush=True)
        sys.exit(1)


def run_workers(settings: StudySettings, deadline: float | None) -> None:
    """Start settings.workers processes on the study and wait for them; one GPU each where there are several.

    Raises KeyboardInterrupt after Ctrl-C (forwarded to the workers, which mark their trials) and TrialsKeepFailing
    when a worker stopped on failures.
    """
    gpus = visible_gpus()
    # Not study.run: a worker re-runs the command's main module, which must not be imported already.
    context = process_context(bool(gpus), ["transformers", "peft", "emotion_core.train", "study.workers"])
    if 1 < len(gpus) < settings.workers:
        print(f"{settings.workers} workers on {len(gpus)} GPUs: some GPUs run several workers", flush=True)
    processes = []
    for index in range(settings.workers):
        gpu = {"CUDA_VISIBLE_DEVICES": gpus[index % len(gpus)]} if len(gpus) > 1 else {}
        with _environment(**gpu):
            process = context.Process(target=worker_process, args=(settings, index, deadline, os.getpid()), name=f"worker-{index}")
            process.start()
        processes.append(process)
    try:
        with stop_on_first_signal():
            for process in processes:
                process.join()
    except KeyboardInterrupt:
        for number in SIGNALS:
            signal.signal(number, signal.SIG_IGN)
        for process in processes:
            if process.is_alive():
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join()
        raise
    codes = [process.exitcode for process in processes]
    if 130 in codes:
        raise KeyboardInterrupt
    if any(codes):
        raise TrialsKeepFailing(f"worker exit codes {codes}; see the messages above")
