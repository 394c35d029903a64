import json
import sqlite3

import optuna
import pytest
from optuna.trial import TrialState

from study import final, records, run
from study.settings import StudySettings
from tests.conftest import study_dir


def load(args):
    storage = args[args.index("--storage") + 1]
    return optuna.load_study(study_name="t", storage=storage)


def finished(study):
    return len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))


def test_resume_counts_finished_trials(study_args, capsys):
    assert run.main(["--trials", "2", *study_args]) == 0
    assert finished(load(study_args)) == 2
    assert run.main(["--trials", "4", *study_args]) == 0
    assert finished(load(study_args)) == 4
    assert run.main(["--trials", "4", *study_args]) == 0
    study = load(study_args)
    assert finished(study) == 4 and len(study.trials) == 4
    assert "nothing to do" in capsys.readouterr().out
    trial = study.trials[0]
    for attr in ("variant", "trainable_params", "peak_memory_mib", "train_seconds", "train_samples_per_second", "epoch_val_accuracy"):
        assert attr in trial.user_attrs, attr
    assert trial.user_attrs["variant"] == "lora" and len(trial.user_attrs["epoch_val_accuracy"]) == 2
    assert study.user_attrs["settings"]["model"] == study_args[1]


def test_pruner_prunes_an_absurd_learning_rate_once_five_trials_completed(study_args):
    storage = study_args[study_args.index("--storage") + 1]
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    good = {"learning_rate": 1e-2, "lora_dropout": 0.0, "lora_r": 8, "weight_decay": 0.0}
    for dropout in (0.0, 0.05, 0.1, 0.15, 0.2):  # the default pruner waits for five completed trials
        study.enqueue_trial({**good, "lora_dropout": dropout})
    study.enqueue_trial({**good, "learning_rate": 3.0})
    assert run.main(["--trials", "6", "--sampler", "random", "--pruner", "median", *study_args]) == 0
    trials = load(study_args).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5 + [TrialState.PRUNED]
    assert trials[5].params["learning_rate"] == 3.0
    assert len(trials[5].intermediate_values) < len(trials[0].intermediate_values)
    assert len(trials[0].intermediate_values) == 6  # three times per epoch, two epochs


def test_variant_all_makes_lora_r_conditional(study_args):
    study_args = [a if a != "t" else "t" for a in study_args]
    assert run.main(["--trials", "6", "--variant", "all", "--pruner", "none", "--sampler", "random", *study_args]) == 0
    trials = load(study_args).trials
    variants = {t.params["variant"] for t in trials}
    assert len(variants) >= 2
    for trial in trials:
        assert ("lora_r" in trial.params) == (trial.params["variant"] in ("lora", "qlora"))
        assert ("head_dropout" in trial.params) == (trial.params["variant"] == "head")
        assert trial.user_attrs["variant"] == trial.params["variant"]


def test_final_writes_the_report(study_args, tmp_path):
    assert run.main(["--trials", "2", "--variant", "head", *study_args]) == 0
    args = ["--storage", study_args[study_args.index("--storage") + 1], "--study-name", "t", "--output-dir", str(tmp_path / "out")]
    assert final.main(args) == 0
    out = study_dir(args[1], args[5]) / "final"
    report = json.loads((out / "report.json").read_text())
    for key in ("test_accuracy", "test_macro_f1", "n_test", "best_params", "variant", "model", "per_class", "confusion_matrix",
                "peak_memory_mib", "train_seconds"):
        assert key in report, key
    assert report["n_test"] == 60 and report["variant"] == "head"
    assert sum(map(sum, report["confusion_matrix"])) == 60
    assert set(report["per_class"]) == {"sadness", "joy", "love", "anger", "fear", "surprise"}
    assert report["best_params"] == load(study_args).best_params
    assert (out / "model" / "trained.safetensors").is_file()
    assert "test accuracy" in (out / "report.md").read_text()
    assert records.FinalRecord.read(load(study_args)).test_accuracy == report["test_accuracy"]


def test_final_with_seeds_reports_mean_spread_and_interval(study_args, tmp_path, capsys):
    assert run.main(["--trials", "1", "--variant", "head", *study_args]) == 0
    storage = study_args[study_args.index("--storage") + 1]
    args = ["--storage", storage, "--study-name", "t", "--output-dir", str(tmp_path / "out"), "--seeds", "2"]
    assert final.main(args) == 0
    report = json.loads((study_dir(storage, str(tmp_path / "out")) / "final" / "report.json").read_text())
    assert report["seeds"] == [1, 2] and len(report["test_accuracy_per_seed"]) == 2  # the seeds after the study's
    assert report["test_accuracy"] == pytest.approx(sum(report["test_accuracy_per_seed"]) / 2)
    for key in ("test_accuracy", "test_macro_f1"):
        low, high = report[f"{key}_ci95"]
        assert low <= report[key] <= high and high - low > 0 and report[f"{key}_std"] >= 0
    # the budget the numbers were had on
    assert (report["n_train"], report["n_validation"], report["n_test"], report["epochs"]) == (240, 60, 60, 2.0)
    text = (study_dir(storage, str(tmp_path / "out")) / "final" / "report.md").read_text()
    assert "Mean of 2 seeds" in text and "240 training sentences for 2 epoch(s)" in text
    study = load(study_args)
    final_record = records.FinalRecord.read(study)
    assert final_record.seeds == [1, 2] and final_record.test_accuracy_ci95 == report["test_accuracy_ci95"]
    assert final.main([*args[:-1], "0"]) == 2 and "--seeds must be positive" in capsys.readouterr().err


def test_other_settings_under_the_same_name_are_refused(study_args, capsys):
    assert run.main(["--trials", "1", *study_args]) == 0
    assert run.main(["--trials", "2", "--variant", "head", *study_args]) == 2
    assert "--variant: stored 'lora', given 'head'" in capsys.readouterr().err
    assert len(load(study_args).trials) == 1


def test_the_settings_are_stored_last_so_a_second_machine_never_sees_them_without_the_fingerprints(study_args):
    # A second machine that finds the settings but not yet the fingerprints compares its own model and data paths
    # with the first machine's, and refuses them (seen in CI with two machines started together).
    assert run.main(["--trials", "1", *study_args]) == 0
    database = study_args[study_args.index("--storage") + 1].removeprefix("sqlite:///")
    with sqlite3.connect(database) as connection:
        keys = [key for (key,) in connection.execute("SELECT key FROM study_user_attributes ORDER BY study_user_attribute_id")]
    assert "fingerprints" in keys and keys[-1] == "settings", keys


@pytest.mark.parametrize(
    "bad,message",
    [
        ({"train.txt": "i feel fine;joy\nno separator\n"}, "train.txt:2"),
        ({"validation.txt": "i feel fine;bored\n"}, "unknown label 'bored'"),
        ({"test.txt": None}, "missing the test split"),
        ({"train.txt": ""}, "holds no examples"),
    ],
)
def test_bad_data_exits_2_and_writes_nothing(study_args, tmp_path, capsys, bad, message):
    from tests.synthetic import write_txt_folder

    folder = write_txt_folder(tmp_path / "bad", n_train=12, n_eval=6)
    for name, content in bad.items():
        (folder / name).unlink() if content is None else (folder / name).write_text(content)
    args = list(study_args)
    args[args.index("--data") + 1] = str(folder)
    assert run.main(["--trials", "2", *args]) == 2
    assert message in capsys.readouterr().err
    storage = args[args.index("--storage") + 1]
    assert "t" not in optuna.get_all_study_names(storage)


@pytest.mark.parametrize("flags,message", [(["--trials", "0"], "--trials must be positive"), (["--trials", "-3"], "must be positive")])
def test_bad_counts_exit_2(study_args, capsys, flags, message):
    assert run.main([*flags, *study_args]) == 2
    assert message in capsys.readouterr().err


def test_help_explains_every_setting(capsys):
    with pytest.raises(SystemExit) as exit_info:
        run.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("trials", "variant", "storage", "pruner", "max-train-samples", "target-modules"):
        assert f"--{name}" in text
    assert StudySettings().resolved_study_name() == "gpt2-lora"
