import json
import math

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
