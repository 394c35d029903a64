"""Several base models in one study: the model is a searched parameter beside the variant, each model with its own
tokenizer and tokenized data; report, final, predict and compare --from-study answer per model."""

import json
import subprocess
import sys

import optuna
import pytest

from study import compare, final, predict, records, report, run
from tests.synthetic import build_tiny_gpt2


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """Two tiny random GPT-2s of different shapes."""
    root = tmp_path_factory.mktemp("two-models")
    return str(build_tiny_gpt2(root / "tiny-a", n_layer=2, n_embd=32)), str(build_tiny_gpt2(root / "tiny-b", n_layer=1, n_embd=48, seed=1))


@pytest.fixture(scope="module")
def two_model_study(two_models, data_folder, tmp_path_factory):
    root = tmp_path_factory.mktemp("two-model-study")
    common = ["--storage", f"sqlite:///{root / 'study.db'}", "--study-name", "pair", "--output-dir", str(root / "out")]
    flags = ["--model", ",".join(two_models), "--data", data_folder, "--epochs", "2", "--batch-size", "16", "--variant", "lora",
             "--pruner", "none", "--sampler", "random", "--patience", "0", *common]
    assert run.main(["--trials", "5", *flags]) == 0
    return {"common": common, "storage": common[1], "root": root, "flags": flags}


def test_the_model_is_searched_and_each_has_a_baseline(two_model_study):
    study = optuna.load_study(study_name="pair", storage=two_model_study["storage"])
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(trials) == 5
    assert {t.params["model"] for t in trials} == {"tiny-a", "tiny-b"}
    baselines = [t for t in trials if records.TrialStart.read(t).baseline]
    assert sorted(t.params["model"] for t in baselines) == ["tiny-a", "tiny-b"]
    # Each model trained on its own shape: the trainable parameter counts differ.
    counts = {t.params["model"]: records.TrialResult.read(t).trainable_params for t in trials}
    assert len(set(counts.values())) == 2
    assert set(records.StudyRecord.read(study).max_length) == {"tiny-a", "tiny-b"}


def test_report_answers_which_model_with_a_paired_comparison(two_model_study, capsys):
    assert report.main(["--json", *two_model_study["common"][:4]]) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = summary["models"]
    assert [row["model"] for row in rows] != [] and {row["model"] for row in rows} == {"tiny-a", "tiny-b"}
    assert rows[0]["val_accuracy"] >= rows[1]["val_accuracy"]
    assert 0 <= rows[1]["p_value"] <= 1
    low, high = rows[1]["ci95_points"]
    assert low <= rows[1]["points_behind"] <= high
    assert report.main(two_model_study["common"][:4]) == 0
    text = capsys.readouterr().out
    assert "which model" in text and f"{rows[0]['model']} beats {rows[1]['model']} with lora" in text and "McNemar's exact test p" in text


def test_final_and_predict_use_the_chosen_trials_model(two_model_study, capsys):
    study = optuna.load_study(study_name="pair", storage=two_model_study["storage"])
    chosen = max(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)), key=lambda t: t.value)
    assert final.main(two_model_study["common"]) == 0
    out = capsys.readouterr().out
    folder = next((two_model_study["root"] / "out").glob("*/*/final"))
    saved = json.loads((folder / "report.json").read_text())
    assert saved["best_trial"] == chosen.number and saved["model"].endswith(chosen.params["model"])
    assert "test accuracy" in out
    assert predict.main([*two_model_study["common"], "i feel happy", "i am so afraid"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 3 for line in lines)


def test_compare_from_study_gives_the_best_of_each_model(two_model_study, tmp_path):
    out = tmp_path / "cmp"
    assert compare.main([*two_model_study["common"][:2], "--from-study", "pair", "--out", str(out)]) == 0
    summary = json.loads((out / "compare.json").read_text())
    assert {row["name"] for row in summary["rows"]} == {"tiny-a lora", "tiny-b lora"}
    assert {row["params"]["model"] for row in summary["rows"]} == {"tiny-a", "tiny-b"}
    assert len(summary["pairs"]) == 1 and 0 <= summary["pairs"][0]["p_value"] <= 1


def test_several_models_refuse_one_tokenizer_and_repeated_models(two_models, data_folder, tmp_path):
    for extra in (["--tokenizer", two_models[0]], []):
        model = ",".join(two_models) if extra else f"{two_models[0]},{two_models[0]}"
        done = subprocess.run([sys.executable, "-m", "study.run", "--model", model, "--data", data_folder, "--storage",
                               f"sqlite:///{tmp_path / 's.db'}", *extra], capture_output=True, text=True)
        assert done.returncode == 2, done.stderr
        assert done.stderr.startswith("error: ") and "--" in done.stderr
    assert not (tmp_path / "s.db").exists()
