"""A study that knows what tuning bought and when to stop: the baseline inside every study, paired evidence, the gain
with its interval and p, trials tied with the best, the patience stop rule, final --top K, and the replay bench."""

import json
import re

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from emotion_core import variants
from study import bench, final, records, report, run
from study._trials.space import OPTIMIZER_SPACE
from tests.conftest import study_dir

GOOD = {"learning_rate": 1e-2, "weight_decay": 0.0, "lora_r": 8, "lora_dropout": 0.0}  # learns the synthetic task (test_train.py)


def storage_of(args):
    return args[args.index("--storage") + 1]


def load(args):
    return optuna.load_study(study_name="t", storage=storage_of(args))


def report_json(capsys, args) -> dict:
    capsys.readouterr()
    assert report.main(["--storage", storage_of(args), "--study-name", "t", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_new_study_starts_with_each_variants_defaults_marked_as_its_baseline(study_args):
    assert run.main(["--trials", "3", "--variant", "head,lora", "--sampler", "random", *study_args]) == 0
    trials = load(study_args).trials
    for trial, name in zip(trials[:2], ("head", "lora")):
        defaults = variants.get(name).default_params()
        assert records.TrialStart.read(trial).baseline and trial.params["variant"] == name
        assert {k: v for k, v in trial.params.items() if k != "variant"} == {k: defaults[k] for k in trial.params if k != "variant"}
        assert set(trial.params) - {"variant"} == set(OPTIMIZER_SPACE) | set(variants.get(name).space)
    assert not records.TrialStart.read(trials[2]).baseline
    assert len(load(study_args).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 3  # baselines count toward --trials


def test_no_baseline_leaves_it_out_and_the_report_says_so(study_args, capsys):
    assert run.main(["--trials", "1", "--no-baseline", *study_args]) == 0
    assert not records.TrialStart.read(load(study_args).trials[0]).baseline
    summary = report_json(capsys, study_args)
    assert summary["gain_over_baseline"] is None and "no baseline trial" in summary["gain_note"]


def test_a_baseline_is_never_pruned(study_args):
    """Its learning rate is absurd here, so the pruner would stop it; a baseline runs to its end regardless."""
    assert run.main(["--trials", "1", "--variant", "lora", *study_args]) == 0  # the baseline, trial 0
    study = load(study_args)
    for dropout in (0.0, 0.05, 0.1, 0.15, 0.2):  # five completed trials: the median pruner may act from now on
        study.enqueue_trial({**GOOD, "lora_dropout": dropout})
    records.TrialStart.enqueue_baseline(study, {**GOOD, "learning_rate": 3.0})
    assert run.main(["--trials", "7", "--variant", "lora", "--pruner", "median", *study_args]) == 0
    absurd = load(study_args).trials[6]
    assert absurd.params["learning_rate"] == 3.0 and records.TrialStart.read(absurd).baseline
    assert absurd.state == TrialState.COMPLETE and len(absurd.intermediate_values) == 6


def test_a_clearly_worse_baseline_gives_a_small_p_and_identical_trials_are_tied(study_args, capsys):
    assert run.main(["--trials", "1", "--variant", "lora", *study_args]) == 0  # the baseline: lr 1e-3, which learns little here
    study = load(study_args)
    study.enqueue_trial(GOOD)
    study.enqueue_trial(GOOD)  # the same parameters and seed: the same sentences right
    assert run.main(["--trials", "3", "--variant", "lora", *study_args]) == 0
    trials = load(study_args).trials
    first, second = records.Evidence.read(trials[1]), records.Evidence.read(trials[2])
    assert len(first.correct) == 60 and (first.correct == second.correct).all() and first.accuracy == trials[1].value
    summary = report_json(capsys, study_args)
    gain = summary["gain_over_baseline"]
    assert gain["baseline_trial"] == 0 and gain["best_trial"] in (1, 2)
    assert gain["points"] == pytest.approx(100 * (trials[1].value - trials[0].value))
    low, high = gain["ci95_points"]
    assert 0 < low < gain["points"] < high and gain["p_value"] < 0.01
    assert summary["tied_with_best"] == [1, 2]  # the two alike, not the baseline
    assert summary["importances"] is None and "need at least 5" in summary["importances_note"]
    assert report.main(["--storage", storage_of(study_args), "--study-name", "t"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"Tuning bought \+\d+\.\d points over the defaults .*McNemar.s exact test p = .*: a gain beyond the validation noise", text)
    assert "The best is one of 2 trials that McNemar's test cannot tell from it (p >= 0.05): 1, 2." in text
    storage = optuna.storages.RDBStorage(storage_of(study_args))  # the study's note in the dashboard says the same
    note = storage.get_study_system_attrs(storage.get_study_id_from_name("t"))
    assert any("Tuning bought" in str(value) for value in note.values())


def test_importances_come_with_their_spread_over_seeds(tmp_path, capsys):
    from optuna.distributions import FloatDistribution

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    space = {"learning_rate": FloatDistribution(1e-5, 1e-2, log=True), "lora_dropout": FloatDistribution(0.0, 0.3)}
    for i in range(12):
        params = {"learning_rate": 10 ** (-5 + 3 * i / 11), "lora_dropout": [0.0, 0.3, 0.1][i % 3]}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=0.3 + 0.02 * i))
    assert report.main(["--storage", storage, "--study-name", "t", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)["importances"]
    assert list(table) == ["learning_rate", "lora_dropout"]
    for row in table.values():
        assert len(row["per_seed"]) == 5 and row["min"] <= row["mean"] <= row["max"]


def test_the_summary_names_the_importance_of_every_searched_parameter(tmp_path, capsys):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    storage = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(study_name="t", storage=storage, direction="maximize")
    space = {"model": CategoricalDistribution(["a", "b"]), "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
             "weight_decay": FloatDistribution(0.0, 0.1), "lora_r": CategoricalDistribution([4, 8, 16]),
             "lora_dropout": FloatDistribution(0.0, 0.3)}
    rng = np.random.default_rng(0)
    for i in range(12):
        params = {"model": "ab"[i % 2], "learning_rate": 10 ** (-5 + 3 * i / 11), "weight_decay": float(rng.uniform(0, 0.1)),
                  "lora_r": [4, 8, 16][i % 3], "lora_dropout": float(rng.uniform(0, 0.3))}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space, value=0.3 + 0.02 * i + 0.05 * (i % 2)))
    assert report.main(["--storage", storage, "--study-name", "t"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "Importance (fANOVA" in line)
    assert all(f"{name} " in line for name in space), line


def test_patience_stops_the_study_and_a_rerun_does_not_go_past_it(study_args, capsys):
    args = [a for a in study_args]
    args[args.index("--patience") + 1] = "2"
    assert run.main(["--trials", "1", "--variant", "lora", *args]) == 0  # the baseline
    study = load(args)
    for _ in range(3):
        study.enqueue_trial(GOOD)  # the first beats the baseline significantly; the two after it tie with it
    assert run.main(["--trials", "10", "--variant", "lora", *args]) == 0
    out = capsys.readouterr().out
    assert "stopped after 4 finished trials: the last 2 brought no significantly better best" in out and "--patience 0" in out
    assert len(load(args).trials) == 4
    assert records.StopRecord.read(load(args)) == records.StopRecord(patience=2, finished=4, best_trial=1,
                                                                     time=records.StopRecord.read(load(args)).time)
    assert run.main(["--trials", "10", "--variant", "lora", *args]) == 0  # the same command: it stays stopped
    assert "stopped after 4 finished trials" in capsys.readouterr().out and len(load(args).trials) == 4
    args[args.index("--patience") + 1] = "0"
    assert run.main(["--trials", "6", "--variant", "lora", "--sampler", "random", *args]) == 0  # off: it runs on
    assert len(load(args).get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))) == 6


def test_final_top_2_retrains_two_and_tests_only_the_kept_one_once(study_args, capsys):
    assert run.main(["--trials", "3", "--variant", "head", "--sampler", "random", *study_args]) == 0
    where = ["--storage", storage_of(study_args), "--study-name", "t", "--output-dir", study_args[study_args.index("--output-dir") + 1]]
    capsys.readouterr()
    assert final.main([*where, "--top", "2", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    report_file = json.loads((study_dir(study_args) / "final" / "report.json").read_text())
    candidates = report_file["candidates"]
    best_two = [t.number for t in sorted(load(study_args).get_trials(states=(TrialState.COMPLETE,)), key=lambda t: -t.value)[:2]]
    assert [row["trial"] for row in candidates] == best_two
    kept = max(candidates, key=lambda row: row["retrained_val_accuracy"])["trial"]
    assert report_file["best_trial"] == kept
    for row in candidates:
        assert row["optimism"] == pytest.approx(row["study_val_accuracy"] - row["retrained_val_accuracy"])
        assert len(row["retrained_val_accuracy_per_seed"]) == 2
    assert report_file["study_pick_optimism"] == candidates[0]["optimism"]
    tested = re.findall(r"trial (\d+) seed (\d+): test accuracy", out)
    assert tested == [(str(kept), "1"), (str(kept), "2")]  # the test split, once per seed of the kept trial only
    assert out.count("testing: batch 1/") == 2
    assert final.main([*where, "--top", "2", "--trial", "0"]) == 2  # one or the other


def test_the_replay_bench_trains_nothing(study_args, tmp_path, capsys):
    assert run.main(["--trials", "4", "--variant", "head", "--sampler", "random", *study_args]) == 0
    out = tmp_path / "stopping.json"
    # A model that does not exist: anything that trained would fail to load it.
    assert bench.main(["--parts", "stopping", "--storage", storage_of(study_args), "--study-name", "t", "--model", "/no/such/model",
                       "--json", str(out)]) == 0
    replay = json.loads(out.read_text())["stopping"]
    assert replay["finished"] == 4 and [row["patience"] for row in replay["patience"]] == [5, 10, 15]
    for row in replay["patience"]:
        assert not row["stops"] and row["finished_at_stop"] == 4 and row["time_saved_share"] == 0.0
    assert len(load(study_args).trials) == 4


def paired_study(storage: str, name: str, sentences: int, only_best: int, only_baseline: int) -> optuna.Study:
    """A baseline and one tuned trial whose evidence is written as run writes it: both right on half the sentences,
    the tuned trial alone on ``only_best`` more, the baseline alone on ``only_baseline``."""
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    both = sentences // 2
    base, best = np.zeros(sentences, dtype=bool), np.zeros(sentences, dtype=bool)
    base[:both] = best[:both] = True
    best[both:both + only_best] = True
    base[both + only_best:both + only_best + only_baseline] = True
    for correct, baseline in ((base, True), (best, False)):
        trial = optuna.trial.create_trial(value=float(correct.mean()))
        records.TrialStart(variant="lora", baseline=baseline).write(trial)
        records.Evidence(correct=correct, data="validation").write(trial)
        study.add_trial(trial)
    return study


def printed_gain(line: str) -> tuple[float, float, float]:
    """p and the 95% interval as the line prints them."""
    p_value = re.search(r"p = ([-+.e\d]+)", line)
    interval = re.search(r"95% interval ([-+.\d]+) to ([-+.\d]+)", line)
    assert p_value and interval, line
    return float(p_value.group(1)), float(interval.group(1)), float(interval.group(2))


@pytest.mark.parametrize("only_best, only_baseline, significant", [
    (9, 2, False),  # +11.7 points, p = 0.065: a paired bootstrap's interval, +1.7 to +21.7, left out 0 here
    (10, 2, True),  # p = 0.039
    (10, 1, True),  # p = 0.012
])
def test_the_verdict_never_contradicts_the_interval_it_prints(tmp_path, capsys, only_best, only_baseline, significant):
    from optuna_dashboard import get_note

    storage = f"sqlite:///{tmp_path / 'paired.db'}"
    paired_study(storage, "paired", 60, only_best, only_baseline)
    where = ["--storage", storage, "--study-name", "paired"]
    assert report.main(where) == 0
    text = capsys.readouterr().out
    note = get_note(optuna.load_study(study_name="paired", storage=storage))
    for shown in (text, note):
        line = next(line for line in shown.splitlines() if "Tuning bought" in line)
        p_value, low, high = printed_gain(line)
        assert (p_value < 0.05) is significant and (low > 0 or high < 0) is significant, line
        assert ("beyond the validation noise" in line) is significant, line
    assert report.main([*where, "--json"]) == 0
    gain = json.loads(capsys.readouterr().out)["gain_over_baseline"]
    low, high = gain["ci95_points"]
    assert gain["points"] == pytest.approx(100 * (only_best - only_baseline) / 60)
    assert gain["significant"] is significant and (gain["p_value"] < 0.05) is significant
    assert (low > 0 or high < 0) is significant and low <= gain["points"] <= high
    assert ("beyond the validation noise" in gain["verdict"]) is significant and gain["verdict"] + "." in text


def test_a_trial_did_not_work_only_against_the_baseline_of_its_own_model(tmp_path, capsys):
    """Two models' baselines far apart: a trial of the weaker model is judged against that model's defaults."""
    from optuna.distributions import CategoricalDistribution

    storage = f"sqlite:///{tmp_path / 'models.db'}"
    study = optuna.create_study(study_name="models", storage=storage, direction="maximize")
    model = CategoricalDistribution(["weak", "strong"])
    for name, right, baseline in (("weak", 100, True), ("strong", 180, True), ("weak", 95, False), ("weak", 40, False)):
        correct = np.arange(200) < right
        trial = optuna.trial.create_trial(value=float(correct.mean()), params={"model": name}, distributions={"model": model})
        records.TrialStart(variant="lora", baseline=baseline).write(trial)
        records.Evidence(correct=correct, data="validation").write(trial)
        study.add_trial(trial)
    assert report.main(["--storage", storage, "--study-name", "models", "--json"]) == 0
    failed = json.loads(capsys.readouterr().out)["failed_values"]
    assert [row["trial"] for row in failed] == [3]  # trial 2 is 2.5 points below its own baseline (p = 0.06), not 42.5
    assert failed[0]["why"].startswith("30.0 points below the baseline (trial 0), McNemar p = ")


def test_mcnemars_interval_leaves_out_zero_exactly_when_its_p_is_significant():
    from emotion_core.stats import mcnemar_difference

    for discordant in range(0, 41):
        for only_first in range(discordant + 1):
            first, second = np.zeros(100, dtype=bool), np.zeros(100, dtype=bool)
            first[:only_first] = True
            second[only_first:discordant] = True
            test = mcnemar_difference(first, second)
            low, high = test["ci95"]
            assert (low > 0 or high < 0) is (test["p_value"] < 0.05), (discordant, only_first, test)
            assert low <= test["difference"] == (2 * only_first - discordant) / 100 <= high


def test_the_middle_half_of_two_trials_lies_between_them(tmp_path, capsys):
    storage = f"sqlite:///{tmp_path / 'two.db'}"
    study = optuna.create_study(study_name="two", storage=storage, direction="maximize")
    for value in (0.2, 0.26):
        study.add_trial(optuna.trial.create_trial(value=value))
    assert report.main(["--storage", storage, "--study-name", "two", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["spread"]
    assert 0.2 <= rows["q1"] <= rows["median"] <= rows["q3"] <= 0.26 and rows["median"] == pytest.approx(0.23)
    assert report.main(["--storage", storage, "--study-name", "two"]) == 0
    assert "spread from 0.2000 to 0.2600 validation accuracy (middle half 0.2150-0.2450)" in capsys.readouterr().out


def test_a_study_with_many_tied_trials_prints_bounded_lines(tmp_path, capsys):
    """30 validation sentences cannot tell most of 60 trials apart: the text names the first five and counts the rest,
    --json lists them all."""
    storage = f"sqlite:///{tmp_path / 'many.db'}"
    bench.synthetic_study(storage, "many", 60, validation=30)
    assert report.main(["--storage", storage, "--study-name", "many", "--json"]) == 0
    tied = json.loads(capsys.readouterr().out)["tied_with_best"]
    assert len(tied) > 20
    assert report.main(["--storage", storage, "--study-name", "many"]) == 0
    text = capsys.readouterr().out
    line = next(line for line in text.splitlines() if "McNemar's test cannot tell from it" in line)
    assert line.endswith(f"{', '.join(map(str, tied[:5]))} and {len(tied) - 5} more.")
    assert max(len(line) for line in text.splitlines()) < 250
