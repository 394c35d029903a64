import io

import pytest
import torch
from safetensors.torch import load_file

from emotion_core.training import TrainConfig, train
from study._show.progress import RunProgress

# Learning rates at which each variant learns the synthetic task on the tiny model within 3 epochs.
LEARNING_RATES = {"head": 3e-2, "lora": 1e-2, "qlora": 1e-2, "full": 3e-3}


@pytest.mark.parametrize("variant", ["head", "lora", "qlora", "full"])
def test_each_variant_trains_and_reports(variant, tiny_model, tokenizer, tokenized, tmp_path):
    seen = []
    config = TrainConfig(model=tiny_model, variant=variant, learning_rate=LEARNING_RATES[variant], epochs=3, batch_size=16)
    result = train(config, tokenized, tokenizer, on_eval=seen.append, evaluate_test=True, save_to=tmp_path / "w")
    assert len(seen) >= 6 and seen == result.evaluations  # at least twice per epoch
    assert len(result.epoch_val_accuracy) == 3
    assert result.val_accuracy == max(e.accuracy for e in seen)
    assert result.val_accuracy > 0.4  # chance is 1/6
    assert 0 < result.trainable_params <= result.total_params
    assert result.train_seconds > 0 and result.train_samples_per_second > 0 and result.optimizer_steps == 45
    assert result.test["n"] == len(tokenized.test) and 0 <= result.test["accuracy"] <= 1
    weights = load_file(result.saved_to)
    assert sum(t.numel() for t in weights.values()) == result.trainable_params


def test_callback_can_stop_training(tiny_model, tokenizer, tokenized):
    config = TrainConfig(model=tiny_model, variant="lora", epochs=3, batch_size=16)
    result = train(config, tokenized, tokenizer, on_eval=lambda e: e.step >= 14)
    assert result.stopped_early and result.optimizer_steps < 45
    assert result.evaluations[-1].step == result.optimizer_steps


def test_divergence_stops_the_run(tiny_model, tokenizer, tokenized):
    config = TrainConfig(model=tiny_model, variant="full", learning_rate=1e6, epochs=2, batch_size=16)
    result = train(config, tokenized, tokenizer)
    assert result.diverged and "loss became" in result.diverged
    assert result.optimizer_steps < 30


@pytest.mark.parametrize("variant", ["head", "lora"])
def test_bf16_trains_over_a_bf16_base(variant, tiny_model, tokenizer, tokenized, tmp_path):
    config = TrainConfig(model=tiny_model, variant=variant, learning_rate=LEARNING_RATES[variant], epochs=3, batch_size=16, precision="bf16")
    result = train(config, tokenized, tokenizer, evaluate_test=True, save_to=tmp_path / "w")
    assert result.val_accuracy > 0.4 and result.test["accuracy"] > 0.4
    assert {t.dtype for t in load_file(result.saved_to).values()} == {torch.float32}


def test_progress_says_validating_during_training_and_testing_after_it(tiny_model, tokenizer, tokenized):
    out = io.StringIO()
    progress = RunProgress("lora seed 0", file=out, every_s=0.0, bar=False)  # no terminal: a line for each batch
    config = TrainConfig(model=tiny_model, variant="lora", epochs=1, batch_size=16)
    train(config, tokenized, tokenizer, progress.on_eval, on_step=progress.on_step, on_predict=progress.on_predict, evaluate_test=True)
    lines = out.getvalue().splitlines()
    last_eval = max(i for i, line in enumerate(lines) if "val_acc=" in line)
    assert any("validating: batch 1/" in line for line in lines[:last_eval])
    assert lines[last_eval + 1] == f"  lora seed 0: testing: batch 1/{-(-len(tokenized.test) // 32)}"  # CPU eval batch: 2x the training batch
    assert not any("validating" in line for line in lines[last_eval:])
