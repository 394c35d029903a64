"""The training loop: one TrainConfig in, validation (and optionally test) metrics out, with the HF Trainer.

Dynamic padding (``data.padding_collator``), length-grouped batches (``sampler``), validation several times per epoch
handed to an optional callback that may stop the run (a pruner does), the best evaluation's weights kept (``callbacks``),
checkpoints at each evaluation (``checkpoint``). The head variant trains on the frozen base's pooled features
(``emotion_core.features``); the base comes from a ``ModelCache`` that the caller may keep across runs.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emotion_core import variants
from emotion_core.cache import ModelCache, build_model
from emotion_core.data import TokenizedSplits, padding_collator
from emotion_core.features import feature_splits
from emotion_core.memory import MIB, PeakMemory
from emotion_core.metrics import classification_metrics, predictions_from_logits
from emotion_core.models import count_parameters
from emotion_core.precision import use_gpu
from emotion_core.training import checkpoint
from emotion_core.training.callbacks import Accuracy, OnEval, OnPredict, OnStep, StepHook, Stopper, Tracker, evaluation_steps
from emotion_core.training.config import Result, TrainConfig
from emotion_core.training.sampler import trainer_class


@dataclass
class Prepared:
    """The model to train and what it trains on: sentences, or the head's cached features."""

    model: torch.nn.Module
    splits: object  # TokenizedSplits or features.FeatureSplits: .train, .validation, .test
    collate: Callable
    trainable_params: int
    total_params: int
    weights_mib: float  # the model's weights and buffers (get_memory_footprint); the frozen base's for features
    seconds: float
    on_features: bool = False


def prepare(config: TrainConfig, data: TokenizedSplits, tokenizer, cache: ModelCache, with_test: bool) -> Prepared:
    from transformers import default_data_collator

    started = time.perf_counter()
    variant = variants.get(config.variant)
    params = config.params()
    features = None
    if variant.trains_on_features and config.feature_cache:
        features = feature_splits(config.model, variant, data, tokenizer, cache, with_test=with_test,
                                  batch_size=config.resolved_eval_batch_size(), precision=config.precision)
    if features is not None:
        # The same head, init and batches as the head on the full model, on vectors instead of sentences.
        model = features.head.build(params.head_dropout, config.seed)
        return Prepared(model, features, default_data_collator, count_parameters(model)[0], features.head.total_params,
                        features.head.weights_mib, time.perf_counter() - started, on_features=True)
    model = build_model(config.model, config.variant, config.variant_params, tokenizer.pad_token_id, seed=config.seed,
                        precision=config.precision, labels=data.labels, cache=cache)
    trainable, total = count_parameters(model)
    return Prepared(model, data, padding_collator(tokenizer), trainable, total, model.get_memory_footprint() / MIB,
                    time.perf_counter() - started)


def _training_arguments(config: TrainConfig, output_dir: str, bf16: bool, compile_model: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.resolved_eval_batch_size(),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_ratio,  # below 1: a share of the training steps
        lr_scheduler_type=config.lr_scheduler_type,
        num_train_epochs=config.epochs,
        # Evaluation, logging and checkpoints happen at the steps the callbacks pick (evaluation_steps).
        eval_strategy="no",
        logging_strategy="no",
        save_strategy="no",
        report_to="none",  # trackers come as callbacks of their own (train's ``callbacks``)
        run_name=config.run_name,
        seed=config.seed,
        bf16=bf16,
        use_cpu=not use_gpu(),
        # The collators drop the ``length`` column; the training sampler needs it.
        remove_unused_columns=False,
        torch_compile=compile_model,
        label_names=["labels"],
        disable_tqdm=not config.verbose,
        log_level="info" if config.verbose else "error",
        dataloader_num_workers=0,
    )


def _without_length(collate: Callable) -> Callable:
    def collate_rows(rows: list[dict]) -> dict:
        return collate([{k: v for k, v in row.items() if k not in ("length", "row")} for row in rows])

    return collate_rows


def _allow_recompiles() -> None:
    """Later runs in the process reuse the compiled code. LoRA's rank changes weight shapes: let a second rank make them
    dynamic instead of compiling once per rank, and keep more variants than the default 8 before falling back to eager."""
    import torch._dynamo

    dynamo = torch._dynamo.config
    if hasattr(dynamo, "force_parameter_static_shapes"):
        dynamo.force_parameter_static_shapes = False
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(dynamo, name):
            setattr(dynamo, name, max(getattr(dynamo, name), 64))
            break


@dataclass
class Callbacks:
    """A run's callbacks, where it resumes from (a checkpoint folder, or None), and what it evaluates on."""

    tracker: Tracker
    stopper: Stopper
    all: list
    resume: str | None
    resumed_from_step: int
    during: object  # the validation rows evaluated before the last evaluation: the whole split, or the pruner's subset


def pruning_subset(n: int, size: int | None) -> list[int] | None:
    """The validation rows the evaluations during training use: a seeded ``size`` of ``n``, in the split's order (it
    is sorted by length, for little padding); None for all of them. The same rows for every run of the same data."""
    if size is None or size >= n:
        return None
    return sorted(int(i) for i in np.random.default_rng(0).choice(n, size=size, replace=False))


def _callbacks(config: TrainConfig, prepared: Prepared, on_eval: OnEval | None, on_step: OnStep | None, on_predict: OnPredict | None,
               checkpoint_dir, on_checkpoint: Callable[[Path], None] | None, extra: Sequence = ()) -> Callbacks:
    validation = prepared.splits.validation
    eval_at = evaluation_steps(len(prepared.splits.train), config)
    rows = pruning_subset(len(validation), config.pruning_eval_size) if config.keep == "last" else None
    resume, record = checkpoint.restore(checkpoint_dir) if checkpoint_dir is not None else (None, None)
    # With a subset, the last evaluation (at the last step) is the whole split's: the run's value.
    tracker = Tracker(prepared.model, eval_at, Accuracy(), len(validation), config.keep, record, validation if rows is not None else None)
    stopper = Stopper(tracker.record, on_eval)
    more = [checkpoint.CheckpointCallback(eval_at, tracker.record, on_checkpoint)] if checkpoint_dir is not None else []
    more += [StepHook(on_step, on_predict)] if on_step is not None or on_predict is not None else []
    return Callbacks(tracker, stopper, [tracker, stopper, *more, *extra], str(resume) if resume else None,
                     checkpoint.step_of(resume) if resume else 0, validation.select(rows) if rows is not None else validation)


def _trainer(config: TrainConfig, prepared: Prepared, callbacks: Callbacks, output_dir: str):
    from transformers import PrinterCallback

    compile_model = config.compile and not prepared.on_features
    if compile_model:
        _allow_recompiles()
    trainer = trainer_class()(
        model=prepared.model,
        # The head on cached features autocasts too: its Linear then computes as it does on top of the model.
        args=_training_arguments(config, output_dir, variants.get(config.variant).autocast_bf16(config.model, config.precision), compile_model),
        train_dataset=prepared.splits.train,
        eval_dataset=callbacks.during,
        data_collator=_without_length(prepared.collate),
        compute_metrics=callbacks.tracker.metric,
        callbacks=callbacks.all,
    )
    if not config.verbose:
        trainer.remove_callback(PrinterCallback)  # it prints every log dict once the bar is off
    callbacks.tracker.trainer = trainer
    return trainer


def _test_metrics(trainer, prepared: Prepared, labels) -> tuple[dict, list[int]]:
    prediction = trainer.predict(prepared.splits.test)
    predicted = predictions_from_logits(prediction.predictions)
    return classification_metrics(prediction.label_ids, predicted, labels), [int(p) for p in predicted]


def train(
    config: TrainConfig,
    data: TokenizedSplits,
    tokenizer,
    on_eval: OnEval | None = None,
    *,
    on_step: OnStep | None = None,
    on_predict: OnPredict | None = None,
    cache: ModelCache | None = None,
    evaluate_test: bool = False,
    save_to: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    on_checkpoint: Callable[[Path], None] | None = None,
    callbacks: Sequence = (),
) -> Result:
    """Train ``config`` on ``data.train``, selecting on ``data.validation``.

    ``on_eval`` is called after each validation evaluation; returning True stops training. ``on_step`` is told each
    optimizer step and the total, ``on_predict`` each batch of a validation or test pass and their number (progress
    displays). ``cache`` keeps the loaded base and the head's features for later runs (without one, nothing is kept).
    With ``evaluate_test`` the kept weights are evaluated once on ``data.test``; with ``save_to`` the variant saves them
    there. With ``checkpoint_dir`` a checkpoint is kept there at each evaluation (and ``on_checkpoint`` told its folder),
    and a run that finds one continues from it. ``callbacks`` are more Trainer callbacks (a tracker's). Model and GPU
    memory are freed before returning or raising.
    """
    from transformers import set_seed

    set_seed(config.seed)
    prepared = run = trainer = None
    try:
        prepared = prepare(config, data, tokenizer, cache or ModelCache(), with_test=evaluate_test)
        run = _callbacks(config, prepared, on_eval, on_step, on_predict, checkpoint_dir, on_checkpoint, callbacks)
        with tempfile.TemporaryDirectory(prefix="emotion-train-") as scratch:
            trainer = _trainer(config, prepared, run, str(checkpoint_dir or scratch))
            with PeakMemory() as memory:
                started = time.perf_counter()
                trainer.train(resume_from_checkpoint=run.resume)
                train_seconds = time.perf_counter() - started
            run.tracker.restore_best()
            test, test_predictions = _test_metrics(trainer, prepared, data.labels) if evaluate_test and not run.stopper.diverged else (None, None)
            saved_to = str(variants.get(config.variant).save(prepared.model, save_to)) if save_to is not None else None
        trained_steps = trainer.state.global_step - run.resumed_from_step
        return Result(
            val_accuracy=max(run.tracker.record.best_accuracy, 0.0),
            evaluations=run.tracker.record.evaluations,
            trainable_params=prepared.trainable_params,
            total_params=prepared.total_params,
            peak_memory_mib=memory.peak_mib,
            peak_memory_note=memory.note,
            peak_rss_mib=memory.peak_rss_mib,
            train_seconds=train_seconds,
            train_samples_per_second=trained_steps * config.batch_size / max(train_seconds, 1e-9) if trained_steps > 0 else 0.0,
            optimizer_steps=trainer.state.global_step,
            n_train=len(data.train),
            n_validation=len(data.validation),
            setup_seconds=prepared.seconds,
            stopped_early=run.stopper.stopped_early,
            diverged=run.stopper.diverged,
            test=test,
            test_predictions=test_predictions,
            saved_to=saved_to,
            weights_mib=prepared.weights_mib,
            resumed_from_step=run.resumed_from_step,
            val_correct=run.tracker.record.best_correct,
        )
    finally:
        del prepared, run, trainer
        release_memory()


def release_memory() -> None:
    """Give freed tensors back: Python's cycles first, then the CUDA caching allocator."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
