"""The study plots and the confusion matrix read what a person needs: pruned trials in the history, epochs on the
intermediate values, a bounded legend, the front called a front, the training budget in the title."""

import math
import random

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from study._show import plots
from study._studies import pareto_front
from study._tuning import importances
from study.report import steps_per_epoch

PNG = b"\x89PNG\r\n\x1a\n"
STEPS_PER_EPOCH, EPOCHS, EVALS_PER_EPOCH = 50, 3, 3
N_TRAIN, BATCH_SIZE = 1600, 32  # ceil(1600 / 32) = 50 steps per epoch
SPACE = {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True), "weight_decay": FloatDistribution(0.0, 0.1)}


def add_trials(study: optuna.Study, n: int, seed: int = 0) -> None:
    """``n`` trials as study.run stores them. Single objective: reports at three steps an epoch, every third trial
    pruned after its first or second epoch with its last report as its value. Accuracy,memory: complete trials whose
    values are (val accuracy, peak memory), no reports."""
    rng = random.Random(seed)
    steps = [round(k * STEPS_PER_EPOCH / EVALS_PER_EPOCH) for k in range(1, EPOCHS * EVALS_PER_EPOCH + 1)]
    single = len(study.directions) == 1
    for i in range(n):
        ceiling = rng.uniform(0.35, 0.93)
        curve = {step: round(ceiling * (1 - math.exp(-step / 40)) + rng.uniform(-0.02, 0.02), 4) for step in steps}
        pruned = single and i % 3 == 2
        if pruned:
            curve = {s: v for s, v in curve.items() if s <= STEPS_PER_EPOCH * (1 + i % 2)}
        attrs = {"n_train": N_TRAIN, "variant": ["head", "lora", "qlora"][i % 3], "peak_memory_mib": round(rng.uniform(300, 2000), 1)}
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED if pruned else TrialState.COMPLETE,
            values=[curve[max(curve)]] if single else [curve[max(curve)], attrs["peak_memory_mib"]],
            intermediate_values=curve if single else None, user_attrs=attrs,
            params={"learning_rate": 10 ** rng.uniform(-5, -2), "weight_decay": rng.uniform(0, 0.1)}, distributions=SPACE))


@pytest.fixture(autouse=True)
def close_figures():
    """Each test starts with no open figure, even after one that failed before closing its own."""
    plots._pyplot().close("all")
    yield
    plots._pyplot().close("all")


@pytest.fixture
def stored_study(tmp_path) -> optuna.Study:
    study = optuna.create_study(study_name="gpt2-lora", storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    study.set_user_attr("settings", {"batch_size": BATCH_SIZE, "max_train_samples": N_TRAIN})
    add_trials(study, 24)
    return study


def lines_of(axes):
    """The plotted lines that the legend names, by label."""
    handles, labels = axes.get_legend_handles_labels()
    return dict(zip(labels, handles))


def legend_texts(axes) -> list[str]:
    return [text.get_text() for text in axes.get_legend().get_texts()]


def test_history_shows_pruned_trials_and_a_monotonic_best_so_far(stored_study):
    figure = plots.history_figure(stored_study)
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("trial", "validation accuracy")
    pruned = [t for t in stored_study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in stored_study.trials if t.state == TrialState.COMPLETE]
    marks = lines_of(axes)
    points = {label.split(":")[0]: handle.get_offsets() for label, handle in marks.items() if hasattr(handle, "get_offsets")}
    assert sorted(points["pruned"][:, 0]) == [t.number for t in pruned]
    assert list(points["pruned"][:, 1]) == [t.value for t in pruned]
    assert sorted(points["complete"][:, 0]) == [t.number for t in complete]
    best = marks["best so far (complete trials)"].get_ydata()
    assert all(np.diff(best) >= 0) and best[-1] == max(t.value for t in complete)
    assert best[0] == complete[0].value  # it starts at the first completed trial, not at a pruned one
    assert marks["best so far (complete trials)"].get_xdata()[-1] == stored_study.trials[-1].number


def test_history_of_an_accuracy_memory_study_plots_accuracy(tmp_path):
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db", directions=["maximize", "minimize"])
    add_trials(study, 6)
    figure = plots.history_figure(study)
    points = [handle.get_offsets() for handle in lines_of(figure.axes[0]).values() if hasattr(handle, "get_offsets")]
    accuracies = sorted(y for offsets in points for y in offsets[:, 1])
    assert accuracies == sorted(t.values[0] for t in study.trials)


def test_intermediate_values_in_epochs_with_a_bounded_legend(stored_study):
    figure = plots.intermediate_figure(stored_study, STEPS_PER_EPOCH)
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("epoch", "validation accuracy")
    assert len(legend_texts(axes)) <= 4  # complete, pruned and the best trial, not one entry per trial
    best = max((t for t in stored_study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert legend_texts(axes) == ["complete: 16", "pruned: 8\n(x: where it was stopped)", f"best: trial {best.number}"]
    pruned_color, complete_color = plots.STYLE[TrialState.PRUNED]["color"], plots.STYLE[TrialState.COMPLETE]["color"]
    ends = {color: [line.get_xdata()[-1] for line in axes.get_lines() if line.get_color() == color and len(line.get_xdata()) > 1]
            for color in (pruned_color, complete_color)}
    assert len(ends[pruned_color]) == 8 and len(ends[complete_color]) == 16
    assert max(ends[pruned_color]) <= 2 < EPOCHS == min(ends[complete_color])  # pruned lines stop early, in epochs

    figure_in_steps = plots.intermediate_figure(stored_study, None)
    axes = figure_in_steps.axes[0]
    assert axes.get_xlabel() == "optimizer step"
    assert max(x for line in axes.get_lines() for x in line.get_xdata()) == STEPS_PER_EPOCH * EPOCHS


def test_pareto_front_is_called_so(stored_study):
    figure = plots.pareto_figure(stored_study)
    axes = figure.axes[0]
    assert (axes.get_xlabel(), axes.get_ylabel()) == ("validation accuracy", "peak training memory (MiB)")
    assert legend_texts(axes) == ["other trials", "Pareto front"]
    front = lines_of(axes)["Pareto front"]
    expected = pareto_front(stored_study)
    assert list(front.get_xdata()) == [t.value for t in expected]
    assert list(front.get_ydata()) == [t.user_attrs["peak_memory_mib"] for t in expected]
    # Each point of the front says which trial it is (study.final --trial N).
    assert [text.get_text() for text in axes.texts] == [f"#{t.number} {t.user_attrs['variant']}" for t in expected]


def test_importances_plot_shows_the_reports_numbers(stored_study):
    table, _ = importances(stored_study)
    figure = plots.importances_figure(stored_study, table)
    axes = figure.axes[0]
    assert axes.get_xlabel().startswith("importance for validation accuracy") and axes.get_ylabel() == "parameter"
    bars = {label.get_text(): bar.get_width() for label, bar in zip(axes.get_yticklabels(), axes.patches)}
    assert bars == pytest.approx({name: row["mean"] for name, row in table.items()})
    assert [text.get_text() for text in axes.texts][::-1] == [f"{row['mean']:.2f} ({row['min']:.2f}-{row['max']:.2f})"
                                                              for row in table.values()]


def test_save_plots_writes_the_four_plots(stored_study, tmp_path):
    written = plots.save_plots(stored_study, tmp_path / "plots", importances(stored_study)[0], STEPS_PER_EPOCH)
    assert {p.name for p in written} >= {"optimization_history.png", "intermediate_values.png", "param_importances.png",
                                         "pareto_accuracy_memory.png"}
    assert all(p.read_bytes()[:8] == PNG for p in written if p.suffix == ".png")
    assert not plots._pyplot().get_fignums()  # every figure closed


def test_steps_per_epoch_from_stored_settings_and_trials(stored_study, tmp_path):
    assert steps_per_epoch(stored_study) == math.ceil(N_TRAIN / BATCH_SIZE) == STEPS_PER_EPOCH
    bare = optuna.create_study(storage=f"sqlite:///{tmp_path}/bare.db")  # not made by study.run: no settings
    add_trials(bare, 3)
    assert steps_per_epoch(bare) is None


@pytest.mark.parametrize("labels", [["sadness", "joy", "love", "anger", "fear", "surprise"],
                                    ["admiration", "amusement", "disapproval", "embarrassment", "gratitude", "nervousness",
                                     "realization", "remorse", "anger", "joy", "fear", "neutral"]])
def test_confusion_matrix_title_says_the_training_budget(labels, tmp_path):
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 40, (len(labels), len(labels))) + np.diag(rng.integers(80, 300, len(labels)))
    report = {"study_name": "gpt2-lora", "variant": "lora", "test_accuracy": 0.9315, "n_train": 16000, "n_validation": 2000,
              "train_config": {"epochs": 3.0}, "labels": labels, "confusion_matrix": matrix.tolist(), "seeds": [0],
              "test_accuracy_per_seed": [0.9315], "test_accuracy_std": 0.0}
    figure = plots.confusion_matrix_figure(report)
    axes = figure.axes[0]
    title = " ".join(axes.get_title().split())
    assert "gpt2-lora" in title and "lora" in title and "seed 0, test accuracy 0.9315" in title and "mean" not in title
    assert "trained on 16000 sentences x 3 epoch(s)" in title
    seeds = {**report, "seeds": [0, 1, 2], "test_accuracy_per_seed": [0.93, 0.92, 0.95], "test_accuracy_std": 0.0153}
    title = " ".join(plots.confusion_matrix_figure(seeds).axes[0].get_title().split())
    assert "seed 0, test accuracy 0.9300" in title and "(mean of 3 seeds: 0.9315 ± 0.0153)" in title  # the matrix is seed 0's
    assert [t.get_text() for t in axes.get_xticklabels()] == labels == [t.get_text() for t in axes.get_yticklabels()]
    path = plots.save_confusion_matrix(report, tmp_path / "cm.png")
    assert path.read_bytes()[:8] == PNG


def test_trials_at_one_point_of_the_front_share_one_label(tmp_path):
    study = optuna.create_study(study_name="gpt2-lora", storage=f"sqlite:///{tmp_path}/s.db", direction="maximize")
    for value, memory in [(0.75, 1065.0), (0.75, 1065.0), (0.78, 1083.0), (0.40, 1083.0)]:
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"variant": "lora", "peak_memory_mib": memory},
                                                  params={"weight_decay": 0.05}, distributions={"weight_decay": SPACE["weight_decay"]}))
    axes = plots.pareto_figure(study).axes[0]
    assert sorted(text.get_text() for text in axes.texts) == ["#0 lora, #1 lora", "#2 lora"]
