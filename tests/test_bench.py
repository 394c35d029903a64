import json
import math
from pathlib import Path

from study import bench


def test_bench_measures_every_part(tiny_model, data_folder, tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = [
        "--model", tiny_model, "--data", data_folder, "--max-train-samples", "48", "--max-eval-samples", "24",
        "--batch-size", "16", "--trial-epochs", "2", "--trials", "3", "--output-dir", str(tmp_path / "out"), "--json", str(out),
    ]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    for key in ("naive_samples_per_s", "project_samples_per_s", "speedup", "naive_peak_memory_mib", "project_peak_memory_mib",
                "head_cache_speedup", "pruned_steps_ratio", "best_val_acc_pruned", "best_val_acc_unpruned"):
        assert isinstance(report[key], float) and math.isfinite(report[key]), key
    assert report["naive_samples_per_s"] > 0 and report["project_samples_per_s"] > 0
    assert math.isclose(report["speedup"], report["project_samples_per_s"] / report["naive_samples_per_s"])
    assert report["head_cache_speedup"] > 0
    assert 0 < report["pruned_steps_ratio"] <= 1 and report["unpruned_steps"] == 3 * 2 * 3  # 48 / 16 steps per epoch
    assert 0 <= report["best_val_acc_pruned"] <= 1 and 0 <= report["best_val_acc_unpruned"] <= 1
    text = capsys.readouterr().out
    assert "throughput: naive" in text and "speedup" in text and "pruning:" in text


def test_bench_rejects_bad_counts(capsys):
    assert bench.main(["--trials", "0"]) == 2
    assert "--trials must be positive" in capsys.readouterr().err


def test_bench_take_home_times_a_fresh_study_and_its_final_on_more_data(tiny_model, data_folder, tmp_path):
    out = tmp_path / "bench.json"
    args = ["--parts", "take-home", "--model", tiny_model, "--data", data_folder, "--max-train-samples", "48", "--max-eval-samples",
            "24", "--batch-size", "16", "--epochs", "1", "--trials", "2", "--final-max-train-samples", "all", "--final-epochs", "2",
            "--output-dir", str(tmp_path / "out"), "--json", str(out)]
    assert bench.main(args) == 0
    taken = json.loads(out.read_text())["take_home"]
    assert taken["search_s"] > 0 and taken["final_s"] > 0 and math.isclose(taken["total_s"], taken["search_s"] + taken["final_s"])
    assert taken["finished_trials"] == 2 and 0 <= taken["test_accuracy"] <= 1
    assert (taken["search_budget"]["n_train"], taken["search_budget"]["epochs"]) == (48, 1.0)
    assert (taken["final_budget"]["n_train"], taken["final_budget"]["epochs"]) == (240, 2.0)
    assert taken["final_command"].startswith("emotion-study final ") and "--max-train-samples all" in taken["final_command"]
    assert (Path(taken["final_folder"]) / "standalone").is_dir()


def test_the_report_part_times_report_on_a_synthetic_study_that_report_reads():
    from study.settings import BenchSettings

    out: dict = {}
    bench.report_speed(BenchSettings(parts=["report"]), out, sizes=(6,))
    (row,) = out["report"]
    assert row["completed_trials"] == 6
    for key in ("build_s", "text_s", "json_s", "note_s", "run_summary_s"):
        assert row[key] > 0, key
    assert 0 < row["longest_line"] < 250


def test_a_synthetic_study_holds_the_records_run_writes(tmp_path):
    from optuna.trial import TrialState

    from study import records

    study = bench.synthetic_study(f"sqlite:///{tmp_path / 's.db'}", "s", 10, validation=50)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 10 and len(study.get_trials(states=(TrialState.PRUNED,))) == 2
    assert records.StudyRecord.read(study).settings["variant"] == "lora"
    assert [t.number for t in complete if records.TrialStart.read(t).baseline] == [0]
    for trial in complete:
        evidence = records.Evidence.read(trial)
        assert evidence.accuracy == trial.value and len(evidence.correct) == 50
        assert records.TrialResult.read(trial).n_validation == 50 and len(trial.intermediate_values) == 9
