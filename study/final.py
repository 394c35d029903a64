"""emotion-study final (also python -m study.final): retrain the study's best setup and test it once on the whole test
split.

Which trial: ``--trial N``; else the best trial (for an ``accuracy,memory`` study the Pareto-front trial with the highest
validation accuracy). ``--top K`` retrains the K best trials and keeps the one whose retraining validates best: the
study's own pick may owe its place to validation noise (its value minus its retrained value is the pick's optimism).
``--seeds N`` retrains with N seeds (the ones after the study's, whose luck picked the trial) and reports the mean, its
standard deviation and a 95% bootstrap interval over test sentences and seeds. Only the kept setup is tested, once.

Writes <output-dir>/<storage>/<study>/final/ (report.json, report.md, confusion_matrix.png, the trained weights under
model/, a standalone transformers model under standalone/), built in a staging folder and moved into place once
complete; uploads the files to the study's artifact store, where the dashboard and predict on any machine find them,
saves the report as the study's note, and records the final model in the study (records.FinalRecord) last.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from study import records
from study._command import Command
from study._errors import logged_to
from study._urls import mask_url
from study.settings import FinalSettings, StudySettings

if TYPE_CHECKING:
    import optuna


def candidate_rows(candidates, retrained) -> list[dict]:
    """Each candidate's study value, retrained value and optimism (study value minus retrained value)."""
    return [{"trial": trial.number, "params": trial.params, "study_val_accuracy": trial.values[0],
             "retrained_val_accuracy": again.val_accuracy, "retrained_val_accuracy_per_seed": [r.val_accuracy for r in again.results],
             "optimism": trial.values[0] - again.val_accuracy}
            for trial, again in zip(candidates, retrained)]


def build_report(settings: StudySettings, trial: optuna.trial.FrozenTrial, retrained, tested, data, rows: list[dict], weights: str) -> dict:
    """report.json: the trial, the budget, the candidates, the test accuracy over seeds and the saved model's per-label numbers."""
    first = retrained.results[0]  # the saved model: its per-class numbers and confusion matrix
    return {
        **first.summary(),
        **tested.interval,
        "val_accuracy": retrained.val_accuracy,
        "seeds": retrained.seeds,
        "study_name": settings.resolved_study_name(),
        "storage": mask_url(settings.storage),
        "model": settings.model,
        "data": settings.data,
        "variant": retrained.config.variant,
        "tokenizer": settings.tokenizer_name,
        "objective": settings.objective,
        "evaluation": settings.evaluation,
        "best_trial": trial.number,
        "best_params": trial.params,
        "best_trial_val_accuracy": trial.values[0],
        "candidates": rows,
        "study_pick_optimism": rows[0]["optimism"],
        "epochs": settings.epochs,
        "batch_size": settings.batch_size,
        "n_test": tested.first["n"],
        "per_class": tested.first["per_class"],
        "confusion_matrix": tested.first["confusion_matrix"],
        "labels": list(data.labels),
        "max_length": data.max_length,
        "train_config": retrained.config.to_dict(),
        "weights": weights,
    }


def report_markdown(report: dict) -> str:
    from study._show.text import interval_text

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
        f"| val accuracy (retrained, mean of the seeds) | {report['val_accuracy']:.4f} |",
        f"| trainable parameters | {report['trainable_params']:,} |",
        f"| weights (MiB, get_memory_footprint) | {report['weights_mib']} |",
        f"| training peak memory (MiB) | {report['peak_memory_mib']} |",
        f"| train seconds | {report['train_seconds']} |",
        "",
        interval_note(report),
        "",
        "Candidates (the study's value against the retrained one; optimism: the first minus the second):",
        "",
        "| trial | study val accuracy | retrained val accuracy | optimism | kept |",
        "|---|---|---|---|---|",
    ]
    for row in report["candidates"]:
        kept = "yes, tested" if row["trial"] == report["best_trial"] else ""
        lines.append(f"| {row['trial']} | {row['study_val_accuracy']:.4f} | {row['retrained_val_accuracy']:.4f} | "
                     f"{100 * row['optimism']:+.1f} points | {kept} |")
    lines += [
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


def publish(study: optuna.Study, settings: StudySettings, report: dict, staging: Path) -> records.FinalRecord:
    """Into the artifact store, for the dashboard and every machine: the report, its plot and the model's files; the
    report as the study's note; and, last, the FinalRecord that says where they are."""
    from optuna_dashboard.artifact import get_artifact_path

    from study._backends.artifacts import open_store, upload
    from study._final_model import mark
    from study._tuning import save_note

    store = open_store(settings.artifact_location)
    files = [staging / "confusion_matrix.png", staging / "report.json", staging / "report.md", *sorted((staging / "model").iterdir())]
    ids = {str(path.relative_to(staging)): upload(store, study, path) for path in files if path.is_file()}
    # The dashboard serves each artifact at get_artifact_path: the note links the files and shows the image.
    links = [f"- [{name}]({get_artifact_path(study, artifact_id)})" for name, artifact_id in ids.items()]
    save_note(study, report_markdown(report) + f"\n![confusion matrix]({get_artifact_path(study, ids['confusion_matrix.png'])})\n\n"
              f"In the artifact store `{settings.artifact_location}`:\n\n" + "\n".join(links) + "\n")
    final = records.FinalRecord(trial=report["best_trial"], files=ids, time=datetime.datetime.now().isoformat(timespec="seconds"),
                                test_accuracy=report["test_accuracy"], test_accuracy_ci95=report["test_accuracy_ci95"],
                                test_macro_f1=report["test_macro_f1"], seeds=report["seeds"])
    mark(staging, final)
    final.write(study)
    return final


def swap_in(staging: Path, out: Path) -> None:
    """``staging`` becomes ``out``; the previous ``out`` goes only once the new one is in place."""
    previous = out.with_name(f".{out.name}-previous-{os.getpid()}")
    if out.exists():
        out.rename(previous)
    staging.rename(out)
    shutil.rmtree(previous, ignore_errors=True)


def remove_stale_staging(folder: Path) -> None:
    """Staging folders that a killed final left behind (their process is gone)."""
    import psutil

    for staging in folder.glob(".final-*-[0-9]*"):
        if not psutil.pid_exists(int(staging.name.rsplit("-", 1)[1])):
            shutil.rmtree(staging, ignore_errors=True)


def retrain_and_test(study: optuna.Study, settings: StudySettings, chosen: FinalSettings) -> int:
    from emotion_core.cache import ModelCache
    from study._backends.artifacts import dashboard_command
    from study._final_model import export_standalone
    from study._inputs import prepare_data
    from study._retraining import retrain, test
    from study._show.plots import save_confusion_matrix
    from study._show.text import interval_text, params_text
    from study._studies import pick_trial, top_trials
    from study._trackers import trial_trackers

    candidates = [pick_trial(study, chosen.trial)] if chosen.top == 1 else top_trials(study, chosen.top)
    if len(candidates) < chosen.top:
        print(f"note: --top {chosen.top}, but the study has {len(candidates)} completed trial(s): retraining those")
    tokenizer, data = prepare_data(settings)
    seeds = [settings.seed + 1 + k for k in range(chosen.seeds)]
    out = settings.study_dir / "final"
    remove_stale_staging(settings.study_dir)
    staging = settings.study_dir / f".final-staging-{os.getpid()}"
    cache = ModelCache()
    trackers = trial_trackers(chosen.report_to, study.study_name, settings.study_dir)
    try:
        retrained = []
        for trial in candidates:
            print(f"retraining trial {trial.number} ({params_text(trial.params)}) with seed(s) {', '.join(map(str, seeds))} on "
                  f"{len(data.train)} sentences x {settings.epochs:g} epoch(s)", flush=True)
            config = settings.train_config(trial.params, len(data.validation))
            retrained.append(retrain(config, data, tokenizer, seeds, label=f"trial {trial.number}",
                                     into=staging / "candidates" / f"trial-{trial.number}", cache=cache, trackers=trackers, params=trial.params))
        rows = candidate_rows(candidates, retrained)
        kept = max(range(len(candidates)), key=lambda i: (retrained[i].val_accuracy, -i))
        trial, again = candidates[kept], retrained[kept]
        if len(candidates) > 1:
            print(f"kept trial {trial.number}: retrained val accuracy {again.val_accuracy:.4f}, the best of the {len(candidates)} "
                  "candidates; testing it once on the test split", flush=True)
        tested = test(again, data, tokenizer, label=f"trial {trial.number}", cache=cache)
        shutil.move(str(again.folders[0]), str(staging / "model"))
        shutil.rmtree(staging / "candidates")
        weights = str(out / "model" / next(p.name for p in sorted((staging / "model").iterdir()) if p.suffix == ".safetensors"))
        report = build_report(settings, trial, again, tested, data, rows, weights)
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "report.md").write_text(report_markdown(report))
        save_confusion_matrix(report, staging / "confusion_matrix.png")
        print("writing the standalone model folder (transformers.pipeline loads it as it is) ...", flush=True)
        export_standalone(staging)
        publish(study, settings, report, staging)
        swap_in(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"test accuracy {interval_text(report)}, macro F1 {interval_text(report, 'test_macro_f1')} on {report['n_test']} sentences")
    if len(candidates) > 1 or chosen.seeds > 1:
        print(f"optimism of the study's pick (trial {rows[0]['trial']}): {100 * rows[0]['optimism']:+.1f} points "
              f"(study value {rows[0]['study_val_accuracy']:.4f}, retrained {rows[0]['retrained_val_accuracy']:.4f})")
    print(f"report: {out / 'report.json'}, {out / 'report.md'}, {out / 'confusion_matrix.png'}; weights: {report['weights']}")
    standalone = out / "standalone"
    print(f"standalone model: {standalone}  (pipeline(\"text-classification\", model=\"{standalone}\"))")
    print(f"dashboard (note and artifacts): {dashboard_command(settings.storage, settings.artifact_location, settings.storage_folder)}")
    print(f"predict:   emotion-study predict --storage {mask_url(settings.storage)} --study-name {study.study_name!r} "
          "\"i feel wonderful today\"")
    return 0


def run_final(chosen: FinalSettings) -> int:
    from study._studies import artifact_location, load_stored_study, stored_settings

    _, study = load_stored_study(chosen.storage, chosen.study_name)
    settings = stored_settings(study, storage=chosen.storage, output_dir=chosen.output_dir, verbose=chosen.verbose,
                               artifact_store=chosen.artifact_store, model=chosen.model, tokenizer=chosen.tokenizer, data=chosen.data)
    settings = replace(settings, artifact_store=artifact_location(study, settings))
    with logged_to(settings.study_dir, settings.batch_size):
        return retrain_and_test(study, settings, chosen)


COMMAND = Command(
    name="final",
    description="Retrain the study's best trial (train split, selecting on validation), evaluate it once on the whole test "
    "split, and write report.json, report.md, the trained weights and a standalone transformers model.",
    settings=FinalSettings,
    execute=run_final,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
