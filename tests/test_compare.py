"""study.compare: several variants on one budget, each in a fresh process, with default or tuned parameters and intervals."""

import json

import pytest

from emotion_core import variants
from study import compare, run

PNG = b"\x89PNG\r\n\x1a\n"


def test_compare_writes_the_table_json_and_chart(tiny_model, data_folder, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["--model", tiny_model, "--data", data_folder, "--epochs", "1", "--batch-size", "16", "--max-train-samples", "96",
            "--max-eval-samples", "30", "--output-dir", str(tmp_path / "storage"), "--out", str(out)]
    assert compare.main(args) == 0
    summary = json.loads((out / "compare.json").read_text())
    rows = {row["variant"]: row for row in summary["rows"]}
    assert list(rows) == ["head", "lora", "qlora"]
    assert summary["n_train"] == 96 and summary["n_validation"] == 30 and summary["n_test"] == 60
    for variant, row in rows.items():
        assert row["params"] == variants.get(variant).default_params() and row["source"] == "defaults"
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_macro_f1"] <= 1 and row["n_test"] == 60
        low, high = row["test_accuracy_ci95"]
        assert low <= row["test_accuracy"] <= high and row["seeds"] == [0]
        assert row["train_seconds"] > 0 and row["optimizer_steps"] == 6 and row["peak_rss_mib"] > 0
    # What the seed's table is about: the head trains least, LoRA and QLoRA train the same adapter,
    # and QLoRA's 4-bit weights take less memory than LoRA's full-precision ones.
    assert rows["head"]["trainable_params"] < rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"]
    assert rows["qlora"]["weights_mib"] < rows["lora"]["weights_mib"]
    assert {(p["first"], p["second"]) for p in summary["pairs"]} == {("head", "lora"), ("head", "qlora"), ("lora", "qlora")}
    assert all(0 <= p["p_value"] <= 1 for p in summary["pairs"])

    table = (out / "compare.md").read_text()
    assert "| variant | parameters | from | test accuracy (mean ± std over seeds, 95% interval) |" in table
    for variant, row in rows.items():
        assert f"| {variant} | learning_rate={row['params']['learning_rate']:.3g} " in table and f"{row['test_accuracy']:.4f}" in table
    assert "emotion-study compare --model" in table and "McNemar" in table
    assert (out / "compare.png").read_bytes()[:8] == PNG
    assert "wrote" in capsys.readouterr().out


def test_compare_from_a_study_retrains_each_variants_best_trial_with_seeds(study_args, tmp_path):
    assert run.main(["--trials", "4", "--variant", "head,lora", "--pruner", "none", "--sampler", "random", *study_args]) == 0
    storage = study_args[study_args.index("--storage") + 1]
    import optuna

    study = optuna.load_study(study_name="t", storage=storage)
    best = {}
    for trial in study.trials:
        variant = trial.params["variant"]
        if variant not in best or trial.value > best[variant].value:
            best[variant] = trial
    out = tmp_path / "tuned"
    assert compare.main(["--storage", storage, "--from-study", "t", "--seeds", "2", "--out", str(out)]) == 0
    summary = json.loads((out / "compare.json").read_text())
    rows = {row["variant"]: row for row in summary["rows"]}
    assert set(rows) == set(best)  # one row per variant the study holds
    for variant, row in rows.items():
        assert row["params"] == {k: v for k, v in best[variant].params.items() if k != "variant"}
        assert row["source"] == f"study t trial {best[variant].number}" and row["seeds"] == [0, 1]
        assert len(row["test_accuracy_per_seed"]) == 2 and row["test_accuracy_std"] >= 0
    assert summary["n_train"] == 240 and summary["budget"]["epochs"] == 2.0  # the study's budget
    if len(rows) == 2:
        (pair,) = summary["pairs"]
        assert 0 <= pair["p_value"] <= 1 and pair["only_first_right"] + pair["only_second_right"] <= 60
    assert "(tuned)" in (out / "compare.md").read_text()


@pytest.mark.parametrize("flags,message", [(["--epochs", "0"], "--epochs must be positive"), (["--variants", "big"], "invalid choice"),
                                           (["--seeds", "0"], "--seeds must be positive")])
def test_compare_rejects_bad_input(tiny_model, data_folder, tmp_path, capsys, flags, message):
    args = ["--model", tiny_model, "--data", data_folder, "--out", str(tmp_path / "cmp"), *flags]
    assert compare.main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()


def test_a_variant_whose_trials_were_all_pruned_is_represented_by_its_best_pruned_trial(study_args):
    assert run.main(["--trials", "1", "--variant", "head,lora", "--pruner", "none", "--no-baseline", *study_args]) == 0
    storage = study_args[study_args.index("--storage") + 1]
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    study = optuna.load_study(study_name="t", storage=storage)
    done = study.trials[0].params["variant"]
    other = "lora" if done == "head" else "head"
    space = {"variant": CategoricalDistribution(["head", "lora"]), "learning_rate": FloatDistribution(1e-5, 5e-3, log=True)}
    for value, lr in ((0.3, 1e-3), (0.4, 2e-3)):
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.PRUNED, params={"variant": other, "learning_rate": lr},
                                                  distributions=space, intermediate_values={4: value}))
    _, chosen = compare.tuned_params(storage, ["t"])
    assert chosen[done][1] == "study t trial 0"
    assert chosen[other][0]["learning_rate"] == 2e-3 and chosen[other][1] == "study t trial 2 (pruned at step 4)"


def test_compare_names_a_study_that_does_not_exist(study_args, capsys):
    storage = study_args[study_args.index("--storage") + 1]
    assert compare.main(["--storage", storage, "--from-study", "nope"]) == 2
    assert "no storage at" in capsys.readouterr().err  # nothing made it yet
    import optuna

    optuna.create_study(study_name="other", storage=storage)
    assert compare.main(["--storage", storage, "--from-study", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no study 'nope'" in err and "it holds other" in err
