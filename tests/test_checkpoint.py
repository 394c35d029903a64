"""A run that stops after a checkpoint and is run again continues from it, and ends where an unbroken run ends."""

import pytest
from transformers.utils import SAFE_WEIGHTS_NAME

from emotion_core.training import TrainConfig, checkpoint, train


class Crash(Exception):
    pass


@pytest.mark.parametrize("variant", ["head", "lora"])
def test_a_run_continues_from_its_checkpoint_as_if_never_stopped(variant, tiny_model, tokenizer, tokenized, tmp_path):
    config = TrainConfig(model=tiny_model, variant=variant, learning_rate=1e-2, epochs=2, batch_size=16, evals_per_epoch=2)
    unbroken = train(config, tokenized, tokenizer)

    def crash_at_second_evaluation(evaluation):
        if evaluation.step >= 15:
            raise Crash  # after the evaluation at step 15, before its checkpoint: the one at step 8 remains

    folder = tmp_path / "checkpoints"
    with pytest.raises(Crash):
        train(config, tokenized, tokenizer, crash_at_second_evaluation, checkpoint_dir=folder)
    assert [p.name for p in folder.iterdir()] == ["checkpoint-8"]
    if variant == "head":  # only what trains is saved, not the frozen base
        assert (folder / "checkpoint-8" / SAFE_WEIGHTS_NAME).stat().st_size < 10_000

    resumed = train(config, tokenized, tokenizer, checkpoint_dir=folder)
    assert resumed.resumed_from_step == 8 and resumed.optimizer_steps == unbroken.optimizer_steps == 30
    assert [(e.step, e.accuracy) for e in resumed.evaluations] == [(e.step, e.accuracy) for e in unbroken.evaluations]
    assert [e.loss for e in resumed.evaluations] == pytest.approx([e.loss for e in unbroken.evaluations], rel=1e-4)
    assert resumed.val_accuracy == unbroken.val_accuracy
    assert checkpoint.latest(folder).name == "checkpoint-22"  # the last step needs none
