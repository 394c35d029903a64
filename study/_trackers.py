"""--report-to: each trial's training curves (and each retraining's, under ``final``) in a tracker the user already has,
through the HF Trainer's own integrations (transformers' TensorBoardCallback and MLflowCallback).

- tensorboard: one event folder per run, <study folder>/runs/<run>, under the study's run name ``trial-N`` or
  ``final/trial-N-seed-S``; point ``tensorboard --logdir`` at <study folder>/runs.
- mlflow: one MLflow run per trial in the experiment named after the study (the store MLFLOW_TRACKING_URI names), the
  Trainer's metrics in it, and the trial's parameters (``trial.<name>``) and value (``value``) logged when it ends.
  Optuna's own MLflowCallback is not used: it opens a run of its own per trial, beside the one holding the curves.
Both are optional extras (settings.Tracking refuses one that is not installed, naming the extra).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Run:
    """One tracked training run: the Trainer callbacks that send its curves, and its end (parameters and value)."""

    def __init__(self, callbacks: list, finish=None):
        self.callbacks = callbacks
        self._finish = finish

    def finish(self, params: dict, value: float | None, state: str) -> None:
        if self._finish is not None:
            self._finish(params, value, state)
            self._finish = None


class Trackers:
    """Opens a Run per training run of a study, for --report-to tensorboard or mlflow."""

    def __init__(self, report_to: str, study_name: str, folder: Path):
        self.report_to = report_to
        self.study_name = study_name
        self.folder = folder / "runs"

    @contextmanager
    def run(self, name: str) -> Iterator[Run]:
        """A Run named ``name`` (trial-3, final/trial-3-seed-1) for the block; ended when the block ends."""
        opened = self._tensorboard(name) if self.report_to == "tensorboard" else self._mlflow(name)
        try:
            yield opened
        finally:
            opened.finish({}, None, "FAILED")  # a run the block did not finish (an error, a pruned trial) ends here

    def _tensorboard(self, name: str) -> Run:
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        writer = SummaryWriter(log_dir=str(self.folder / name))

        def finish(params: dict, value: float | None, state: str) -> None:
            if value is not None:
                writer.add_scalar("trial/value", value)
            writer.add_text("trial/params", ", ".join(f"{k}={v}" for k, v in params.items()) or "-")
            writer.close()

        return Run([TensorBoardCallback(tb_writer=writer)], finish)

    def _mlflow(self, name: str) -> Run:
        import mlflow
        from transformers.integrations import MLflowCallback

        mlflow.set_experiment(self.study_name)
        mlflow.start_run(run_name=f"{self.study_name}/{name}")  # the Trainer's callback logs into it and leaves it open

        def finish(params: dict, value: float | None, state: str) -> None:
            if params:
                mlflow.log_params({f"trial.{key}": val for key, val in params.items()})
            if value is not None:
                mlflow.log_metric("value", value)
            mlflow.end_run(status="FINISHED" if state == "FINISHED" else "FAILED")

        return Run([MLflowCallback()], finish)


def trial_trackers(report_to: str, study_name: str, folder: Path) -> Trackers | None:
    """The trackers of a study's runs; None for --report-to none."""
    return None if report_to == "none" else Trackers(report_to, study_name, folder)
