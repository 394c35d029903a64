"""The plots a person reads: the study's (optimization history, intermediate values, param importances, accuracy vs
memory), the final model's confusion matrix, and compare's bar chart. PNG through matplotlib's Agg backend.

The optimization history, the intermediate values and the Pareto front are drawn here from the stored trials, PNG
only (not Optuna's plotly plots): Optuna's versions leave out pruned trials, count
in optimizer steps, put one legend entry per trial and call the front "Best Trial". The param importances are the
report's (Optuna's fANOVA over several seeds, with their range), not one forest's draw. Each ``*_figure`` function
returns the figure (or None when there is nothing to draw) so that tests can read what it shows; ``save_plots`` saves
and closes.
"""

from __future__ import annotations

import textwrap
from itertools import accumulate
from pathlib import Path

import optuna
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from study import records
from study._show.text import format_mib
from study._studies import FINISHED, pareto_study

ACCURACY = "validation accuracy"
MEMORY = "peak training memory (MiB)"
# Complete and pruned trials look the same in every study plot.
STYLE = {
    TrialState.COMPLETE: {"color": "tab:blue", "label": "complete"},
    TrialState.PRUNED: {"color": "tab:orange", "label": "pruned"},
}
BEST_COLOR = "tab:red"
SIZE = (9, 5)


def _legend_outside(axes) -> None:
    """The legend to the right of the plot, where it hides no point (tight_layout makes room for it)."""
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=9)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finished(study: optuna.Study) -> list[FrozenTrial]:
    """Complete and pruned trials with a value, by number. A pruned trial's value is its last report (Optuna stores
    it so); one pruned before its first report has none."""
    return [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.values]


def history_figure(study: optuna.Study):
    """Each finished trial's validation accuracy (the first value of an accuracy,memory study), complete and pruned
    apart, and the best so far over the completed trials."""
    # Optuna's plot_optimization_history draws completed trials only: the pruned ones, often most of a study, vanish.
    trials = _finished(study)
    if not trials:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=SIZE)
    markers = {TrialState.COMPLETE: "o", TrialState.PRUNED: "x"}
    for state, style in STYLE.items():
        chosen = [t for t in trials if t.state == state]
        if chosen:
            label = f"{style['label']}: {len(chosen)}" + ("\n(value: its last report)" if state == TrialState.PRUNED else "")
            axes.scatter([t.number for t in chosen], [t.values[0] for t in chosen], color=style["color"],
                         marker=markers[state], label=label, zorder=3)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        better = max if study.directions[0] == StudyDirection.MAXIMIZE else min
        best = list(accumulate((t.values[0] for t in complete), better))
        # Carried on to the last trial, so that the line answers "best so far" at every trial.
        axes.step([*(t.number for t in complete), trials[-1].number], [*best, best[-1]], where="post", color=BEST_COLOR,
                  label="best so far (complete trials)")
    axes.set(xlabel="trial", ylabel=ACCURACY, title=f"{study.study_name}: optimization history")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.grid(alpha=0.3)
    _legend_outside(axes)
    figure.tight_layout()
    return figure


def _curve(trial: FrozenTrial, steps_per_epoch: int | None) -> tuple[list[float], list[float]]:
    """A trial's reports in step order: (epochs, or optimizer steps without steps_per_epoch; accuracies)."""
    steps = sorted(trial.intermediate_values)
    return [s / (steps_per_epoch or 1) for s in steps], [trial.intermediate_values[s] for s in steps]


def intermediate_figure(study: optuna.Study, steps_per_epoch: int | None):
    """The validation accuracy each finished trial reported during training, against epochs (optimizer steps when
    ``steps_per_epoch`` is unknown). Colored by state with one legend entry each; the best trial stands out."""
    trials = [t for t in study.get_trials(deepcopy=False, states=FINISHED) if t.intermediate_values]
    if not trials:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=SIZE)
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.values]
    best = max(complete, key=lambda t: t.values[0]).number if complete else None
    labelled = set()
    for trial in trials:
        xs, ys = _curve(trial, steps_per_epoch)
        style = STYLE[trial.state]
        # One legend entry per state, however many trials: matplotlib leaves out labels that start with "_".
        label = f"{style['label']}: {sum(t.state == trial.state for t in trials)}" if trial.state not in labelled else "_"
        if trial.state == TrialState.PRUNED and label != "_":
            label += "\n(x: where it was stopped)"
        labelled.add(trial.state)
        axes.plot(xs, ys, color=style["color"], alpha=0.5, linewidth=1, marker=".", label=label)
        if trial.state == TrialState.PRUNED:
            axes.plot(xs[-1], ys[-1], color=style["color"], marker="x", markersize=8, label="_")  # where it was stopped
    if best is not None:
        xs, ys = _curve(next(t for t in trials if t.number == best), steps_per_epoch)
        axes.plot(xs, ys, color=BEST_COLOR, linewidth=2.5, marker="o", label=f"best: trial {best}", zorder=3)
    axes.set(xlabel="epoch" if steps_per_epoch else "optimizer step", ylabel=ACCURACY,
             title=f"{study.study_name}: validation accuracy during training")
    axes.set_xlim(left=0)
    axes.grid(alpha=0.3)
    _legend_outside(axes)
    figure.tight_layout()
    return figure


def importances_figure(study: optuna.Study, importances: dict[str, dict]):
    """The report's parameter importances (``study._tuning.importances``): each parameter's mean over the fANOVA seeds
    as a bar, their range as its error bar, so that the plot and the report's numbers are the same."""
    plt = _pyplot()
    names = list(importances)[::-1]  # most important at the top
    rows = [importances[name] for name in names]
    figure, axes = plt.subplots(figsize=SIZE)
    axes.barh(names, [row["mean"] for row in rows], color="tab:blue", ecolor="black", capsize=4,
              xerr=[[row["mean"] - row["min"] for row in rows], [row["max"] - row["mean"] for row in rows]])
    for position, row in enumerate(rows):
        axes.annotate(f"{row['mean']:.2f} ({row['min']:.2f}-{row['max']:.2f})", (row["max"], position),
                      textcoords="offset points", xytext=(6, 0), va="center", fontsize=9)
    seeds = len(rows[0]["per_seed"])
    complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    axes.set_xlim(0, min(1.0, max(row["max"] for row in rows) * 1.25 + 0.05))
    axes.set(xlabel=f"importance for {ACCURACY} (fANOVA: mean over {seeds} seeds, bar: their range)", ylabel="parameter",
             title=f"{study.study_name}: parameter importances ({complete} completed trials)")
    axes.grid(axis="x", alpha=0.3)
    figure.tight_layout()
    return figure


def pareto_figure(study: optuna.Study):
    """Validation accuracy against peak training memory for each completed trial that measured memory; the front
    (no other trial is both more accurate and lighter) joined and labelled with trial numbers."""
    view, originals = pareto_study(study)
    complete = view.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=SIZE)
    on_front = {t.number for t in view.best_trials}
    front = sorted((t for t in complete if t.number in on_front), key=lambda t: t.values[1])
    others = [t for t in complete if t.number not in on_front]
    if others:
        axes.scatter([t.values[0] for t in others], [t.values[1] for t in others], color="tab:gray", alpha=0.6, label="other trials")
    axes.plot([t.values[0] for t in front], [t.values[1] for t in front], color=BEST_COLOR, marker="o", linestyle="--",
              label="Pareto front", zorder=3)
    middle = (min(t.values[0] for t in complete) + max(t.values[0] for t in complete)) / 2
    at_point: dict[tuple[float, float], list[str]] = {}  # trials of the same accuracy and memory share one label
    for trial in front:
        original = originals[trial.number]  # its number is the one final --trial takes
        variant = records.TrialStart.read(original).variant
        at_point.setdefault((trial.values[0], trial.values[1]), []).append(f"#{original.number}" + (f" {variant}" if variant else ""))
    for (accuracy, memory), names in at_point.items():
        right = accuracy <= middle  # a label goes toward the middle, so that it stays inside the axes
        axes.annotate(", ".join(names), (accuracy, memory), fontsize=8,
                      textcoords="offset points", xytext=(6 if right else -6, -10), ha="left" if right else "right")
    axes.margins(0.08)  # room below the lowest point's label
    axes.set(xlabel=ACCURACY, ylabel=MEMORY, title=f"{study.study_name}: accuracy vs peak memory (#trial variant)")
    axes.grid(alpha=0.3)
    _legend_outside(axes)
    figure.tight_layout()
    return figure


def save_plots(study: optuna.Study, folder: Path, importances: dict[str, dict] | None, steps_per_epoch: int | None) -> list[Path]:
    """Optimization history, intermediate values, param importances (the report's, when computed) and the
    accuracy-vs-memory Pareto front as PNG. Plots without data are skipped. ``steps_per_epoch`` turns the optimizer
    steps trials report at into epochs."""
    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    figures = {
        "optimization_history": history_figure(study),
        "intermediate_values": intermediate_figure(study, steps_per_epoch),
        "param_importances": importances_figure(study, importances) if importances else None,
        "pareto_accuracy_memory": pareto_figure(study),
    }
    written = []
    for name, figure in figures.items():
        if figure is not None:
            figure.savefig(folder / f"{name}.png", dpi=100)
            plt.close(figure)
            written.append(folder / f"{name}.png")
    return written


def confusion_matrix_figure(report: dict):
    """The final model's test confusion matrix; the title says what was trained, on how much, and how it scored."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    labels = report["labels"]
    side = max(5.5, 0.7 * len(labels) + 2)  # about 0.7 inch a cell, however many labels
    figure, axes = plt.subplots(figsize=(side, side))
    display = ConfusionMatrixDisplay(np.array(report["confusion_matrix"]), display_labels=labels)
    # Column labels slanted only when the longest would not fit its cell (about 0.085 inch a character at 10 pt).
    slant = 45 if 0.085 * max(map(len, labels)) > 0.95 * (side - 1.8) / len(labels) else 0
    display.plot(ax=axes, cmap="Blues", colorbar=False, values_format="d", xticks_rotation=slant, text_kw={"fontsize": 9})
    if slant:
        plt.setp(axes.get_xticklabels(), ha="right", rotation_mode="anchor")
    epochs = report["train_config"]["epochs"]
    seeds = report["seeds"]
    # The matrix is the saved model's, the first seed's; with several seeds the mean is said apart.
    accuracy = report["test_accuracy_per_seed"][0]
    lines = [f"{report['study_name']}: {report['variant']}, seed {seeds[0]}, test accuracy {accuracy:.4f}",
             *([f"(mean of {len(seeds)} seeds: {report['test_accuracy']:.4f} ± {report['test_accuracy_std']:.4f})"] if len(seeds) > 1 else []),
             f"trained on {report['n_train']} sentences x {epochs:g} epoch(s)"]
    axes.set_title("\n".join(part for line in lines for part in textwrap.wrap(line, 60)), fontsize=10)  # a long study name wraps
    axes.set(xlabel="predicted label", ylabel="true label")
    figure.tight_layout()
    return figure


def save_confusion_matrix(report: dict, path: Path) -> Path:
    plt = _pyplot()
    figure = confusion_matrix_figure(report)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def bar_chart(summary: dict, path: Path) -> Path:
    """compare's chart: test accuracy with its 95% interval, and memory, per variant."""
    import numpy as np

    plt = _pyplot()
    rows = [r for r in summary["rows"] if "error" not in r]
    names = [r["name"] for r in rows]
    x = np.arange(len(rows))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    means = np.array([r["test_accuracy"] for r in rows])
    intervals = np.array([r["test_accuracy_ci95"] for r in rows])
    bars = left.bar(x, means, color="tab:blue", yerr=[means - intervals[:, 0], intervals[:, 1] - means], capsize=6)
    left.bar_label(bars, fmt="%.3f", label_type="center", color="white")
    left.set(xticks=x, xticklabels=names, ylim=(0, 1.05), ylabel="test accuracy",
             title=f"Test accuracy, 95% interval ({summary['seeds']} seed(s))")
    series = [("weights_mib", "weights (get_memory_footprint)"), ("peak_memory_mib", "training peak"), ("peak_rss_mib", "process peak RSS")]
    series = [(key, label) for key, label in series if all(r.get(key) is not None for r in rows)]
    width = 0.8 / max(len(series), 1)
    for i, (key, label) in enumerate(series):
        bars = right.bar(x + (i - (len(series) - 1) / 2) * width, [r[key] or 0 for r in rows], width, label=label)
        right.bar_label(bars, labels=[format_mib(r[key]) for r in rows], fontsize=8)
    right.set(xticks=x, xticklabels=names, ylabel="MiB", title="Memory")
    right.legend(fontsize=8)
    tuned = "tuned" if summary.get("from_study") else "default parameters"
    figure.suptitle(f"{Path(summary['budget']['model']).name}, {tuned}: {summary['n_train']} training sentences x "
                    f"{summary['budget']['epochs']:g} epoch(s), {summary['device']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
