"""--workers K: K processes on this machine sharing one study, each running the trial loop (study._trials.loop); one GPU
each where there are several."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import optuna

from study._opened import OpenedStudy
from study._trials.loop import POLL_S, SIGNALS, TrialsKeepFailing, run_trials, stop_on_first_signal
from study.settings import StudySettings


def visible_gpus() -> list[str]:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def process_context(gpu: bool) -> multiprocessing.context.BaseContext:
    """How to start fresh processes: forked from a server that has imported the libraries once (study._preload),
    instead of each process importing them; on a GPU spawned, since the preloaded imports may start CUDA, which a forked
    child cannot use."""
    if gpu:
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["study._preload"])
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


def work(opened: OpenedStudy, inputs, progress, deadline: float | None) -> str | None:
    """Run the study's trials in this process (study._trials.loop) until it holds its total or the stop rule stops it;
    returns the stop rule's reason, if it did. ``inputs``: each searched model's tokenizer and tokenized data."""
    from emotion_core.cache import ModelCache
    from study._evidence import patience_rule
    from study._trackers import trial_trackers
    from study._trials.objective import Objective

    settings = opened.definition
    objective = Objective(opened, inputs, progress, ModelCache(freeze_gc=True),
                          trackers=trial_trackers(settings.report_to, opened.name, settings.study_dir))
    return run_trials(opened, objective, settings.trials, [progress] if progress is not None else [], deadline,
                      stop_rule=patience_rule(settings.patience))


def worker_process(settings: StudySettings, index: int, deadline: float | None, command_pid: int) -> None:
    """Entry point of a worker process: open the study and run trials (exit code 130 after Ctrl-C, 1 on failure)."""
    _stop_with_command(command_pid)
    from study._backends import open_storage
    from study._command import configure_logging
    from study._inputs import prepare_inputs
    from study._show.progress import Progress

    configure_logging(settings.verbose)
    import torch

    if not torch.cuda.is_available():  # share the cores instead of each worker taking them all
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // settings.workers))
    storage = open_storage(settings.storage)
    opened = OpenedStudy(storage, optuna.load_study(study_name=settings.resolved_study_name(), storage=storage), settings).with_search()
    inputs = prepare_inputs(settings)
    try:
        work(opened, inputs, Progress(opened.study, settings.trials, bar=False), deadline)  # interleaved lines: no bars
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
    context = process_context(bool(gpus))
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
