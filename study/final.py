"""python -m study.final: retrain the best trial's parameters and report test accuracy, once, on the whole test split.

Writes <output-dir>/<study>/final/report.json and report.md and the trained head or adapter as safetensors,
and stores test_accuracy as a study user attr so that the dashboard shows it.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

import optuna

from emotion_core.labels import LABELS
from emotion_core.train import Result, TrainConfig, train
from study.cli import UsageError, add_settings_arguments, configure_logging, run_main
from study.run import prepare_data
from study.settings import StudySettings
from study.storage import mask_url, open_storage, study_exists


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.final",
        description="Retrain the study's best trial (train split, selecting on validation), evaluate it once on the whole "
        "test split, and write report.json, report.md and the trained weights.",
    )
    add_settings_arguments(parser, ["storage", "study_name", "output_dir", "verbose"])
    return parser


def load_settings(study: optuna.Study, args: argparse.Namespace) -> StudySettings:
    stored = study.user_attrs.get("settings")
    if stored is None:
        raise UsageError(f"study {study.study_name!r} was not made by study.run: it stores no settings")
    known = {f.name for f in fields(StudySettings)}
    return StudySettings(
        **{k: v for k, v in stored.items() if k in known},
        storage=args.storage,
        study_name=study.study_name,
        output_dir=args.output_dir,
        verbose=args.verbose,
    )


def build_report(settings: StudySettings, trial: optuna.trial.FrozenTrial, config: TrainConfig, result: Result) -> dict:
    test = result.test or {}
    return {
        "study_name": settings.resolved_study_name(),
        "storage": mask_url(settings.storage),
        "model": settings.model,
        "data": settings.data,
        "variant": config.variant,
        "best_trial": trial.number,
        "best_params": trial.params,
        "best_trial_val_accuracy": trial.value,
        "val_accuracy": result.val_accuracy,
        "test_accuracy": test.get("accuracy"),
        "test_macro_f1": test.get("macro_f1"),
        "n_test": test.get("n"),
        "per_class": test.get("per_class"),
        "confusion_matrix": test.get("confusion_matrix"),
        "labels": list(LABELS),
        "trainable_params": result.trainable_params,
        "peak_memory_mib": round(result.peak_memory_mib, 1),
        "train_seconds": round(result.train_seconds, 2),
        "train_config": config.to_dict(),
        "weights": result.saved_to,
    }


def report_markdown(report: dict) -> str:
    lines = [
        f"# Final report: {report['study_name']}",
        "",
        f"Model `{report['model']}`, variant **{report['variant']}**, data `{report['data']}`.",
        f"Best trial {report['best_trial']} with params `{json.dumps(report['best_params'])}`.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {report['test_accuracy']:.4f} |",
        f"| test macro F1 | {report['test_macro_f1']:.4f} |",
        f"| test sentences | {report['n_test']} |",
        f"| val accuracy (retrained) | {report['val_accuracy']:.4f} |",
        f"| trainable parameters | {report['trainable_params']:,} |",
        f"| peak memory (MiB) | {report['peak_memory_mib']} |",
        f"| train seconds | {report['train_seconds']} |",
        "",
        "| label | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for label, row in report["per_class"].items():
        lines.append(f"| {label} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {row['support']} |")
    lines += ["", "Confusion matrix (rows: true, columns: predicted):", "", "| | " + " | ".join(report["labels"]) + " |"]
    lines.append("|---" * (len(report["labels"]) + 1) + "|")
    for label, row in zip(report["labels"], report["confusion_matrix"]):
        lines.append(f"| {label} | " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    storage = open_storage(args.storage, heartbeat=False)
    name = args.study_name or StudySettings().resolved_study_name()
    if not study_exists(storage, name):
        raise UsageError(f"no study {name!r} in {mask_url(args.storage)}; run python -m study.run first or pass --study-name")
    study = optuna.load_study(study_name=name, storage=storage)
    settings = load_settings(study, args)
    try:
        best = study.best_trial
    except ValueError:
        raise UsageError(f"study {name!r} has no completed trial yet; run python -m study.run first") from None
    config = settings.train_config(best.params)
    tokenizer, data = prepare_data(settings)
    out = settings.study_dir / "final"
    print(f"retraining trial {best.number} ({config.variant}, {best.params}) on {len(data.train)} sentences ...", flush=True)
    result = train(config, data, tokenizer, evaluate_test=True, save_to=out / "model")
    report = build_report(settings, best, config, result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    study.set_user_attr("test_accuracy", report["test_accuracy"])
    study.set_user_attr("test_macro_f1", report["test_macro_f1"])
    print(f"test accuracy {report['test_accuracy']:.4f}, macro F1 {report['test_macro_f1']:.4f} on {report['n_test']} sentences")
    print(f"report: {out / 'report.json'} and {out / 'report.md'}; weights: {result.saved_to}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
