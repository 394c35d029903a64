"""The plots a person reads: the study's (optimization history, intermediate values, importances, accuracy vs memory),
the final model's confusion matrix, and compare's bar chart. PNG through matplotlib's Agg backend."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import optuna
from optuna.trial import TrialState

from emotion_core.memory import format_mib
from study.studies import pareto_study

PARETO_TARGETS = ["val accuracy", "peak memory (MiB)"]


def mib(value: float | None) -> str:
    return format_mib(value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_plots(study: optuna.Study, folder: Path, has_importances: bool) -> list[Path]:
    """Optimization history, intermediate values, param importances and the accuracy-vs-memory Pareto front, as PNG
    (optuna.visualization.matplotlib) and as HTML where plotly is installed. Plots without data are skipped."""
    from optuna import visualization

    plt = _pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    accuracy = {"target": (lambda t: t.values[0]), "target_name": "val accuracy"}
    plots = {}
    if complete:
        plots["optimization_history"] = (study, "plot_optimization_history", accuracy)
    if any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        plots["intermediate_values"] = (study, "plot_intermediate_values", {})
    if has_importances:
        plots["param_importances"] = (study, "plot_param_importances", accuracy)
    view = pareto_study(study)
    if view.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        plots["pareto_accuracy_memory"] = (view, "plot_pareto_front", {"target_names": PARETO_TARGETS})
    html = importlib.util.find_spec("plotly") is not None
    written = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
        for name, (source, function, kwargs) in plots.items():
            axes = getattr(visualization.matplotlib, function)(source, **kwargs)
            figure = axes.flat[0].figure if hasattr(axes, "flat") else axes.figure
            figure.set_size_inches(8, 5)
            figure.tight_layout()
            figure.savefig(folder / f"{name}.png", dpi=100)
            plt.close(figure)
            written.append(folder / f"{name}.png")
            if html:
                getattr(visualization, function)(source, **kwargs).write_html(str(folder / f"{name}.html"))
                written.append(folder / f"{name}.html")
    return written


def save_confusion_matrix(report: dict, path: Path) -> Path:
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    plt = _pyplot()
    display = ConfusionMatrixDisplay(np.array(report["confusion_matrix"]), display_labels=report["labels"])
    display.plot(cmap="Blues", colorbar=False)
    display.ax_.set_title(f"{report['study_name']}: {report['variant']}, test accuracy {report['test_accuracy']:.4f}")
    display.figure_.set_size_inches(6.5, 5.5)
    display.figure_.tight_layout()
    display.figure_.savefig(path, dpi=100)
    plt.close(display.figure_)
    return path


def bar_chart(summary: dict, path: Path) -> Path:
    import numpy as np

    plt = _pyplot()
    rows = [r for r in summary["rows"] if "error" not in r]
    names = [r["variant"] for r in rows]
    x = np.arange(len(rows))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bars = left.bar(x, [r["test_accuracy"] for r in rows], color="tab:blue")
    left.bar_label(bars, fmt="%.3f")
    left.set(xticks=x, xticklabels=names, ylim=(0, 1.08), ylabel="test accuracy", title="Test accuracy")
    series = [("weights_mib", "weights (get_memory_footprint)"), ("peak_memory_mib", "training peak")]
    if not summary["gpu"]:
        series.append(("peak_rss_mib", "process peak RSS"))
    width = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        bars = right.bar(x + (i - (len(series) - 1) / 2) * width, [r[key] or 0 for r in rows], width, label=label)
        right.bar_label(bars, labels=[mib(r[key]) for r in rows], fontsize=8)
    right.set(xticks=x, xticklabels=names, ylabel="MiB", title="Memory")
    right.legend(fontsize=8)
    figure.suptitle(f"{Path(summary['budget']['model']).name}, {summary['n_train']} train sentences, {summary['device']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
