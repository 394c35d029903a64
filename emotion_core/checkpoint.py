"""Checkpoints of a training run, so that a run killed part-way continues where it was.

At each validation evaluation but the last, the Trainer saves a checkpoint in its own format (weights, optimizer,
scheduler, RNG and trainer state) into ``<directory>/checkpoint-<step>``, and ``Trainer.train(resume_from_checkpoint=...)``
continues from it. Beside it we keep what only our training loop knows: the evaluations so far and the best weights,
which the run restores at its end. ``progress.json`` is written last, so a folder without it is an interrupted save
and is ignored. Only the newest complete checkpoint is kept: disk use stays one checkpoint per running trial.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from emotion_core.variants import trainable_state

PROGRESS = "progress.json"
BEST_WEIGHTS = "best.safetensors"
# The name under which Trainer._load_from_checkpoint looks for model weights.
WEIGHTS = "model.safetensors"


def step_of(folder: Path) -> int:
    return int(folder.name.rsplit("-", 1)[1])


def latest(directory: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``directory``, or None."""
    folders = [p for p in Path(directory).glob(f"{PREFIX_CHECKPOINT_DIR}-*") if (p / PROGRESS).is_file()]
    return max(folders, key=step_of, default=None)


def restore(directory: str | os.PathLike) -> tuple[Path | None, dict, dict[str, torch.Tensor] | None]:
    """(checkpoint folder, progress, best weights) of the newest complete checkpoint; (None, {}, None) when there is none."""
    folder = latest(directory)
    if folder is None:
        return None, {}, None
    progress = json.loads((folder / PROGRESS).read_text())
    best = folder / BEST_WEIGHTS
    return folder, progress, load_file(str(best)) if best.is_file() else None


def remove(directory: str | os.PathLike) -> None:
    shutil.rmtree(directory, ignore_errors=True)


class CheckpointCallback(TrainerCallback):
    """Asks the Trainer for a checkpoint at each evaluation step and adds the run's progress to it.

    ``state`` is the training loop's own record: ``evaluations`` (dataclasses), ``best`` (accuracy) and
    ``best_weights`` (tensors or None).
    """

    def __init__(self, eval_at: set[int], state: dict):
        self.eval_at = eval_at
        self.state = state

    def on_step_end(self, args, trainer_state, control, **kwargs):
        # The last step needs no checkpoint: the run ends there.
        if trainer_state.global_step in self.eval_at and trainer_state.global_step < trainer_state.max_steps:
            control.should_save = True

    def on_evaluate(self, args, trainer_state, control, **kwargs):
        if control.should_training_stop:  # pruned or diverged: the run ends now, nothing to continue
            control.should_save = False

    def on_save(self, args, trainer_state, control, **kwargs):
        folder = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{trainer_state.global_step}"
        if self.state.get("best_weights") is not None:
            save_file({k: v.contiguous() for k, v in self.state["best_weights"].items()}, str(folder / BEST_WEIGHTS))
        progress = {"evaluations": [asdict(e) for e in self.state["evaluations"]], "best": self.state["best"]}
        staging = folder / (PROGRESS + ".tmp")
        staging.write_text(json.dumps(progress))
        os.replace(staging, folder / PROGRESS)  # the checkpoint is complete from here on
        for older in Path(args.output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            if older != folder:
                shutil.rmtree(older, ignore_errors=True)


class CheckpointTrainer(Trainer):
    """A Trainer whose checkpoints of a partly frozen model hold only what trains.

    The frozen base is loaded again from the model folder on resume, and the Trainer loads checkpoint weights
    non-strictly, so a head checkpoint is kilobytes instead of the whole model. PEFT models already save only
    their adapter.
    """

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not _internal_call or hasattr(self.model, "peft_config"):
            return super().save_model(output_dir, _internal_call)
        folder = Path(output_dir or self.args.output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in trainable_state(self.model).items()}, str(folder / WEIGHTS))
