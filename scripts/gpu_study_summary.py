"""The JSON and the summary lines of scripts/gpu_study.sh: what a study in a journal file holds, the workers' speedups,
and the final report. Reads only; run by the script, one subcommand per step.

    study  JOURNAL NAME WALL_S WORKERS EXIT_CODE   one JSON line: counts by state, best value and params, trial span
    scaling LINES.jsonl OUT.json                   the runs side by side, speedups of each worker count over 1 worker
    fastest SCALING.json                           the worker count whose trials, all finished, took the least time
    final  STUDY_LINE.json REPORT.json WALL_S EXIT_CODE OUT.json   the study and study.final --seeds' report together
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

AIM_TEST_ACCURACY = 0.935
AIM_STUDY_S = 300.0


def study_line(journal: str, name: str, wall_s: str, workers: str, exit_code: str) -> dict:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    from study import records

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    line = {"workers": int(workers), "wall_s": round(float(wall_s), 1), "exit_code": int(exit_code), "study_name": name}
    if not Path(journal).is_file():
        return {**line, "error": "no journal: the study did not start"}
    study = optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(journal)))
    trials = study.get_trials(deepcopy=False)
    counts = {state.name.lower(): sum(t.state == state for t in trials) for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    line.update(counts, finished=counts["complete"] + counts["pruned"], settings=(records.StudyRecord.read(study) or records.StudyRecord({}, (), {}, "")).settings)
    # From the first trial's start to the last one's end: the wall time without the processes' start (imports, model load).
    line["trials_s"] = round((max(ends) - min(starts)).total_seconds(), 1) if starts and ends else None
    line["sum_trial_s"] = round(sum((t.datetime_complete - t.datetime_start).total_seconds() for t in trials
                                    if t.datetime_start and t.datetime_complete), 1)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if complete:
        best = max(complete, key=lambda t: t.value)
        # Samples per second of one trial: how much each process slows when several share the GPU.
        results = [records.TrialResult.read(t) for t in complete]
        speeds = [r.train_samples_per_second for r in results if r.train_samples_per_second]
        line.update(best_trial=best.number, best_val_accuracy=round(best.value, 4), best_params=best.params,
                    mean_trial_samples_per_s=round(sum(speeds) / len(speeds), 1) if speeds else None,
                    peak_memory_mib=max(r.peak_memory_mib or 0 for r in results))
    failed = [records.fail_reason(t) for t in trials if t.state == TrialState.FAIL]
    if failed:
        line["fail_reasons"] = sorted(set(filter(None, failed)))
    return line


def describe(line: dict) -> str:
    if "error" in line:
        return f"workers {line['workers']}: {line['error']} (exit code {line['exit_code']})"
    return (f"workers {line['workers']}: wall {line['wall_s']} s (trials {line['trials_s']} s), {line['finished']} finished "
            f"({line['complete']} complete, {line['pruned']} pruned, {line['fail']} failed), best val accuracy "
            f"{line.get('best_val_accuracy', '-')}, exit code {line['exit_code']}")


def complete_run(line: dict, trials: int) -> bool:
    return line.get("exit_code") == 0 and line.get("finished", 0) >= trials


def scaling(lines_path: str, out_path: str, trials: str) -> dict:
    runs = [json.loads(text) for text in Path(lines_path).read_text().splitlines() if text.strip()]
    wanted = int(trials)
    one = next((r for r in runs if r["workers"] == 1), None)
    result = {"trials": wanted, "runs": runs, "speedup": {}, "speedup_trials": {}}
    for run in runs:
        if run["workers"] == 1 or one is None:
            continue
        # Only runs that did the same work compare: all trials finished, no crash.
        if complete_run(one, wanted) and complete_run(run, wanted):
            result["speedup"][str(run["workers"])] = round(one["wall_s"] / run["wall_s"], 2)
            if one.get("trials_s") and run.get("trials_s"):
                result["speedup_trials"][str(run["workers"])] = round(one["trials_s"] / run["trials_s"], 2)
        else:
            result["speedup"][str(run["workers"])] = None
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
    for run in runs:
        print("scaling:", describe(run))
    print("scaling: speedup over 1 worker (wall):", result["speedup"], "(trials only):", result["speedup_trials"], "- aim: 5x with 8 workers")
    return result


def fastest(scaling_path: str) -> int:
    """By the trials' span, not the wall time: the processes' start (imports, model load; longer for 8 than for 1) is
    paid once per study, and the full study runs several times longer than a scaling one."""
    result = json.loads(Path(scaling_path).read_text())
    done = [r for r in result["runs"] if complete_run(r, result["trials"])]
    return min(done, key=lambda r: r["trials_s"] or r["wall_s"])["workers"] if done else 1


def rounded(value):
    return round(value, 4) if isinstance(value, float) else value


def final(study_path: str, report_path: str, wall_s: str, exit_code: str, out_path: str) -> dict:
    result = {"study": json.loads(Path(study_path).read_text()), "final": {"wall_s": round(float(wall_s), 1), "exit_code": int(exit_code)}}
    if Path(report_path).is_file():
        report = json.loads(Path(report_path).read_text())
        keys = ("test_accuracy", "test_accuracy_std", "test_accuracy_ci95", "seeds", "test_macro_f1", "best_trial", "best_params",
                "train_seconds", "peak_memory_mib")
        result["final"].update({k: report[k] for k in keys if k in report})
    study, test = result["study"], result["final"].get("test_accuracy")
    result["aim"] = {"test_accuracy_at_least": AIM_TEST_ACCURACY, "study_s_at_most": AIM_STUDY_S,
                     "reached": test is not None and test >= AIM_TEST_ACCURACY and study["wall_s"] <= AIM_STUDY_S}
    Path(out_path).write_text(json.dumps(result, indent=2) + "\n")
    print("study:", describe(study))
    final, ci = result["final"], result["final"].get("test_accuracy_ci95") or []
    print(f"final: test accuracy {rounded(test)} (std {rounded(final.get('test_accuracy_std'))}, 95% CI {[rounded(x) for x in ci]}, "
          f"seeds {final.get('seeds')}) in {final['wall_s']} s, exit code {exit_code}; "
          f"aim (>= {AIM_TEST_ACCURACY} with the study in <= {AIM_STUDY_S:.0f} s) reached: {result['aim']['reached']}")
    return result


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "study":
        line = study_line(*args)
        print(json.dumps(line))
        print(describe(line), file=sys.stderr)  # the script's log shows it; stdout is the JSON line
    elif command == "scaling":
        scaling(*args)
    elif command == "fastest":
        print(fastest(*args))
    elif command == "final":
        final(*args)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
