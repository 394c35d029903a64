"""python -m study.final: retrain the best trial's parameters and report test accuracy, once, on the whole test split.

Which trial: ``--trial N`` when given; else the best trial; for an ``accuracy,memory`` study the Pareto-front trial
with the highest validation accuracy (the front's other trials trade accuracy for memory; pick one with --trial).

Writes <output-dir>/<study>/final/report.json, report.md, confusion_matrix.png and the trained head or adapter as
safetensors. For optuna-dashboard it saves the report as the study's note, uploads the confusion matrix, the report
and the weights to Optuna's artifact store in <output-dir>/<study>/artifacts, and stores test_accuracy as a study
user attr.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import optuna

from emotion_core.training import Result, TrainConfig, train
from study.cli import add_settings_arguments, configure_logging, run_main
from study.errors import logged_to
from study.inputs import prepare_data
from study.plots import save_confusion_matrix
from study.progress import params_text
from study.settings import StudySettings
from study.studies import load_stored_study, pick_trial, stored_settings
from study.urls import mask_url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.final",
        description="Retrain the study's best trial (train split, selecting on validation), evaluate it once on the whole "
        "test split, and write report.json, report.md and the trained weights.",
    )
    add_settings_arguments(parser, ["storage", "study_name", "output_dir", "verbose"])
    parser.add_argument("--trial", type=int, help="retrain this completed trial instead of the best (or the front's most accurate)")
    return parser


def build_report(settings: StudySettings, trial: optuna.trial.FrozenTrial, config: TrainConfig, result: Result, labels) -> dict:
    test = result.test or {}
    return {
        **result.summary(),
        "study_name": settings.resolved_study_name(),
        "storage": mask_url(settings.storage),
        "model": settings.model,
        "data": settings.data,
        "variant": config.variant,
        "tokenizer": settings.tokenizer_name,
        "objective": settings.objective,
        "best_trial": trial.number,
        "best_params": trial.params,
        "best_trial_val_accuracy": trial.values[0],
        "test_accuracy": test.get("accuracy"),
        "test_macro_f1": test.get("macro_f1"),
        "n_test": test.get("n"),
        "per_class": test.get("per_class"),
        "confusion_matrix": test.get("confusion_matrix"),
        "labels": list(labels),
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
        f"| weights (MiB, get_memory_footprint) | {report['weights_mib']} |",
        f"| training peak memory (MiB) | {report['peak_memory_mib']} |",
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


def publish(study: optuna.Study, settings: StudySettings, report: dict, files: list[Path]) -> list[str]:
    """What the dashboard shows: the report as the study's note, the files in Optuna's artifact store."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact
    from optuna_dashboard import save_note
    from optuna_dashboard.artifact import get_artifact_path

    settings.artifact_dir.mkdir(parents=True, exist_ok=True)
    store = FileSystemArtifactStore(str(settings.artifact_dir))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ids = [upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=study) for path in files]
    # The dashboard serves each artifact at get_artifact_path: the note links the files and shows the image.
    links = [f"- [{path.name}]({get_artifact_path(study, artifact_id)})" for path, artifact_id in zip(files, ids)]
    images = [f"![{path.stem}]({get_artifact_path(study, i)})" for path, i in zip(files, ids) if path.suffix == ".png"]
    save_note(
        study,
        report_markdown(report) + "\n" + "\n".join(images)
        + f"\n\nIn the artifact store `{settings.artifact_dir}` (optuna-dashboard --artifact-dir):\n\n" + "\n".join(links) + "\n",
    )
    study.set_user_attr("test_accuracy", report["test_accuracy"])
    study.set_user_attr("test_macro_f1", report["test_macro_f1"])
    study.set_user_attr("final_trial", report["best_trial"])
    return ids


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    study = load_stored_study(args.storage, args.study_name)
    settings = stored_settings(study, storage=args.storage, output_dir=args.output_dir, verbose=args.verbose)
    with logged_to(settings.study_dir, settings.batch_size):
        return retrain(study, settings, args.trial)


def retrain(study: optuna.Study, settings: StudySettings, number: int | None) -> int:
    chosen = pick_trial(study, number)
    config = settings.train_config(chosen.params)
    tokenizer, data = prepare_data(settings)
    out = settings.study_dir / "final"
    print(f"retraining trial {chosen.number} ({config.variant}, {params_text(chosen.params)}) on {len(data.train)} sentences ...", flush=True)
    result = train(config, data, tokenizer, evaluate_test=True, save_to=out / "model")
    if result.test is None:
        raise RuntimeError(f"the retrained trial {chosen.number} diverged ({result.diverged}); nothing to report")
    report = build_report(settings, chosen, config, result, data.labels)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    image = save_confusion_matrix(report, out / "confusion_matrix.png")
    publish(study, settings, report, [image, out / "report.json", *sorted(p for p in (out / "model").iterdir() if p.is_file())])
    print(f"test accuracy {report['test_accuracy']:.4f}, macro F1 {report['test_macro_f1']:.4f} on {report['n_test']} sentences")
    print(f"report: {out / 'report.json'}, {out / 'report.md'}, {image}; weights: {result.saved_to}")
    print(f"dashboard (note and artifacts): optuna-dashboard {mask_url(settings.storage)} --artifact-dir {settings.artifact_dir}")
    print(f"predict:   python -m study.predict --study-name {study.study_name} --output-dir {settings.output_dir} \"i feel wonderful today\"")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
