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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from study import records
from study._command import Command
from study._errors import logged_to
from study._urls import mask_url
from study.settings import FinalSettings, StudySettings, model_label

if TYPE_CHECKING:
    import optuna

    from study._opened import OpenedStudy
    from study._retraining import Retrained, Tested


def candidate_rows(candidates, retrained) -> list[dict]:
    """Each candidate's study value, retrained value and optimism (study value minus retrained value)."""
    return [{"trial": trial.number, "params": trial.params, "study_val_accuracy": trial.values[0],
             "retrained_val_accuracy": again.val_accuracy, "retrained_val_accuracy_per_seed": [r.val_accuracy for r in again.results],
             "optimism": trial.values[0] - again.val_accuracy}
            for trial, again in zip(candidates, retrained)]


def final_settings(settings: StudySettings, chosen: FinalSettings, max_length: int | None) -> StudySettings:
    """The study's settings at the final budget (--max-train-samples, --epochs, --batch-size where given). Another
    training subset keeps the tokens a text keeps as the study chose them (``max_length``, which auto chooses from the
    training texts), so that the final model reads texts as the searched trials did."""
    given = chosen.max_train_samples
    train = settings.max_train_samples if given is None else None if given == "all" else given
    changes = {"max_train_samples": train, "epochs": chosen.epochs or settings.epochs,
               "batch_size": chosen.batch_size or settings.batch_size}
    if train != settings.max_train_samples and max_length is not None:
        changes["max_length"] = max_length
    return replace(settings, **changes)


def budget(settings: StudySettings, n_train: int | str) -> dict:
    return {"max_train_samples": settings.max_train_samples, "n_train": n_train, "epochs": settings.epochs,
            "batch_size": settings.batch_size}


def budget_text(report: dict) -> str:
    """searched on 2000 sentences x 1 epoch(s) at batch 16, trained on 16000 x 2 epoch(s) at batch 16"""
    searched, trained = report["study_budget"], report["final_budget"]
    if (searched["n_train"], searched["epochs"], searched["batch_size"]) == (trained["n_train"], trained["epochs"], trained["batch_size"]):
        return f"searched and trained on {trained['n_train']} sentences x {trained['epochs']:g} epoch(s) at batch {trained['batch_size']}"
    return (f"searched on {searched['n_train']} sentences x {searched['epochs']:g} epoch(s) at batch {searched['batch_size']}, "
            f"trained on {trained['n_train']} x {trained['epochs']:g} epoch(s) at batch {trained['batch_size']}")


def checkpoint_key(label: str, seed: int, settings: StudySettings) -> str:
    """What names one final retraining's checkpoints: a rerun of the same command finds them, another budget does not."""
    train = settings.max_train_samples or "all"
    return f"final-{label}-seed{seed}-train{train}-epochs{settings.epochs:g}-batch{settings.batch_size}"


@dataclass
class AgainstDefaults:
    """The study's baseline parameters of the kept trial's variant, trained at the final budget with the same seeds and
    tested once: ``gain`` is the kept trial's test accuracy minus theirs (study._retraining.paired_gain)."""

    params: dict
    trial: optuna.trial.FrozenTrial | None  # the baseline trial that holds them; None: the variant's defaults, no trial
    retrained: Retrained
    tested: Tested
    gain: dict
    same: bool  # the kept trial is the baseline: nothing else was trained

    def as_dict(self, tuned: Tested) -> dict:
        source = f"baseline trial {self.trial.number}" if self.trial is not None else "the variant's defaults (no baseline trial)"
        return {"defaults_params": self.params, "defaults_trial": self.trial.number if self.trial is not None else None,
                "defaults_source": source, "same_parameters": self.same,
                "tuned_test_accuracy": tuned.interval["test_accuracy"], "defaults_test_accuracy": self.tested.interval["test_accuracy"],
                "defaults_test_accuracy_ci95": self.tested.interval["test_accuracy_ci95"],
                "defaults_test_accuracy_per_seed": self.tested.interval["test_accuracy_per_seed"],
                "defaults_val_accuracy": self.retrained.val_accuracy, "gain_points": self.gain["points"],
                "gain_ci95_points": self.gain["ci95_points"], "p_value": self.gain["p_value"],
                "only_tuned_right": self.gain["only_first_right"], "only_defaults_right": self.gain["only_second_right"]}


def baseline_of(study: optuna.Study, settings: StudySettings,
                trial: optuna.trial.FrozenTrial) -> tuple[str, dict, optuna.trial.FrozenTrial | None]:
    """The variant of ``trial`` and its baseline parameters: those of the study's baseline trial of that variant (a
    completed one first), else the variant's defaults as a new study enqueues them; and the baseline trial, if any."""
    from optuna.trial import TrialState

    def kind_of(t: optuna.trial.FrozenTrial) -> tuple[str, str | None]:  # its variant, and its model where several were searched
        return t.params.get("variant") or records.TrialStart.read(t).variant or settings.searched_variants()[0], t.params.get("model")

    kind = kind_of(trial)
    bases = [t for t in study.get_trials(deepcopy=False) if records.TrialStart.read(t).baseline and t.params and kind_of(t) == kind]
    for base in sorted(bases, key=lambda t: (t.state != TrialState.COMPLETE, t.number)):
        return kind[0], {k: v for k, v in base.params.items() if k != "variant"}, base
    enqueued = settings.space().baseline({"epochs": settings.epochs, "batch_size": settings.batch_size})
    variants = settings.searched_variants()
    defaults = next(p for p in enqueued if p.get("variant", variants[0]) == kind[0] and p.get("model") == kind[1])
    return kind[0], {k: v for k, v in defaults.items() if k != "variant"}, None


def build_report(settings: StudySettings, final: StudySettings, trial: optuna.trial.FrozenTrial, retrained: Retrained, tested: Tested,
                 data, rows: list[dict], weights: str, searched: dict, versus: AgainstDefaults | None, kept: str, tuned: Tested) -> dict:
    """report.json: the trial, both budgets, the candidates, the test accuracy over seeds and the saved model's per-label
    numbers (``retrained`` and ``tested``: the kept model's, the tuned one's or with --keep defaults the defaults'), and
    with --against-defaults the paired gain of the tuned model (``tuned``: its Tested) over the defaults."""
    first = retrained.results[0]  # the saved model: its per-class numbers and confusion matrix
    kept_trial = trial.number if kept == "tuned" else versus.trial.number if versus.trial is not None else None
    return {
        **first.summary(),
        **tested.interval,
        "val_accuracy": retrained.val_accuracy,
        "seeds": retrained.seeds,
        "study_name": settings.resolved_study_name(),
        "storage": mask_url(settings.storage),
        "model": final.model,
        "data": settings.data,
        "variant": retrained.config.variant,
        "tokenizer": final.tokenizer_name,
        "objective": settings.objective,
        "evaluation": settings.evaluation,
        "best_trial": trial.number,
        "best_params": trial.params,
        "best_trial_val_accuracy": trial.values[0],
        "kept": kept,
        "kept_trial": kept_trial,
        "kept_params": trial.params if kept == "tuned" else versus.params,
        "candidates": rows,
        "study_pick_optimism": rows[0]["optimism"],
        "epochs": final.epochs,
        "batch_size": final.batch_size,
        "study_budget": searched,
        "final_budget": budget(final, first.n_train),
        "resumed_from_step": first.resumed_from_step,
        "against_defaults": versus.as_dict(tuned) if versus is not None else None,
        "n_test": tested.first["n"],
        "per_class": tested.first["per_class"],
        "confusion_matrix": tested.first["confusion_matrix"],
        "labels": list(data.labels),
        "max_length": data.max_length,
        "train_config": retrained.config.to_dict(),
        "weights": weights,
    }


def gain_text(report: dict) -> str:
    """The tuned model against the defaults at the final budget, in a sentence."""
    from study._tuning import p_text, points_text

    versus = report["against_defaults"]
    low, high = versus["gain_ci95_points"]
    over = "the test sentences and seeds" if len(report["seeds"]) > 1 else "the test sentences"
    text = (f"tuned {versus['tuned_test_accuracy']:.4f} against the defaults {versus['defaults_test_accuracy']:.4f} "
            f"({versus['defaults_source']}): {points_text(versus['gain_points'])} points (95% bootstrap interval {points_text(low)} to "
            f"{points_text(high)} over {over}), McNemar's exact p = {p_text(versus['p_value'])} (only the tuned model right on "
            f"{versus['only_tuned_right']} sentences, only the "
            f"defaults on {versus['only_defaults_right']})")
    return text + ("; the kept trial is the baseline itself" if versus["same_parameters"] else "")


def report_markdown(report: dict) -> str:
    from study._show.text import interval_text

    tuned = report.get("kept", "tuned") == "tuned"
    if tuned:
        which = f"Trial {report['best_trial']} with params `{json.dumps(report['best_params'])}`, retrained"
    else:
        which = (f"The defaults `{json.dumps(report['kept_params'])}` ({report['against_defaults']['defaults_source']}), kept over "
                 f"trial {report['best_trial']} (`{json.dumps(report['best_params'])}`), trained")
    lines = [
        f"# Final report: {report['study_name']}",
        "",
        f"Model `{report['model']}`, variant **{report['variant']}**, data `{report['data']}`.",
        f"{which} on {report['n_train']} training "
        f"sentences for {report['epochs']:g} epoch(s) at batch {report['batch_size']}, selected on {report['n_validation']} "
        f"validation sentences, tested once on all {report['n_test']} test sentences.",
        "",
        f"Budget: {budget_text(report)}.",
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
    ]
    if report.get("against_defaults"):
        lines += ["Against the defaults at the final budget (the same seeds, each model tested once on the same sentences): "
                  f"{gain_text(report)}. Kept: the {report['kept']} model.", ""]
    lines += [
        "Candidates (the study's value against the retrained one; optimism: the first minus the second):",
        "",
        "| trial | study val accuracy | retrained val accuracy | optimism | kept |",
        "|---|---|---|---|---|",
    ]
    for row in report["candidates"]:
        kept = ("yes, tested" if tuned else "no: the defaults were kept") if row["trial"] == report["best_trial"] else ""
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


def publish(opened: OpenedStudy, report: dict, staging: Path) -> records.FinalRecord:
    """Into the artifact store, for the dashboard and every machine: the report, its plot and the model's files; the
    report as the study's note; and, last, the FinalRecord that says where they are."""
    from optuna_dashboard.artifact import get_artifact_path

    from study._backends.artifacts import upload
    from study._final_model import mark
    from study._tuning import save_note

    study, settings, store = opened.study, opened.definition, opened.store
    files = [staging / "confusion_matrix.png", staging / "report.json", staging / "report.md", *sorted((staging / "model").iterdir())]
    ids = {str(path.relative_to(staging)): upload(store, study, path) for path in files if path.is_file()}
    # The dashboard serves each artifact at get_artifact_path: the note links the files and shows the image.
    links = [f"- [{name}]({get_artifact_path(study, artifact_id)})" for name, artifact_id in ids.items()]
    save_note(study, report_markdown(report) + f"\n![confusion matrix]({get_artifact_path(study, ids['confusion_matrix.png'])})\n\n"
              f"In the artifact store `{settings.artifact_location}`:\n\n" + "\n".join(links) + "\n")
    final = records.FinalRecord(trial=report["kept_trial"], files=ids, time=datetime.datetime.now().isoformat(timespec="seconds"),
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


def retrain_and_test(opened: OpenedStudy, chosen: FinalSettings) -> int:
    from emotion_core.cache import ModelCache
    from emotion_core.training.callbacks import evaluation_steps
    from study._backends.artifacts import FinalCheckpoints, dashboard_command
    from study._final_model import export_standalone
    from study._inputs import prepare_data
    from study._retraining import Resume, retrain, test
    from study._show.plots import save_confusion_matrix
    from study._show.text import interval_text, params_text
    from study._studies import pick_trial, stored_record, top_trials
    from study._trackers import trial_trackers

    study, settings, store = opened.study, opened.definition, opened.store
    candidates = [pick_trial(study, chosen.trial)] if chosen.top == 1 else top_trials(study, chosen.top)
    if len(candidates) < chosen.top:
        print(f"note: --top {chosen.top}, but the study has {len(candidates)} completed trial(s): retraining those")
    lengths = stored_record(study).max_length  # one length, or one per model's label
    prepared: dict[str, tuple] = {}

    def inputs_of(params: dict) -> tuple:
        """The final settings, tokenizer and data of the model that ``params`` train, prepared once."""
        model = settings.model_of(params)
        if model not in prepared:
            length = lengths.get(model_label(model)) if isinstance(lengths, dict) else lengths
            final = final_settings(settings.for_model(model), chosen, length)
            prepared[model] = (final, *prepare_data(final, length_from="--max-length" if final.max_length == settings.max_length else "the study's"))
        return prepared[model]

    final, tokenizer, data = inputs_of(candidates[0].params)
    searched = budget(settings, records.TrialResult.read(candidates[0]).n_train or settings.max_train_samples or "all")
    print(f"budget: {budget_text({'study_budget': searched, 'final_budget': budget(final, len(data.train))})}", flush=True)
    seeds = [settings.seed + 1 + k for k in range(chosen.seeds)]
    out = settings.study_dir / "final"
    remove_stale_staging(settings.study_dir)
    staging = settings.study_dir / f".final-staging-{os.getpid()}"
    cache = ModelCache()
    trackers = trial_trackers(chosen.report_to, study.study_name, settings.study_dir)
    resumes: list[Resume] = []

    def resume(label: str):
        """A retraining's checkpoints, per seed, under a key of its label, seed and budget."""
        def of_seed(seed: int) -> Resume:
            key = checkpoint_key(label, seed, final)
            resumes.append(Resume(settings.study_dir / "checkpoints" / key, FinalCheckpoints(store, study, opened.study_id, key)))
            return resumes[-1]
        return of_seed

    def train_and_say(params: dict, label: str, into: Path, key: str, what: str) -> Retrained:
        final, tokenizer, data = inputs_of(params)
        print(f"retraining {what} ({params_text(params)}) with seed(s) {', '.join(map(str, seeds))} on "
              f"{len(data.train)} sentences x {final.epochs:g} epoch(s) at batch {final.batch_size}", flush=True)
        config = final.train_config(params, len(data.validation))
        return retrain(config, data, tokenizer, seeds, label=label, into=into, cache=cache, trackers=trackers, params=params,
                       resume=resume(key))

    try:
        retrained = [train_and_say(trial.params, f"trial {trial.number}", staging / "candidates" / f"trial-{trial.number}",
                                   f"trial{trial.number}", f"trial {trial.number}") for trial in candidates]
        rows = candidate_rows(candidates, retrained)
        kept = max(range(len(candidates)), key=lambda i: (retrained[i].val_accuracy, -i))
        trial, again = candidates[kept], retrained[kept]
        final, tokenizer, data = inputs_of(trial.params)
        if len(candidates) > 1:
            print(f"kept trial {trial.number}: retrained val accuracy {again.val_accuracy:.4f}, the best of the {len(candidates)} "
                  "candidates; testing it once on the test split", flush=True)
        tested = test(again, data, tokenizer, label=f"trial {trial.number}", cache=cache)
        versus = None
        if chosen.against_defaults:
            versus = against_defaults(study, settings, trial, again, tested, train_and_say, staging / "defaults",
                                      lambda retrained: test(retrained, data, tokenizer, label="defaults", cache=cache))
        saved, saved_test = (again, tested) if chosen.keep == "tuned" else (versus.retrained, versus.tested)
        shutil.move(str(saved.folders[0]), str(staging / "model"))
        for folder in ("candidates", "defaults"):
            shutil.rmtree(staging / folder, ignore_errors=True)
        weights = str(out / "model" / next(p.name for p in sorted((staging / "model").iterdir()) if p.suffix == ".safetensors"))
        report = build_report(settings, final, trial, saved, saved_test, data, rows, weights, searched, versus, chosen.keep, tested)
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        (staging / "report.md").write_text(report_markdown(report))
        save_confusion_matrix(report, staging / "confusion_matrix.png")
        print("writing the standalone model folder (transformers.pipeline loads it as it is) ...", flush=True)
        export_standalone(staging)
        publish(opened, report, staging)
        swap_in(staging, out)
        steps = evaluation_steps(len(data.train), again.config)  # where any of the retrainings could have saved a checkpoint
        for done in resumes:
            done.done(steps)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{budget_text(report)}: test accuracy {interval_text(report)}, macro F1 {interval_text(report, 'test_macro_f1')} on "
          f"{report['n_test']} sentences")
    if versus is not None:
        print(f"against the defaults: {gain_text(report)}; kept: the {chosen.keep} model")
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


def against_defaults(study: optuna.Study, settings: StudySettings, trial: optuna.trial.FrozenTrial, tuned: Retrained, tested: Tested,
                     train_and_say, into: Path, test_once) -> AgainstDefaults:
    """The baseline parameters of ``trial``'s variant trained as ``tuned`` was (``train_and_say``) and tested once
    (``test_once``), and the paired gain of the tuned model over them. The baseline trial itself is not trained again."""
    from study._retraining import paired_gain
    from study._show.text import params_text

    variant, params, base = baseline_of(study, settings, trial)
    same = {**trial.params, "variant": variant} == {**params, "variant": variant}
    if same:
        print(f"against the defaults: trial {trial.number} is the baseline ({params_text(params)}); nothing else to train")
        retrained, defaults = tuned, tested
    else:
        what = f"the defaults of baseline trial {base.number}" if base is not None else f"the {variant} defaults"
        retrained = train_and_say({**params, "variant": variant}, "defaults", into, f"defaults-{variant}", what)
        defaults = test_once(retrained)
    return AgainstDefaults(params=params, trial=base, retrained=retrained, tested=defaults, gain=paired_gain(tested, defaults), same=same)


def run_final(chosen: FinalSettings) -> int:
    from study._studies import open_stored

    opened = open_stored(chosen.storage, chosen.study_name, output_dir=chosen.output_dir, verbose=chosen.verbose,
                         artifact_store=chosen.artifact_store, model=chosen.model, tokenizer=chosen.tokenizer, data=chosen.data)
    with logged_to(opened.definition.study_dir, chosen.batch_size or opened.definition.batch_size):
        return retrain_and_test(opened, chosen)


COMMAND = Command(
    name="final",
    description="Retrain the study's best trial (train split, selecting on validation) on the study's budget or a larger one "
    "(--max-train-samples N|all, --epochs, --batch-size), evaluate it once on the whole test split (--against-defaults: and the "
    "study's defaults at the same budget, with the paired gain), and write report.json, report.md, the trained weights and a "
    "standalone transformers model. A rerun of a killed final continues its retrainings from their checkpoints.",
    settings=FinalSettings,
    execute=run_final,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
