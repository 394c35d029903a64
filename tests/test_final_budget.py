"""final on a budget of its own: a study searched on a proxy budget trains its pick on more data, checks it against
the study's defaults at that budget, and a final killed part-way continues from its checkpoint when rerun.

The kill test runs `python -m study.final` as a real subprocess and sends it SIGKILL.
"""

import json
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from study import final, records, run
from study.settings import FinalSettings, StudySettings
from tests.conftest import study_dir, wait_while_running

ROOT = Path(__file__).resolve().parents[1]
ENV_KEYS = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
# A lora trial that learns the synthetic task (tests/test_train.py), to be trial 1 beside the baseline trial 0.
TUNED = {"learning_rate": 1e-2, "lora_dropout": 0.0, "lora_r": 4, "weight_decay": 0.0}


def value_of(args, flag):
    return args[args.index(flag) + 1]


def load(args):
    return optuna.load_study(study_name="t", storage=value_of(args, "--storage"))


def where(args):
    return ["--storage", value_of(args, "--storage"), "--study-name", "t", "--output-dir", value_of(args, "--output-dir")]


def proxy_study(study_args) -> list[str]:
    """A LoRA study searched on 96 of the 240 training sentences: its baseline (trial 0) and one tuned trial (trial 1)."""
    args = ["--max-train-samples", "96", "--pruner", "none", *study_args]
    assert run.main(["--trials", "1", *args]) == 0
    load(args).enqueue_trial(TUNED)
    assert run.main(["--trials", "2", *args]) == 0
    trials = load(args).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 2 and records.TrialStart.read(trials[0]).baseline
    return args


def report_of(args) -> dict:
    return json.loads((study_dir(args) / "final" / "report.json").read_text())


def test_final_trains_on_all_the_data_and_reports_the_gain_over_the_defaults(study_args, capsys):
    from optuna_dashboard import get_note

    args = proxy_study(study_args)
    capsys.readouterr()
    assert final.main([*where(args), "--trial", "1", "--max-train-samples", "all", "--epochs", "1", "--seeds", "2",
                       "--against-defaults"]) == 0
    text = capsys.readouterr().out
    report, study = report_of(args), load(args)

    # trained on the whole training split, for the final's epochs: the schedule's length follows (240 / 16 x 1 epoch)
    assert report["n_train"] == 240 and report["optimizer_steps"] == 15 and report["train_config"]["epochs"] == 1.0
    assert report["final_budget"] == {"max_train_samples": None, "n_train": 240, "epochs": 1.0, "batch_size": 16}
    assert report["study_budget"] == {"max_train_samples": 96, "n_train": 96, "epochs": 2.0, "batch_size": 16}
    assert report["n_validation"] == 60 and report["max_length"] == study.user_attrs["max_length"]  # the study's tokenization
    said = "searched on 96 sentences x 2 epoch(s) at batch 16, trained on 240 x 1 epoch(s) at batch 16"
    assert said in text and said in (study_dir(args) / "final" / "report.md").read_text()

    versus = report["against_defaults"]
    assert versus["defaults_trial"] == 0 and versus["defaults_params"] == study.trials[0].params and not versus["same_parameters"]
    assert report["kept"] == "tuned" and report["kept_params"] == study.trials[1].params == report["best_params"]
    assert versus["tuned_test_accuracy"] == report["test_accuracy"]
    assert versus["gain_points"] == pytest.approx(100 * (versus["tuned_test_accuracy"] - versus["defaults_test_accuracy"]))
    low, high = versus["gain_ci95_points"]
    assert low <= versus["gain_points"] <= high and 0 <= versus["p_value"] <= 1
    assert versus["only_tuned_right"] + versus["only_defaults_right"] <= 60 and len(versus["defaults_test_accuracy_per_seed"]) == 2
    for model in ("trial 1", "defaults"):  # each model of each seed tested once
        for seed in (1, 2):
            assert text.count(f"  {model} seed {seed}: test accuracy") == 1, (model, seed, text)
    assert "against the defaults: tuned" in text and "McNemar's exact p = " in text
    assert "Against the defaults at the final budget" in (study_dir(args) / "final" / "report.md").read_text()
    note = get_note(study)  # the study's note in the dashboard
    assert said in note and "Against the defaults at the final budget" in note
    # the retrainings' checkpoints are gone once the final model is written
    assert not [key for key, value in study.user_attrs.items() if key.startswith(records.FinalCheckpoint.PREFIX) and value]
    assert not list(Path(study.user_attrs["artifact_store"]).glob("checkpoints-*"))
    assert not list((study_dir(args) / "checkpoints").glob("final-*"))

    # --keep defaults keeps the defaults' model, at the study's own budget
    assert final.main([*where(args), "--trial", "1", "--against-defaults", "--keep", "defaults"]) == 0
    text = capsys.readouterr().out
    report = report_of(args)
    assert report["kept"] == "defaults" and report["kept_trial"] == 0 and records.FinalRecord.read(load(args)).trial == 0
    assert report["train_config"]["learning_rate"] == study.trials[0].params["learning_rate"]
    assert report["test_accuracy"] == report["against_defaults"]["defaults_test_accuracy"]
    assert report["n_train"] == 96 and "searched and trained on 96 sentences x 2 epoch(s) at batch 16" in text


def test_bad_final_budgets_exit_2(capsys):
    assert final.main(["--max-train-samples", "0"]) == 2
    assert "--max-train-samples must be positive or all, got 0" in capsys.readouterr().err
    assert final.main(["--keep", "defaults"]) == 2
    assert "pass --against-defaults too" in capsys.readouterr().err
    assert final.main(["--max-train-samples", "lots"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "--max-train-samples" in error and error.count("\n") == 1


def test_another_budget_is_another_checkpoint_key():
    settings = StudySettings(max_train_samples=96, epochs=2)
    same = final.final_settings(settings, FinalSettings(max_train_samples="all", epochs=6), 12)
    assert final.checkpoint_key("trial1", 1, same) == final.checkpoint_key("trial1", 1, final.final_settings(
        settings, FinalSettings(max_train_samples="all", epochs=6), 12))
    for other in (FinalSettings(max_train_samples="all", epochs=5), FinalSettings(max_train_samples=200, epochs=6),
                  FinalSettings(max_train_samples="all", epochs=6, batch_size=8)):
        assert final.checkpoint_key("trial1", 1, final.final_settings(settings, other, 12)) != final.checkpoint_key("trial1", 1, same)
    assert final.checkpoint_key("trial1", 2, same) != final.checkpoint_key("trial1", 1, same)


def wait_for_final_checkpoint(process: subprocess.Popen, args: list[str], timeout: float = 300) -> None:
    """Until the final's retraining has a checkpoint in the artifact store that the study points to."""
    study = load(args)
    wait_while_running(process, lambda: any(key.startswith(records.FinalCheckpoint.PREFIX) and value for key, value in study.user_attrs.items()),
                       timeout, "the final stored a checkpoint")


def test_a_killed_final_leaves_the_previous_model_and_its_rerun_continues_from_its_checkpoint(study_args):
    import os

    args = ["--max-train-samples", "96", "--pruner", "none", *study_args]
    assert run.main(["--trials", "1", *args]) == 0
    assert final.main(where(args)) == 0
    out = study_dir(args) / "final"
    before = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    record = records.FinalRecord.read(load(args))

    # 90 steps (240 / 16 x 6 epochs), a checkpoint every 5: seconds between the first checkpoint and the end
    long = [sys.executable, "-m", "study.final", *where(args), "--max-train-samples", "all", "--epochs", "6"]
    env = {**os.environ, **ENV_KEYS, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(long, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_final_checkpoint(process, args)
    process.send_signal(signal.SIGKILL)
    process.communicate()

    after = {path.relative_to(out): path.read_bytes() for path in out.rglob("*") if path.is_file()}
    assert after == before and records.FinalRecord.read(load(args)) == record  # the previous final model, untouched
    local = study_dir(args) / "checkpoints"
    assert list(local.glob("final-*"))
    shutil.rmtree(local)  # the rerun finds the checkpoint in the artifact store, as another machine would

    rerun = subprocess.run(long, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert "continues from its checkpoint at step" in rerun.stdout
    report = report_of(args)
    assert report["resumed_from_step"] > 0 and report["resumed_from_step"] % 5 == 0
    assert report["n_train"] == 240 and report["optimizer_steps"] == 90 and len(report["epoch_val_accuracy"]) == 6
    assert math.isfinite(report["test_accuracy"]) and records.FinalRecord.read(load(args)) != record
    study = load(args)
    assert not [key for key, value in study.user_attrs.items() if key.startswith(records.FinalCheckpoint.PREFIX) and value]
    assert not list(Path(study.user_attrs["artifact_store"]).glob("checkpoints-*")) and not list(local.glob("final-*"))
    assert not list(study_dir(args).glob(".final-*"))  # the killed final's staging folder is gone too


def test_the_progress_of_a_long_retraining_says_its_epoch_and_the_time_left_also_when_resumed_and_while_testing():
    import io

    from study._show.progress import RunProgress

    file = io.StringIO()
    progress = RunProgress("trial 1 seed 1", file=file, every_s=0, bar=False, epochs=2)
    progress.on_step(11, 20)  # a run resumed from its checkpoint at step 10
    time.sleep(0.3)
    progress.on_step(12, 20)  # 0.3 s a step, 8 steps left: the ETA counts the steps trained here, not the checkpoint's
    progress.on_test(1, 4)
    progress.on_test(2, 4)
    lines = file.getvalue().splitlines()
    assert lines[0].startswith("  trial 1 seed 1: step 11/20 (55%, epoch 1.10/2)") and lines[0].endswith("time left unknown")
    assert "step 12/20 (60%, epoch 1.20/2)" in lines[1] and lines[1].endswith(("00:02 left", "00:03 left"))
    assert lines[2] == "  trial 1 seed 1: testing: batch 1/4" and lines[3].startswith("  trial 1 seed 1: testing: batch 2/4, ") and lines[3].endswith(" left")
