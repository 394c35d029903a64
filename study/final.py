"""python -m study.final: retrain the best trial's parameters and report its test accuracy on the whole test split.

Which trial: ``--trial N`` when given; else the best trial; for an ``accuracy,memory`` study the Pareto-front trial
with the highest validation accuracy (the front's other trials trade accuracy for memory; pick one with --trial).
``--seeds N`` retrains it with N seeds and reports the mean, its standard deviation and a 95% bootstrap interval over
test sentences and seeds (one seed by default: the interval is then the test sentences' alone).

Writes <output-dir>/<storage>/<study>/final/: report.json, report.md, confusion_matrix.png and the trained head or
adapter as its variant saves it. It uploads them to the study's artifact store (study.artifacts), where the dashboard
and study.predict on any machine find them, saves the report as the study's note, and stores test_accuracy and where
the files are as study user attrs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from dataclasses import replace
from pathlib import Path

import optuna

from study.artifacts import dashboard_command, open_store, upload
from study.cli import add_settings_arguments, add_source_arguments, check_positive, configure_logging, run_main
from study.errors import logged_to
from study.plots import save_confusion_matrix
from study.progress import interval_text, params_text
from study.settings import StudySettings
from study.studies import FINAL_ATTR, artifact_location, load_stored_study, pick_trial, stored_settings
from study.urls import mask_url


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.final",
        description="Retrain the study's best trial (train split, selecting on validation), evaluate it once on the whole "
        "test split, and write report.json, report.md and the trained weights.",
    )
    add_settings_arguments(parser, ["storage", "study_name", "artifact_store", "output_dir", "verbose"])
    add_source_arguments(parser)
    parser.add_argument("--trial", type=int, help="retrain this completed trial instead of the best (or the front's most accurate)")
    parser.add_argument("--seeds", type=int, default=1, help="retrain with this many seeds (the study's seed and the next ones) and "
                        "report the mean test accuracy, its standard deviation and a 95%% bootstrap interval over test sentences "
                        "and seeds; the first seed's model is the one saved (default: %(default)s)")
    return parser


def build_report(settings: StudySettings, trial: optuna.trial.FrozenTrial, retrained, data) -> dict:
    """report.json: the trial, the budget, the test accuracy over seeds (retrained: study.retraining.Retrained) and the
    saved model's per-label numbers."""
    first = retrained.results[0]  # the saved model: its per-class numbers and confusion matrix
    return {
        **first.summary(),
        **retrained.interval,
        "seeds": retrained.seeds,
        "study_name": settings.resolved_study_name(),
        "storage": mask_url(settings.storage),
        "model": settings.model,
        "data": settings.data,
        "variant": retrained.config.variant,
        "tokenizer": settings.tokenizer_name,
        "objective": settings.objective,
        "best_trial": trial.number,
        "best_params": trial.params,
        "best_trial_val_accuracy": trial.values[0],
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "n_test": first.test["n"],
        "per_class": first.test["per_class"],
        "confusion_matrix": first.test["confusion_matrix"],
        "labels": list(data.labels),
        "train_config": retrained.config.to_dict(),
        "weights": first.saved_to,
    }


def report_markdown(report: dict) -> str:
    lines = [
        f"# Final report: {report['study_name']}",
        "",
        f"Model `{report['model']}`, variant **{report['variant']}**, data `{report['data']}`.",
        f"Trial {report['best_trial']} with params `{json.dumps(report['best_params'])}`, retrained on {report['n_train']} training "
        f"sentences for {report['epochs']:g} epoch(s) at batch {report['batch_size']}, selected on {report['n_validation']} "
        f"validation sentences, tested once on all {report['n_test']} test sentences.",
        "",
        "| metric | value |",
        "|---|---|",
        f"| test accuracy | {interval_text(report)} |",
        f"| test macro F1 | {interval_text(report, 'test_macro_f1')} |",
        f"| seeds | {', '.join(map(str, report['seeds']))} (test accuracy {', '.join(f'{a:.4f}' for a in report['test_accuracy_per_seed'])}) |",
        f"| test sentences | {report['n_test']} |",
        f"| val accuracy (retrained, seed {report['seeds'][0]}) | {report['val_accuracy']:.4f} |",
        f"| trainable parameters | {report['trainable_params']:,} |",
        f"| weights (MiB, get_memory_footprint) | {report['weights_mib']} |",
        f"| training peak memory (MiB) | {report['peak_memory_mib']} |",
        f"| train seconds | {report['train_seconds']} |",
        "",
        "",
        interval_note(report),
        "",
        f"Per label and confusion matrix: the model of seed {report['seeds'][0]}, the one saved.",
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


def interval_note(report: dict) -> str:
    low, high = report["test_accuracy_ci95"]
    width = f"{(high - low) * 100 / 2:.1f}"
    if len(report["seeds"]) == 1:
        return (f"The 95% interval is a bootstrap over the {report['n_test']} test sentences of one seed's model: ±{width} points. "
                "A seed's own luck is not in it; --seeds 3 adds it.")
    return (f"Mean of {len(report['seeds'])} seeds; the 95% interval (±{width} points) is a bootstrap over the test sentences and "
            "the seeds.")


def publish(study: optuna.Study, settings: StudySettings, report: dict, folder: Path) -> dict:
    """Into the artifact store, for the dashboard and every machine: the report, its plot and the model's files; the
    report as the study's note; where they are as the study's user attr ``final``."""
    from optuna_dashboard import save_note
    from optuna_dashboard.artifact import get_artifact_path

    store = open_store(settings.artifact_location)
    files = [folder / "confusion_matrix.png", folder / "report.json", folder / "report.md", *sorted((folder / "model").iterdir())]
    ids = {str(path.relative_to(folder)): upload(store, study, path) for path in files if path.is_file()}
    # The dashboard serves each artifact at get_artifact_path: the note links the files and shows the image.
    links = [f"- [{name}]({get_artifact_path(study, artifact_id)})" for name, artifact_id in ids.items()]
    save_note(study, report_markdown(report) + f"\n![confusion matrix]({get_artifact_path(study, ids['confusion_matrix.png'])})\n\n"
              f"In the artifact store `{settings.artifact_location}`:\n\n" + "\n".join(links) + "\n")
    final = {"files": ids, "trial": report["best_trial"], "time": datetime.datetime.now().isoformat(timespec="seconds")}
    study.set_user_attr(FINAL_ATTR, final)
    for key in ("test_accuracy", "test_accuracy_ci95", "test_macro_f1", "seeds"):
        study.set_user_attr(key, report[key])
    return final


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    check_positive("seeds", args.seeds)
    configure_logging(args.verbose)
    study = load_stored_study(args.storage, args.study_name)
    settings = stored_settings(study, storage=args.storage, output_dir=args.output_dir, verbose=args.verbose, artifact_store=args.artifact_store,
                               model=args.model, tokenizer=args.tokenizer, data=args.data)
    settings = replace(settings, artifact_store=artifact_location(study, settings))
    with logged_to(settings.study_dir, settings.batch_size):
        return retrain_trial(study, settings, args.trial, args.seeds)


def retrain_trial(study: optuna.Study, settings: StudySettings, number: int | None, seeds: int) -> int:
    from study.final_model import export_standalone
    from study.inputs import prepare_data
    from study.retraining import retrain

    chosen = pick_trial(study, number)
    tokenizer, data = prepare_data(settings)
    out = settings.study_dir / "final"
    print(f"retraining trial {chosen.number} ({params_text(chosen.params)}) with {seeds} seed(s) on {len(data.train)} sentences "
          f"x {settings.epochs:g} epoch(s), testing on {len(data.test)}", flush=True)
    retrained = retrain(settings.train_config(chosen.params), data, tokenizer, seeds, label=f"trial {chosen.number}", save_to=out / "model")
    report = build_report(settings, chosen, retrained, data)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_markdown(report))
    image = save_confusion_matrix(report, out / "confusion_matrix.png")
    publish(study, settings, report, out)
    print("writing the standalone model folder (transformers.pipeline loads it as it is) ...", flush=True)
    standalone = export_standalone(out)
    print(f"test accuracy {interval_text(report)}, macro F1 {interval_text(report, 'test_macro_f1')} on {report['n_test']} sentences")
    print(f"report: {out / 'report.json'}, {out / 'report.md'}, {image}; weights: {report['weights']}")
    print(f"standalone model: {standalone}  (pipeline(\"text-classification\", model=\"{standalone}\"))")
    print(f"dashboard (note and artifacts): {dashboard_command(settings.storage, settings.artifact_location, settings.home)}")
    print(f"predict:   python -m study.predict --storage {mask_url(settings.storage)} --study-name {study.study_name} \"i feel wonderful today\"")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
