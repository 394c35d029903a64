"""Checkpoints of a training run, so that a run killed part-way continues where it was.

At each validation evaluation but the last, the Trainer saves a checkpoint in its own format (weights, optimizer,
scheduler, RNG and trainer state) into ``<directory>/checkpoint-<step>``, and ``Trainer.train(resume_from_checkpoint=...)``
continues from it. Beside it we keep what only our loop knows: the evaluations so far and the best weights, which the
run restores at its end. ``progress.json`` is written last, so a folder without it is an interrupted save and is
ignored. Only the newest complete checkpoint is kept: disk use stays one checkpoint per running trial.

What the Trainer saves of the model is what trains: an adapter (peft saves only that) or the head on cached features,
which is the whole model then. A head trained on the full model (a model whose head is not a single Linear) saves
the whole model: correct, only larger.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from emotion_core.training.callbacks import TrainingRecord
from emotion_core.training.config import Evaluation
from emotion_core.weights import load_state, save_state

PROGRESS = "progress.json"
BEST_WEIGHTS = "best.safetensors"


def step_of(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[1])


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``directory``, or None."""
    folders = [p for p in Path(directory).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / PROGRESS).is_file()]
    return max(folders, key=step_of, default=None)


def restore(directory: str | os.PathLike) -> tuple[Path | None, TrainingRecord]:
    """The newest complete checkpoint and the record it holds; (None, an empty record) when there is none."""
    folder = latest(directory)
    if folder is None:
        return None, TrainingRecord()
    progress = json.loads((folder / PROGRESS).read_text())
    best = folder / BEST_WEIGHTS
    correct = progress.get("best_correct")
    return folder, TrainingRecord(
        evaluations=[Evaluation(**e) for e in progress.get("evaluations", [])],
        best_accuracy=progress.get("best", -1.0),
        best_weights=load_state(best) if best.is_file() else None,
        best_correct=np.array(correct, dtype=bool) if correct is not None else None,
    )


def remove(directory: str | os.PathLike) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class CheckpointCallback(TrainerCallback):
    """Asks the Trainer for a checkpoint at each evaluation step and adds the run's record to it; ``on_saved`` is
    then told the complete checkpoint's folder (to copy it where other machines find it)."""

    def __init__(self, eval_at: set[int], record: TrainingRecord, on_saved: Callable[[Path], None] | None = None):
        self.eval_at = eval_at
        self.record = record
        self.on_saved = on_saved

    def on_step_end(self, args, state, control, **kwargs):
        # The last step needs no checkpoint: the run ends there.
        if state.global_step in self.eval_at and state.global_step < state.max_steps:
            control.should_save = True

    def on_evaluate(self, args, state, control, **kwargs):
        if control.should_training_stop:  # pruned or diverged: the run ends now, nothing to continue
            control.should_save = False

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if self.record.best_weights is not None:
            save_state(self.record.best_weights, folder / BEST_WEIGHTS)
        correct = self.record.best_correct
        progress = {"evaluations": [asdict(e) for e in self.record.evaluations], "best": self.record.best_accuracy,
                    "best_correct": correct.astype(int).tolist() if correct is not None else None}
        staging = folder / (PROGRESS + ".tmp")
        staging.write_text(json.dumps(progress))
        os.replace(staging, folder / PROGRESS)  # the checkpoint is complete from here on
        for older in Path(args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            if older != folder:
                shutil.rmtree(older, ignore_errors=True)
        if self.on_saved is not None:
            self.on_saved(folder)
