"""The training objective: one config in, validation (and optionally test) metrics out.

``train`` runs the HF Trainer with dynamic padding (``data.padding_collator``) and length-grouped batches, evaluates
validation accuracy several times per epoch and hands each evaluation to an optional callback, which may stop the run
(a pruner does). The best evaluation's weights are restored at the end: the result is selected on validation.

Fast paths: the base model is read once per process and copied for each run (``variants.fresh_base``); the head
variant trains on the frozen base's pooled features, computed once per process (``emotion_core.features``);
evaluation runs over splits sorted by length, in batches of 4x the training batch on a GPU and 2x on a CPU; bf16 where
the machine has it natively (a GPU, or a CPU with AMX or AVX512-BF16; ``precision`` overrides), and ``compile=True`` adds
torch.compile.
"""

from __future__ import annotations

import functools
import gc
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from emotion_core.data import TokenizedSplits, padding_collator
from emotion_core.features import feature_splits
from emotion_core.memory import MIB, PeakMemory
from emotion_core.metrics import classification_metrics, predictions_from_logits, trainer_accuracy
from emotion_core.variants import ModelParams, autocast_bf16, bf16_autocast, build_model, count_parameters, save_trained, trainable_state, use_gpu


@dataclass
class TrainConfig:
    """One training run. Every field has a default, so a notebook can change only what it studies."""

    model: str = "gpt2"  # hub id or local folder of a model that AutoModelForSequenceClassification loads
    variant: str = "lora"  # head | lora | qlora | full
    learning_rate: float = 2e-4
    dropout: float = 0.1  # LoRA dropout (lora/qlora) or dropout on the head's input (head/full)
    lora_r: int = 8
    weight_decay: float = 0.0
    epochs: float = 3.0
    batch_size: int = 32
    eval_batch_size: int | None = None  # None: 4 x batch_size on a GPU (evaluation holds no gradients), 2 x on a CPU
    # Validation evaluations per epoch, each one a point a pruner can act on. 3 rather than 2: a pruned trial stops a
    # third of an epoch in. Bench pruning part, 12 trials, seeds 0/1/2, steps run against the unpruned study: SmolLM2-135M
    # head 0.35/0.70/0.56 (2: 0.52/0.72/0.58; best kept, except 0.4 pt lost on seed 0), tiny GPT-2 LoRA 0.33/0.56/0.49
    # (2: 0.45/0.72/0.53; best kept). 4 lost 0.6 pt on SmolLM2 seed 0 and saved no more.
    evals_per_epoch: int = 3
    seed: int = 0
    target_modules: list[str] | None = None  # LoRA targets; None: peft's defaults for the model type
    feature_cache: bool = True  # head variant: train on the frozen base's pooled features, computed once per process
    compile: bool = False  # torch.compile the model (the compiled code is reused by later runs in the process)
    precision: str = "auto"  # auto | bf16 | fp32: frozen weights and autocast in bf16 where the machine has it natively
    verbose: bool = False  # show the Trainer's own progress bar and logs

    def resolved_eval_batch_size(self) -> int:
        # On a CPU a bigger batch runs a little faster per token (SmolLM2: 494, 541, 550 tokens/s at 32, 64, 128 rows)
        # but pads more (500 validation sentences sorted: 1.10x, 1.21x, 1.45x their tokens): 2x costs what 1x does
        # there, and halves the per-batch overhead that dominates on tiny models.
        return self.eval_batch_size or (4 if use_gpu() else 2) * self.batch_size

    def model_params(self) -> ModelParams:
        return ModelParams(dropout=self.dropout, lora_r=self.lora_r, target_modules=self.target_modules)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Evaluation:
    """One validation evaluation during training."""

    step: int
    epoch: float
    accuracy: float
    loss: float


@dataclass
class Result:
    val_accuracy: float  # the best validation accuracy; its weights are the ones kept
    evaluations: list[Evaluation]
    trainable_params: int
    total_params: int
    peak_memory_mib: float
    peak_rss_mib: float
    train_seconds: float
    train_samples_per_second: float
    optimizer_steps: int
    setup_seconds: float = 0.0  # getting the model ready: a copy of the loaded base, or the head's features
    stopped_early: bool = False  # the on_eval callback asked to stop
    diverged: str | None = None  # why training was stopped as diverged (NaN or inf loss)
    test: dict | None = None  # classification_metrics on the test split, when asked for
    saved_to: str | None = None
    weights_mib: float | None = None  # the model's weights and buffers (get_memory_footprint): 4-bit for qlora
    resumed_from_step: int = 0  # the checkpoint step this run continued from (0: from the start)

    @property
    def epoch_val_accuracy(self) -> list[float]:
        """The last validation accuracy within each epoch."""
        by_epoch: dict[int, float] = {}
        for evaluation in self.evaluations:
            by_epoch[max(0, math.ceil(evaluation.epoch - 1e-6) - 1)] = evaluation.accuracy
        return [by_epoch[k] for k in sorted(by_epoch)]


OnEval = Callable[[Evaluation], bool | None]


def _training_arguments(config: TrainConfig, output_dir: str, bf16: bool, compile_model: bool):
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=output_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.resolved_eval_batch_size(),
        learning_rate=config.learning_rate,
        weight_decay=config.weight_decay,
        num_train_epochs=config.epochs,
        # Evaluation and logging happen at the steps that the tracking callback picks (evaluation_steps).
        eval_strategy="no",
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        seed=config.seed,
        bf16=bf16,
        use_cpu=not use_gpu(),
        train_sampling_strategy="group_by_length",
        # The collators drop the ``length`` column; the samplers need it (the Trainer would drop it before them).
        remove_unused_columns=False,
        torch_compile=compile_model,
        label_names=["labels"],
        disable_tqdm=not config.verbose,
        log_level="info" if config.verbose else "error",
        dataloader_num_workers=0,
    )


def evaluation_steps(n_train: int, config: TrainConfig) -> set[int]:
    """Optimizer steps after which to evaluate: evenly spaced within each epoch, always at an epoch's end, so that
    every trial of a study reports at the same steps (what a pruner compares)."""
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total = math.ceil(steps_per_epoch * config.epochs)
    per_epoch = max(1, min(config.evals_per_epoch, steps_per_epoch))
    steps = {round(k * steps_per_epoch / per_epoch) for k in range(1, math.ceil(config.epochs * per_epoch) + 1)}
    return {s for s in steps if s < total} | {total}


def _tracking_callback(model, on_eval: OnEval | None, state: dict, eval_at: set[int]):
    from transformers import TrainerCallback

    class Tracker(TrainerCallback):
        def on_step_end(self, args, trainer_state, control, **kwargs):
            if trainer_state.global_step in eval_at:
                control.should_log = control.should_evaluate = True

        def on_log(self, args, trainer_state, control, logs=None, **kwargs):
            loss = (logs or {}).get("loss")
            if loss is not None and not math.isfinite(loss):
                state["diverged"] = f"training loss became {loss} at step {trainer_state.global_step}"
                control.should_training_stop = True

        def on_evaluate(self, args, trainer_state, control, metrics=None, **kwargs):
            evaluation = Evaluation(
                step=trainer_state.global_step,
                epoch=float(trainer_state.epoch or 0.0),
                accuracy=float(metrics["eval_accuracy"]),
                loss=float(metrics.get("eval_loss", float("nan"))),
            )
            state["evaluations"].append(evaluation)
            if not math.isfinite(evaluation.loss):
                state["diverged"] = f"validation loss became {evaluation.loss} at step {evaluation.step}"
                control.should_training_stop = True
            if evaluation.accuracy > state["best"]:
                state["best"] = evaluation.accuracy
                state["best_weights"] = trainable_state(model)
            if on_eval is not None and on_eval(evaluation):
                state["stopped_early"] = True
                control.should_training_stop = True

    return Tracker()


def _without_length(collate: Callable) -> Callable:
    def collate_rows(rows: list[dict]) -> dict:
        return collate([{k: v for k, v in row.items() if k != "length"} for row in rows])

    return collate_rows


# Sentences per length-sorted group, in training batches. The HF sampler sorts groups of up to 50 batches but makes at
# least 4 groups, so a 320-sentence subset got groups of 2 batches of 32, alternating long and short: 2.4x the tokens
# that sorting all 10 batches gives (SmolLM2 LoRA, CPU, one epoch: 81 s before this, 56-64 s after).
GROUP_BATCHES = 50


@functools.cache
def _length_grouped_batches_class():
    from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

    class LengthGroupedBatches(LengthGroupedSampler):
        def __iter__(self):
            indices = get_length_grouped_indices(self.lengths, self.batch_size, mega_batch_mult=GROUP_BATCHES, generator=self.generator)
            batches = [indices[i : i + self.batch_size] for i in range(0, len(indices), self.batch_size)]
            order = [0] + (torch.randperm(len(batches) - 1, generator=self.generator) + 1).tolist() if batches else []
            return iter([index for b in order for index in batches[b]])

    return LengthGroupedBatches


def length_grouped_sampler(batch_size: int, lengths: list[int], generator: torch.Generator | None = None):
    """Training rows in batches of similar lengths, sorted within groups of GROUP_BATCHES batches. The batch with the
    longest row comes first, so that running out of memory shows at once; the other batches follow in a random order."""
    return _length_grouped_batches_class()(batch_size, lengths=lengths, generator=generator)


@functools.cache
def _trainer_class(base=None):
    """The Trainer class to use: ``base`` (default: the HF Trainer) with our samplers."""
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class LengthGroupedTrainer(base or Trainer):
        """The Trainer, with length-grouped training batches whose lengths come from the ``length`` column read once
        (the Trainer reads a datasets Column row by row: seconds per epoch), and evaluation in the split's own order,
        which is longest first."""

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            lengths = dataset.lengths if hasattr(dataset, "lengths") else dataset["length"][:]  # features or tokens
            return length_grouped_sampler(batch, lengths)

        def _get_eval_sampler(self, eval_dataset):
            return SequentialSampler(eval_dataset)

    return LengthGroupedTrainer


def _allow_recompiles() -> None:
    """Later runs in the process reuse the compiled code. LoRA's rank changes weight shapes: let a second rank make them
    dynamic instead of compiling once per rank, and keep more variants than the default 8 before falling back to eager."""
    import torch._dynamo

    config = torch._dynamo.config
    if hasattr(config, "force_parameter_static_shapes"):
        config.force_parameter_static_shapes = False
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(config, name):
            setattr(config, name, max(getattr(config, name), 64))
            break


def train(
    config: TrainConfig,
    data: TokenizedSplits,
    tokenizer,
    on_eval: OnEval | None = None,
    *,
    evaluate_test: bool = False,
    save_to: str | os.PathLike | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> Result:
    """Train ``config`` on ``data.train``, selecting on ``data.validation``.

    ``on_eval`` is called after each validation evaluation; returning True stops training. With
    ``evaluate_test`` the kept weights are evaluated once on ``data.test``; with ``save_to`` they are saved
    there as safetensors. With ``checkpoint_dir`` a checkpoint is kept there at each evaluation, and a run that
    finds one continues from it (see emotion_core.checkpoint). Model and GPU memory are freed before returning or raising.
    """
    from transformers import PrinterCallback, default_data_collator, set_seed

    from emotion_core import checkpoint

    set_seed(config.seed)
    model = trainer = None
    state: dict = {"evaluations": [], "best": -1.0, "best_weights": None, "stopped_early": False, "diverged": None}
    try:
        setup_started = time.perf_counter()
        features = None
        if config.variant == "head" and config.feature_cache:
            features = feature_splits(config.model, data, tokenizer, with_test=evaluate_test, batch_size=config.resolved_eval_batch_size(),
                                      precision=config.precision)
        if features is not None:
            # The same head, init and batches as the head on the full model, on vectors instead of sentences.
            model = features.head.build(config.dropout, config.seed)
            splits, collate = features, default_data_collator
            trainable, total = count_parameters(model)[0], features.head.total_params
            weights_mib = features.head.weights_mib  # the frozen base the features come from
        else:
            model = build_model(config.model, config.variant, config.model_params(), tokenizer.pad_token_id, seed=config.seed,
                                precision=config.precision)
            splits, collate = data, padding_collator(tokenizer)
            trainable, total = count_parameters(model)
            weights_mib = model.get_memory_footprint() / MIB
        setup_seconds = time.perf_counter() - setup_started
        # The head on cached features too: its Linear then computes as it does on top of the model.
        bf16 = autocast_bf16(config.model, config.variant, config.precision)
        compile_model = config.compile and features is None
        if compile_model:
            _allow_recompiles()
        eval_at = evaluation_steps(len(splits.train), config)
        callbacks = [_tracking_callback(model, on_eval, state, eval_at)]
        # -- checkpoints (emotion_core.checkpoint): continue from the newest one, keep one at each evaluation
        resume, base_trainer = None, None
        if checkpoint_dir is not None:
            resume, progress, best_weights = checkpoint.restore(checkpoint_dir)
            state["evaluations"] = [Evaluation(**e) for e in progress.get("evaluations", [])]
            state["best"], state["best_weights"] = progress.get("best", -1.0), best_weights
            callbacks.append(checkpoint.CheckpointCallback(eval_at, state))
            base_trainer = checkpoint.CheckpointTrainer
        resumed_from_step = checkpoint.step_of(resume) if resume else 0
        # --
        with tempfile.TemporaryDirectory(prefix="emotion-train-") as scratch:
            trainer = _trainer_class(base_trainer)(
                model=model,
                args=_training_arguments(config, str(checkpoint_dir or scratch), bf16, compile_model),
                train_dataset=splits.train,
                eval_dataset=splits.validation,
                data_collator=_without_length(collate),
                compute_metrics=trainer_accuracy,
                callbacks=callbacks,
            )
            if not config.verbose:
                trainer.remove_callback(PrinterCallback)  # it prints every log dict once the bar is off
            with PeakMemory() as memory:
                started = time.perf_counter()
                trainer.train(resume_from_checkpoint=str(resume) if resume else None)
                train_seconds = time.perf_counter() - started
            if state["best_weights"] is not None:
                model.load_state_dict(state["best_weights"], strict=False)
            test = None
            if evaluate_test and not state["diverged"]:
                prediction = trainer.predict(splits.test)
                test = classification_metrics(prediction.label_ids, predictions_from_logits(prediction.predictions))
            saved_to = str(save_trained(model, save_to)) if save_to is not None else None
        return Result(
            val_accuracy=max(state["best"], 0.0),
            evaluations=state["evaluations"],
            trainable_params=trainable,
            total_params=total,
            peak_memory_mib=memory.peak_mib,
            peak_rss_mib=memory.peak_rss_mib,
            train_seconds=train_seconds,
            train_samples_per_second=(trainer.state.global_step - resumed_from_step) * config.batch_size / max(train_seconds, 1e-9)
            if trainer.state.global_step > resumed_from_step
            else 0.0,
            optimizer_steps=trainer.state.global_step,
            setup_seconds=setup_seconds,
            stopped_early=state["stopped_early"],
            diverged=state["diverged"],
            test=test,
            saved_to=saved_to,
            weights_mib=weights_mib,
            resumed_from_step=resumed_from_step,
        )
    finally:
        del model, trainer
        state.clear()
        release_memory()


def release_memory() -> None:
    """Give freed tensors back: Python's cycles first, then the CUDA caching allocator."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def evaluate_logits(model, dataset, tokenizer, batch_size: int = 128) -> np.ndarray:
    """Logits of ``model`` on a tokenized dataset, in its order (used by tests and predict)."""
    collator = padding_collator(tokenizer)
    device = next(model.parameters()).device
    model.eval()
    outputs = []
    columns = [c for c in ("input_ids", "attention_mask") if c in dataset.column_names]
    with torch.no_grad(), bf16_autocast(model):
        for start in range(0, len(dataset), batch_size):
            batch = collator([{c: row[c] for c in columns} for row in dataset.select(range(start, min(start + batch_size, len(dataset))))])
            outputs.append(model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 6))
