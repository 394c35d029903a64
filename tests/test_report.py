"""study.report on stored studies (single- and multi-objective), and the multi-objective study end to end."""

import json
import math

import optuna
from optuna.distributions import FloatDistribution

from study import final, records, report, run
from tests.conftest import study_dir

PNG = b"\x89PNG\r\n\x1a\n"


def report_json(capsys, args) -> dict:
    assert report.main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_on_a_study_that_run_made(finished_study, capsys, tmp_path):
    where = ["--storage", finished_study["storage"], "--study-name", "done"]
    assert report.main([*where, "--plots", str(tmp_path / "plots")]) == 0
    text = capsys.readouterr().out
    assert "trials: 3 complete" in text
    assert "not computed: need at least 5 completed trials (have 3)" in text
    for heading in ("leaderboard", "Pareto front", "parameter importances"):
        assert heading in text

    summary = report_json(capsys, where)
    study = optuna.load_study(study_name="done", storage=finished_study["storage"])
    board = summary["leaderboard"]
    assert [row["trial"] for row in board] == [t.number for t in sorted(study.trials, key=lambda t: -t.value)]
    assert {row["variant"] for row in board} == {"head", "lora", "qlora"}
    assert all(row["peak_memory_mib"] is not None and row["state"] == "complete" for row in board)
    # The front holds the most accurate trial, and no trial on it is beaten in both accuracy and memory by another.
    front = summary["pareto_front"]
    assert board[0]["trial"] in {row["trial"] for row in front}
    for row in front:
        assert not any(o["val_accuracy"] > row["val_accuracy"] and o["peak_memory_mib"] < row["peak_memory_mib"] for o in board)
    assert summary["final"]["test_accuracy"] == records.FinalRecord.read(study).test_accuracy

    plots = {p.name for p in (tmp_path / "plots").iterdir()}
    assert {"optimization_history.png", "intermediate_values.png", "pareto_accuracy_memory.png"} <= plots
    assert "param_importances.png" not in plots  # too few trials
    assert all((tmp_path / "plots" / name).read_bytes()[:8] == PNG for name in plots if name.endswith(".png"))


def test_importances_once_there_are_enough_trials(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'stored.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    space = {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True), "dropout": FloatDistribution(0.0, 0.3)}
    for i in range(12):
        lr, dropout = 10 ** (-5 + 3 * i / 11), [0.0, 0.3, 0.1][i % 3]
        value = 0.3 + 0.1 * (math.log10(lr) + 5)  # accuracy follows the learning rate only
        study.add_trial(optuna.trial.create_trial(params={"learning_rate": lr, "dropout": dropout}, distributions=space, value=value,
                                                  user_attrs={"peak_memory_mib": 100.0 + i, "variant": "lora"}))
    where = ["--storage", storage, "--study-name", "s"]
    summary = report_json(capsys, where)
    importances = summary["importances"]
    assert max(importances, key=lambda name: importances[name]["mean"]) == "learning_rate"
    assert summary["counts"] == {"complete": 12}
    assert len(summary["leaderboard"]) == 10 and summary["leaderboard"][0]["trial"] == 11
    # Accuracy and memory both grow with the trial number here: every trial is on the front.
    assert len(summary["pareto_front"]) == 12
    assert report.main([*where, "--plots", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "param_importances.png").read_bytes()[:8] == PNG


def test_report_takes_the_most_recently_run_study_and_says_so(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'two.db'}"
    for name in ("one", "two"):
        study = optuna.create_study(study_name=name, storage=storage)
    study.add_trial(optuna.trial.create_trial(params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)}, value=0.5))  # "two" ran last
    assert report.main(["--storage", storage]) == 0
    out = capsys.readouterr().out
    assert "study 'two': the most recently run of the 2" in out and "(one, two)" in out and "study 'two' (objective" in out
    assert report.main(["--storage", storage, "--study-name", "one"]) == 0
    assert "(no finished trial)" in capsys.readouterr().out
    assert report.main(["--storage", storage, "--study-name", "three"]) == 2
    err = capsys.readouterr().err
    assert "no study 'three'" in err and "it holds one, two" in err


def test_multi_objective_study_from_run_to_final(study_args, tmp_path, capsys):
    args = ["--objective", "accuracy,memory", "--variant", "head", "--sampler", "random", *study_args]
    assert run.main(["--trials", "3", *args]) == 0
    out = capsys.readouterr().out
    assert out.count("epoch 2/2 val_acc=") == 3  # a compact line per epoch inside each trial
    assert "[3/3 finished; complete=3 pruned=0 failed=0 front=" in out
    assert "Pareto front (accuracy vs peak memory):" in out and "final retrains trial" in out

    storage = study_args[study_args.index("--storage") + 1]
    study = optuna.load_study(study_name="t", storage=storage)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    assert study.metric_names == ["val_accuracy", "peak_memory_mib"]
    for trial in study.trials:
        assert len(trial.values) == 2 and trial.values[1] == trial.user_attrs["peak_memory_mib"]
        assert not trial.intermediate_values  # a multi-objective trial is not pruned, so it reports nothing

    summary = report_json(capsys, ["--storage", storage, "--study-name", "t"])
    assert summary["directions"] == ["maximize", "minimize"] and summary["objective"] == "accuracy,memory"
    assert {row["trial"] for row in summary["pareto_front"]} == {t.number for t in study.best_trials}

    output = study_args[study_args.index("--output-dir") + 1]
    assert final.main(["--storage", storage, "--study-name", "t", "--output-dir", output]) == 0
    chosen = json.loads((study_dir(study_args) / "final" / "report.json").read_text())["best_trial"]
    assert study.trials[chosen].values[0] == max(t.values[0] for t in study.best_trials)
    assert final.main(["--storage", storage, "--study-name", "t", "--output-dir", output, "--trial", "7"]) == 2
    assert "has no completed trial 7" in capsys.readouterr().err

    # Another objective under the same name would mix values that mean different things.
    assert run.main(["--trials", "4", "--variant", "head", "--objective", "accuracy", *study_args]) == 2
    assert "--objective: stored 'accuracy,memory', given 'accuracy'" in capsys.readouterr().err
