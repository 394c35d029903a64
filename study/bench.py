"""emotion-study bench (also python -m study.bench): how much faster a trial is than a naive notebook's, what the head's
feature cache saves, what the pruner saves, and where the patience rule would have stopped a stored study, measured side
by side in one run on this machine.

1. throughput: a naive trial (the HF Trainer on sentences padded to 128 tokens, fp32, batch 16, evaluating once per
   epoch, re-tokenizing and re-loading the model) against the project's trial (``emotion_core.train`` with the
   study's settings) for the same variant, model and sentences. Samples/s = trained sentences / trial seconds,
   evaluations included.
2. head: a head trial with the feature cache against one without.
3. pruning: the same seeded study of --trials trials with the default pruner and with none; total optimizer steps
   and best validation accuracy of each.
4. stopping: replays a finished study (--storage, --study-name) in the order its trials finished, and says where
   --patience 5, 10 and 15 would have stopped it, the best validation accuracy then against the whole study's, and the
   share of the study's trial time it would have saved. Trains nothing.
5. take-home: the time from nothing to the model you take home: a fresh study of --trials on the budget above
   (emotion-study run, in its own storage under <output-dir>/bench/), then emotion-study final of its pick at
   --final-max-train-samples x --final-epochs; the wall time of each and the final model's test accuracy.
6. report: builds synthetic LoRA studies of 6, 200 and 1000 completed trials in a temporary folder (records as run
   writes them, values and per-sentence evidence drawn at random, nothing trained) and times ``report``, ``report
   --json``, the dashboard note and run's closing summary on each.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_core import variants
from study import records
from study._command import Command
from study.settings import BenchSettings, StudySettings

if TYPE_CHECKING:
    import optuna

    from emotion_core.cache import ModelCache

# The naive notebook's settings.
NAIVE_BATCH = 16
TRIAL_EPOCHS = StudySettings().epochs  # a study's trial, for judging whether compiling pays


def say(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def settings_for(args: BenchSettings, **changes) -> StudySettings:
    return args.study(**changes)


def naive_trial(args: BenchSettings, params: dict) -> dict:
    """What a typical notebook does per trial: tokenize with padding to 128, load the model from disk, fp32, batch 16."""
    import torch
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments, default_data_collator

    from emotion_core.data import MAX_LENGTH, load_splits
    from emotion_core.memory import PeakMemory
    from emotion_core.metrics import trainer_accuracy
    from emotion_core.models import load_tokenizer
    from emotion_core.precision import use_gpu

    splits = load_splits(args.data, max_train_samples=args.max_train_samples, max_eval_samples=args.max_eval_samples, seed=args.seed,
                         labels=args.labels)
    with PeakMemory() as memory:
        started = time.perf_counter()
        tokenizer = load_tokenizer(args.tokenizer or args.model)
        variant = variants.get(args.variant)
        if variant.quantized:  # 4-bit needs its quantization config; the rest is the notebook's plain load
            model = variant.load_base(args.model, tokenizer.pad_token_id, labels=splits.labels)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(
                os.path.expanduser(args.model), num_labels=len(splits.labels), id2label=dict(enumerate(splits.labels)),
                label2id={name: i for i, name in enumerate(splits.labels)}, dtype=torch.float32
            )
            model.config.pad_token_id = tokenizer.pad_token_id
        length = min(MAX_LENGTH, getattr(model.config, "max_position_embeddings", MAX_LENGTH))  # tiny test models have fewer

        def encode(batch):
            return tokenizer(batch["text"], padding="max_length", truncation=True, max_length=length)

        train_set = splits.train.map(encode, batched=True, remove_columns=["text"])
        val_set = splits.validation.map(encode, batched=True, remove_columns=["text"])
        model = variant.apply(model, variant.params(variant.params_of(params)))
        training = TrainingArguments(
            output_dir=str(Path(args.output_dir) / "bench-naive"), per_device_train_batch_size=NAIVE_BATCH,
            per_device_eval_batch_size=NAIVE_BATCH, num_train_epochs=args.epochs, learning_rate=params["learning_rate"],
            eval_strategy="epoch", save_strategy="no", logging_strategy="no", report_to="none", seed=args.seed,
            use_cpu=not use_gpu(), disable_tqdm=not args.verbose,
        )
        trainer = Trainer(model=model, args=training, train_dataset=train_set, eval_dataset=val_set,
                          data_collator=default_data_collator, compute_metrics=trainer_accuracy)
        trainer.train()
        seconds = time.perf_counter() - started
    val_accuracy = next((log["eval_accuracy"] for log in reversed(trainer.state.log_history) if "eval_accuracy" in log), None)
    del trainer, model
    return {"seconds": seconds, "peak_memory_mib": memory.peak_mib, "val_accuracy": val_accuracy}


def throughput(args: BenchSettings, report: dict) -> None:
    from emotion_core.cache import ModelCache
    from emotion_core.data import MAX_LENGTH
    from study._inputs import prepare_data

    params = {**variants.get(args.variant).default_params(), **({"learning_rate": args.learning_rate} if args.learning_rate else {})}
    settings = settings_for(args)
    say(f"throughput: project setup (read and tokenize once, load the base once) for {args.variant} on {args.model}")
    started = time.perf_counter()
    tokenizer, data = prepare_data(settings)
    cache = ModelCache()  # what a study's worker keeps: the base read once
    cache.fresh_base(settings.model, variants.get(args.variant), tokenizer.pad_token_id, precision=settings.precision, labels=data.labels)
    setup = time.perf_counter() - started
    warm_up(settings, params, data, tokenizer)
    trained = len(data.train) * args.epochs
    project = project_trials(args, settings, params, data, tokenizer, args.repeats, cache)
    compiled = None
    if args.compare_compile:
        try:
            compiled = project_trials(args, replace(settings, compile=True), params, data, tokenizer, max(2, args.repeats), cache)
        except Exception as error:  # a failed compile is a finding, not a reason to lose the other numbers
            report["compile_error"] = f"{type(error).__name__}: {str(error)[:500]}"
            say(f"  compiling failed: {report['compile_error']}")
    say(f"throughput: naive trial (padding to {MAX_LENGTH}, fp32, batch {NAIVE_BATCH}, load and tokenize per trial)")
    naive = naive_trial(args, params)
    say(f"  {naive['seconds']:.1f}s, {trained / naive['seconds']:.1f} samples/s")
    steady = project[-1]
    report.update(
        naive_samples_per_s=trained / naive["seconds"],
        project_samples_per_s=trained / steady["seconds"],
        speedup=naive["seconds"] / steady["seconds"],
        naive_trial_s=naive["seconds"],
        project_trial_s=[p["seconds"] for p in project],
        project_epoch_s=steady["seconds"] / args.epochs,
        naive_epoch_s=naive["seconds"] / args.epochs,
        project_setup_s=setup,
        naive_peak_memory_mib=naive["peak_memory_mib"],
        project_peak_memory_mib=steady["peak_memory_mib"],
        naive_val_acc=naive["val_accuracy"],
        project_val_acc=steady["val_accuracy"],
    )
    say(f"throughput: naive {report['naive_samples_per_s']:.1f} samples/s, project {report['project_samples_per_s']:.1f} "
        f"samples/s: speedup {report['speedup']:.1f}x")
    if compiled:
        report.update(compile_report(args, project, compiled, naive["seconds"]))
        say(f"compile: trials {', '.join(f'{c:.1f}s' for c in report['compiled_trial_s'])} compiled against "
            f"{project[-1]['seconds']:.1f}s plain; a {TRIAL_EPOCHS:g}-epoch trial that compiles "
            f"{'pays' if report['compile_pays_for_first_trial'] else 'does not pay'}")


def warm_up(settings: StudySettings, params: dict, data, tokenizer) -> None:
    """One optimizer step on a few sentences: the libraries' first-use costs (lazy imports, first kernels) are paid
    here, by neither side of the comparison."""
    from emotion_core.training import train

    rows = min(settings.batch_size, len(data.train))
    small = replace(data, train=data.train.select(range(rows)), validation=data.validation.select(range(min(8, len(data.validation)))))
    say("throughput: warm-up (one step on a few sentences)")
    train(replace(settings.train_config(params), compile=False), small, tokenizer)  # its own cache: nothing it computes is kept


def project_trials(args, settings: StudySettings, params: dict, data, tokenizer, repeats: int, cache: ModelCache) -> list[dict]:
    from emotion_core.memory import PeakMemory
    from emotion_core.training import train

    trained = len(data.train) * args.epochs
    trials = []
    for repeat in range(repeats):
        say(f"throughput: project trial {repeat + 1}/{repeats} ({len(data.train)} sentences x {args.epochs:g} epochs, "
            f"batch {settings.batch_size}{', compiled' if settings.compile else ''})")
        with PeakMemory() as memory:
            started = time.perf_counter()
            result = train(settings.train_config(params), data, tokenizer, cache=cache)
            seconds = time.perf_counter() - started
        trials.append({"seconds": seconds, "peak_memory_mib": memory.peak_mib, "val_accuracy": result.val_accuracy})
        say(f"  {seconds:.1f}s, {trained / seconds:.1f} samples/s, val_acc={result.val_accuracy:.4f}")
    return trials


def compile_report(args, plain: list[dict], compiled: list[dict], naive_seconds: float) -> dict:
    """Compiling costs once per process (the first compiled trial) and saves on every epoch after: does a study's
    first trial of TRIAL_EPOCHS epochs already earn it back, and how many epochs does it take?"""
    plain_epoch = plain[-1]["seconds"] / args.epochs
    compiled_epoch = compiled[-1]["seconds"] / args.epochs
    overhead = compiled[0]["seconds"] - compiled[-1]["seconds"]
    saving = plain_epoch - compiled_epoch
    return {
        "compiled_trial_s": [c["seconds"] for c in compiled],
        "compiled_epoch_s": compiled_epoch,
        "compiled_speedup": naive_seconds / compiled[-1]["seconds"],
        "compiled_peak_memory_mib": compiled[-1]["peak_memory_mib"],
        "compile_overhead_s": overhead,
        "compile_break_even_epochs": overhead / saving if saving > 0 else None,
        "compile_pays_for_first_trial": overhead + TRIAL_EPOCHS * compiled_epoch < TRIAL_EPOCHS * plain_epoch,
    }


def head(args: BenchSettings, report: dict) -> None:
    from emotion_core.cache import ModelCache
    from emotion_core.training import train
    from study._inputs import prepare_data

    settings = settings_for(args, variant="head", epochs=args.trial_epochs)
    tokenizer, data = prepare_data(settings)
    chosen = {"learning_rate": args.head_learning_rate} if args.head_learning_rate else {}
    config = settings.train_config({**variants.get("head").default_params(), **chosen})
    cache = ModelCache()
    cache.fresh_base(settings.model, variants.get(config.variant), tokenizer.pad_token_id, precision=settings.precision, labels=data.labels)  # both sides start from a loaded base
    times, accuracies = {}, {}
    for name, features in (("uncached", False), ("first_cached", True), ("cached", True)):
        say(f"head: trial {name.replace('_', ' ')} ({len(data.train)} sentences x {args.trial_epochs:g} epochs)")
        started = time.perf_counter()
        result = train(replace(config, feature_cache=features), data, tokenizer, cache=cache)
        times[name] = time.perf_counter() - started
        accuracies[name] = result.val_accuracy
        say(f"  {times[name]:.2f}s, val_acc={result.val_accuracy:.4f}")
    report.update(
        head_uncached_s=times["uncached"],
        head_first_cached_s=times["first_cached"],
        head_cached_s=times["cached"],
        head_cache_speedup=times["uncached"] / times["cached"],
        head_cache_speedup_first_trial=times["uncached"] / times["first_cached"],
        head_val_acc_uncached=accuracies["uncached"],
        head_val_acc_cached=accuracies["cached"],
    )
    say(f"head: {report['head_cache_speedup']:.1f}x with the feature cache "
        f"({report['head_cache_speedup_first_trial']:.1f}x for the trial that computes the features)")


def pruning(args: BenchSettings, report: dict) -> None:
    import optuna

    from study._inputs import prepare_data
    from study._opened import OpenedStudy
    from study._trials.objective import Objective

    variant = args.pruning_variant or args.variant
    outcome = {}
    for pruner in (args.pruner, "none"):
        settings = settings_for(args, variant=variant, epochs=args.trial_epochs, pruner=pruner, trials=args.trials)
        tokenizer, data = prepare_data(settings)
        storage = optuna.storages.InMemoryStorage()
        opened = OpenedStudy(storage, optuna.create_study(direction="maximize", storage=storage), settings).with_search()
        study = opened.study
        say(f"pruning: {args.trials} {variant} trials with pruner {pruner}")

        def progress(study, trial):
            steps = records.TrialResult.read(trial).optimizer_steps or 0
            value = f"{trial.value:.4f}" if trial.value is not None else "-"
            say(f"  trial {trial.number:>2} {trial.state.name:<8} val_acc={value} steps={steps}")

        started = time.perf_counter()
        study.optimize(Objective(opened, {settings.model_labels()[0]: (tokenizer, data)}, store_checkpoints=False), n_trials=args.trials, callbacks=[progress],
                       gc_after_trial=True)
        trials = study.get_trials(deepcopy=False)
        outcome[pruner] = {
            "steps": sum(records.TrialResult.read(t).optimizer_steps or 0 for t in trials),
            "best": study.best_value,
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in trials),
            "completed": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
            "seconds": time.perf_counter() - started,
        }
    pruned, unpruned = outcome[args.pruner], outcome["none"]
    report.update(
        pruner=args.pruner,
        pruning_variant=variant,
        pruned_steps=pruned["steps"],
        unpruned_steps=unpruned["steps"],
        pruned_steps_ratio=pruned["steps"] / unpruned["steps"],
        pruned_trials=pruned["pruned"],
        completed_trials_pruned=pruned["completed"],
        best_val_acc_pruned=pruned["best"],
        best_val_acc_unpruned=unpruned["best"],
        pruning_study_s=pruned["seconds"],
        unpruned_study_s=unpruned["seconds"],
    )
    say(f"pruning: {pruned['steps']} steps with {args.pruner} vs {unpruned['steps']} without (ratio "
        f"{report['pruned_steps_ratio']:.2f}); {pruned['completed']} of {args.trials} trials completed; best val_acc "
        f"{pruned['best']:.4f} vs {unpruned['best']:.4f}")


STOPPING_PATIENCE = (5, 10, 15)


def stopping(args: BenchSettings, report: dict) -> None:
    """Replay a stored study in the order its trials finished: where each patience would have stopped it."""
    import optuna

    from study._evidence import in_finishing_order, stopping_point
    from study._studies import open_stored

    study = open_stored(args.storage, args.study_name, say=say).study
    trials = in_finishing_order(study)
    if not trials:
        report["stopping"] = {"study_name": study.study_name, "note": "no finished trial"}
        return
    seconds = [t.duration.total_seconds() if t.duration else 0.0 for t in trials]
    best = max((t.values[0] for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values), default=None)
    rows = []
    for patience in STOPPING_PATIENCE:
        stop = stopping_point(trials, patience)
        finished = stop.finished if stop is not None else len(trials)
        kept = [t for t in trials[:finished] if t.state == optuna.trial.TrialState.COMPLETE and t.values]
        at_stop = max((t for t in kept), key=lambda t: t.values[0], default=None)
        rows.append({
            "patience": patience,
            "stops": stop is not None,
            "finished_at_stop": finished,
            "last_trial": trials[finished - 1].number,
            "best_trial_at_stop": at_stop.number if at_stop is not None else None,
            "best_val_accuracy_at_stop": at_stop.values[0] if at_stop is not None else None,
            "time_saved_share": sum(seconds[finished:]) / sum(seconds) if sum(seconds) else 0.0,
        })
        where = f"after {finished} of {len(trials)} finished trials (trial {trials[finished - 1].number})" if stop else "never"
        say(f"stopping: --patience {patience} stops {where}; best then "
            f"{rows[-1]['best_val_accuracy_at_stop'] if at_stop is not None else '-'} against {best}; "
            f"{100 * rows[-1]['time_saved_share']:.0f}% of the trial time saved")
    report["stopping"] = {"study_name": study.study_name, "finished": len(trials), "best_val_accuracy": best,
                          "trial_seconds": sum(seconds), "patience": rows}


def study_flags(settings: StudySettings) -> list[str]:
    """The flags of emotion-study run that make a study with ``settings``' model, data, variant and budget."""
    flags = ["--model", settings.model, "--data", settings.data, "--variant", settings.variant, "--epochs", f"{settings.epochs:g}",
             "--batch-size", str(settings.batch_size), "--seed", str(settings.seed), "--precision", settings.precision,
             "--evaluation", settings.evaluation, "--trials", str(settings.trials), "--pruner", settings.pruner]
    for name in ("tokenizer", "max_train_samples", "max_eval_samples", "max_length"):
        if getattr(settings, name) is not None:
            flags += ["--" + name.replace("_", "-"), str(getattr(settings, name))]
    if settings.labels is not None:
        flags += ["--labels", ",".join(settings.labels)]
    return flags + (["--compile"] if settings.compile else [])


def timed_command(name: str, argv: list[str]) -> float:
    """Run ``python -m study.<name> argv`` as a user would (its output shown), and its wall time in seconds."""
    root = str(Path(__file__).resolve().parents[1])  # where the study package is, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    say(f"take-home: emotion-study {name} {shlex.join(argv)}")
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", f"study.{name}", *argv], env=env)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"emotion-study {name} exited with {done.returncode} after {seconds:.0f} s")
    return seconds


def take_home(args: BenchSettings, report: dict) -> None:
    """From a fresh study to the final model: the search's and the final's wall times, and the test accuracy."""
    from study._studies import count_finished, open_stored

    folder = (Path(args.output_dir) / "bench" / f"take-home-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}").resolve()
    folder.mkdir(parents=True)
    name = args.study_name or "take-home"
    settings = settings_for(args, storage=f"sqlite:///{folder / 'study.db'}", output_dir=str(folder / "out"), study_name=name,
                            trials=args.trials, pruner=args.pruner)
    where = ["--storage", settings.storage, "--study-name", name, "--output-dir", settings.output_dir]
    search = [*study_flags(settings), *where]
    final = [*where, "--max-train-samples", str(args.final_max_train_samples), "--epochs", f"{args.final_epochs or args.epochs:g}"]
    search_s = timed_command("run", search)
    final_s = timed_command("final", final)
    made = json.loads((settings.study_dir / "final" / "report.json").read_text())
    searched, trained = made["study_budget"], made["final_budget"]
    report["take_home"] = {
        "search_command": f"emotion-study run {shlex.join(search)}",
        "final_command": f"emotion-study final {shlex.join(final)}",
        "finished_trials": count_finished(open_stored(settings.storage, name, say=say).study),
        "search_s": search_s,
        "final_s": final_s,
        "total_s": search_s + final_s,
        "search_budget": searched,
        "final_budget": trained,
        "best_trial": made["best_trial"],
        "best_trial_val_accuracy": made["best_trial_val_accuracy"],
        "test_accuracy": made["test_accuracy"],
        "test_accuracy_ci95": made["test_accuracy_ci95"],
        "test_macro_f1": made["test_macro_f1"],
        "final_folder": str(settings.study_dir / "final"),
    }
    low, high = made["test_accuracy_ci95"]
    say(f"take-home: search {search_s:.0f} s ({report['take_home']['finished_trials']} trials on {searched['n_train']} sentences x "
        f"{searched['epochs']:g} epoch(s)), final {final_s:.0f} s ({trained['n_train']} sentences x {trained['epochs']:g} epoch(s)): "
        f"test accuracy {made['test_accuracy']:.4f} (95% interval {low:.4f}-{high:.4f}) after {search_s + final_s:.0f} s")


REPORT_SIZES = (6, 200, 1000)
SYNTHETIC_LABELS = ("sadness", "joy", "love", "anger", "fear", "surprise")


def synthetic_study(storage: str, name: str, completed: int, validation: int = 2000, seed: int = 0) -> optuna.Study:
    """A LoRA study of ``completed`` completed trials, the first the baseline, and a pruned one after every five, with
    the records run writes (StudyRecord, TrialStart, TrialResult, Evidence, three reports per epoch) and nothing
    trained: each trial's accuracy follows its learning rate, and which of ``validation`` sentences it gets right is
    drawn from it, sentence by sentence, so that nearby trials tie as trained ones do."""
    import numpy as np
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState

    from emotion_core.variants import Choices
    from study._trials.space import OPTIMIZER_SPACE

    settings = StudySettings(variant="lora")
    variant = variants.get("lora")
    space = {**OPTIMIZER_SPACE, **variant.space}
    distributions = {key: CategoricalDistribution(d.values) if isinstance(d, Choices) else FloatDistribution(d.low, d.high, log=d.log)
                     for key, d in space.items()}
    defaults = variant.default_params()
    rng = np.random.default_rng(seed)
    difficulty = rng.random(validation)  # a trial gets a sentence right when its skill, give or take noise, is above this
    study = optuna.create_study(study_name=name, storage=storage, directions=settings.directions)
    records.StudyRecord(settings=settings.identity(), labels=SYNTHETIC_LABELS, artifact_store="",
                        fingerprints={"model": "synthetic", "tokenizer": "synthetic", "data": "synthetic"}).write(study)
    started = datetime.datetime(2026, 1, 1)
    trials = []
    for number in range(completed + completed // 5):
        baseline, pruned = number == 0, number % 6 == 5
        if baseline:
            params = {key: defaults[key] for key in space}
        else:
            params = {key: rng.choice(d.choices).item() if isinstance(d, CategoricalDistribution)
                      else float(np.exp(rng.uniform(np.log(d.low), np.log(d.high))) if d.log else rng.uniform(d.low, d.high))
                      for key, d in distributions.items()}
        skill = 0.93 - 0.05 * (np.log10(params["learning_rate"]) - np.log10(2e-3)) ** 2 - 0.1 * params["weight_decay"]
        curve = [float(skill - 0.2 / (report + 1)) for report in range(9)]  # three reports per epoch, three epochs
        steps = 1500
        correct = None if pruned else difficulty + 0.05 * rng.standard_normal(validation) < skill
        trial = optuna.trial.create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE, value=curve[2] if pruned else float(correct.mean()),
            params=params, distributions=distributions,
            intermediate_values={(report + 1) * steps // 9: accuracy for report, accuracy in enumerate(curve[:3] if pruned else curve)})
        trial.datetime_start = started + datetime.timedelta(minutes=11 * number)
        trial.datetime_complete = trial.datetime_start + datetime.timedelta(minutes=10)
        # The records as run writes them, onto the trial before it is stored (one write per trial, not one per attr).
        records.TrialStart(variant="lora", baseline=baseline).write(trial)
        records.TrialResult(trainable_params=811_008, total_params=125_250_816, peak_memory_mib=2000.0 + 10 * params["lora_r"],
                            weights_mib=477.8, train_seconds=600.0, train_samples_per_second=80.0, optimizer_steps=steps,
                            n_train=16_000, n_validation=validation, epoch_val_accuracy=curve[2::3]).write(trial)
        if correct is not None:
            records.Evidence(correct=correct, data="synthetic").write(trial)
        trials.append(trial)
    study.add_trials(trials)
    return study


def report_speed(args: BenchSettings, report: dict, sizes=REPORT_SIZES) -> None:
    """Time report (text and --json, each a command as a person runs it), the dashboard note and run's closing summary
    on synthetic studies of ``sizes`` completed trials, and the longest line the text report prints."""
    import optuna

    from study._tuning import save_note, summary_lines

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            storage = f"sqlite:///{Path(folder) / f'report-{size}.db'}"
            say(f"report: building a synthetic LoRA study of {size} completed trials")
            started = time.perf_counter()
            synthetic_study(storage, "synthetic", size)
            row = {"completed_trials": size, "build_s": time.perf_counter() - started}
            for key, flags in (("text_s", []), ("json_s", ["--json"])):
                started = time.perf_counter()
                done = subprocess.run([sys.executable, "-m", "study.report", "--storage", storage, "--study-name", "synthetic", *flags],
                                      capture_output=True, text=True, check=True)
                row[key] = time.perf_counter() - started
                if not flags:
                    row["longest_line"] = max(len(line) for line in done.stdout.splitlines())
            study = optuna.load_study(study_name="synthetic", storage=storage)
            for key, part in (("note_s", save_note), ("run_summary_s", summary_lines)):
                started = time.perf_counter()
                part(study)
                row[key] = time.perf_counter() - started
            rows.append(row)
            say(f"report: {size} trials: text {row['text_s']:.1f}s, --json {row['json_s']:.1f}s, note {row['note_s']:.1f}s, "
                f"run's summary {row['run_summary_s']:.1f}s; longest line {row['longest_line']} characters")
    report["report"] = rows


def run_bench(args: BenchSettings) -> int:
    import torch

    from emotion_core.precision import use_gpu

    if args.threads:
        torch.set_num_threads(args.threads)
    report: dict = {
        "model": args.model, "data": args.data, "variant": args.variant, "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples, "epochs": args.epochs, "batch_size": args.batch_size,
        "naive_batch_size": NAIVE_BATCH, "compile": args.compile, "precision": args.precision,
        "device": torch.cuda.get_device_name() if use_gpu() else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "python": platform.python_version(),
    }
    if set(args.parts) - {"stopping", "take-home", "report"}:
        report["project_bf16"] = variants.get(args.variant).autocast_bf16(args.model, args.precision)
    started = time.perf_counter()
    for part, run in (("throughput", throughput), ("head", head), ("pruning", pruning), ("stopping", stopping), ("take-home", take_home),
                      ("report", report_speed)):
        if part in args.parts:
            run(args, report)
    report["bench_s"] = time.perf_counter() - started
    text = json.dumps(report, indent=2)
    print(text)
    if args.json is not None:
        Path(args.json).write_text(text + "\n")
    return 0


COMMAND = Command(
    name="bench",
    description="Measure, side by side in one run: the project's trial against a naive HF Trainer setup (samples/s, peak memory), "
    "a head trial with and without the feature cache, a study with and without the pruner, (stopping) where --patience "
    "would have stopped a stored study, (take-home) the wall time from a fresh study to its final model on a larger "
    "budget, with that model's test accuracy, and (report) how long report takes on synthetic studies of 6, 200 and 1000 "
    "trials.",
    settings=BenchSettings,
    execute=run_bench,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
