"""The search space: today's space by default, a study's search section changing it key by key (ranges, choices, fixed
values, any field of a variant's Params), every mistake named by its key path, the baseline brought into the space,
and a study whose trials and final retraining keep to it."""

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from transformers import TrainerCallback

from emotion_core import variants
from emotion_core.training import TrainConfig, train
from study import final, records, report, run
from study._errors import UsageError
from study._trials.space import SearchSpace
from study.settings import BenchSettings, StudySettings
from tests.conftest import study_dir

ROOT = Path(__file__).resolve().parents[1]
BUDGET = {"epochs": 3.0, "batch_size": 32}
EXAMPLE = """
learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}
weight_decay: 0.0
warmup_ratio: {low: 0.0, high: 0.1}
lr_scheduler_type: {choices: [linear, cosine]}
lora:
  lora_r: {choices: [8, 16, 32]}
  lora_alpha_ratio: {low: 1.0, high: 4.0}
  lora_dropout: 0.05
"""


def distributions(space: SearchSpace) -> dict:
    """What Optuna records for one trial of ``space``."""
    study = optuna.create_study()
    trial = study.ask()
    space.suggest(trial)
    return trial.distributions


def test_without_a_search_section_the_space_is_todays():
    settings = StudySettings(variant="head,lora")
    space = settings.space()
    assert space == SearchSpace.from_dict({}, ("head", "lora")) and space.to_dict() == {} and settings.identity()["search"] is None
    assert space.describe() == ["variant: {head, lora}", "learning_rate: 1e-05..0.005 (log)", "weight_decay: 0..0.1", "head.head_dropout: 0..0.3",
                                "lora.lora_r: {4, 8, 16, 32}", "lora.lora_dropout: 0..0.3"]
    lora = distributions(StudySettings().space())
    assert lora == {"learning_rate": FloatDistribution(1e-5, 5e-3, log=True), "weight_decay": FloatDistribution(0.0, 0.1),
                    "lora_r": CategoricalDistribution((4, 8, 16, 32)), "lora_dropout": FloatDistribution(0.0, 0.3)}
    assert space.baseline(BUDGET) == [
        {"variant": "head", "learning_rate": 2e-3, "weight_decay": 0.0, "head_dropout": 0.1},
        {"variant": "lora", "learning_rate": 1e-3, "weight_decay": 0.0, "lora_r": 8, "lora_dropout": 0.1},
    ]


def test_a_search_section_changes_the_space_key_by_key_and_round_trips_through_yaml():
    space = StudySettings(search=yaml.safe_load(EXAMPLE)).space()
    assert space.describe() == [
        "learning_rate: 0.0001..0.003 (log)", "weight_decay: 0 (fixed)", "warmup_ratio: 0..0.1", "lr_scheduler_type: {linear, cosine}",
        "lora.lora_r: {8, 16, 32}", "lora.lora_dropout: 0.05 (fixed)", "lora.lora_alpha_ratio: 1..4",
    ]
    assert SearchSpace.from_dict(yaml.safe_load(yaml.safe_dump(space.to_dict())), ("lora",)) == space
    assert distributions(space) == {
        "learning_rate": FloatDistribution(1e-4, 3e-3, log=True), "warmup_ratio": FloatDistribution(0.0, 0.1),
        "lr_scheduler_type": CategoricalDistribution(("linear", "cosine")), "lora_r": CategoricalDistribution((8, 16, 32)),
        "lora_alpha_ratio": FloatDistribution(1.0, 4.0),
    }
    # An int parameter's range gives ints; a float parameter's takes ints as floats.
    ranged = SearchSpace.from_dict({"batch_size": {"low": 8, "high": 64, "log": True}, "lora": {"lora_r": {"low": 2, "high": 16}}}, ("lora",))
    assert distributions(ranged)["lora_r"] == IntDistribution(2, 16) and distributions(ranged)["batch_size"] == IntDistribution(8, 64, log=True)


def test_the_baseline_is_the_defaults_brought_into_the_space():
    search = {"learning_rate": {"low": 2e-3, "high": 5e-3}, "lr_scheduler_type": {"choices": ["cosine", "constant"]},
              "epochs": {"choices": [1, 2]}, "lora": {"lora_r": {"choices": [16, 32]}, "lora_dropout": 0.0}}
    settings = StudySettings(search=search)
    (baseline,) = settings.space().baseline(BUDGET)
    assert baseline == {"learning_rate": 2e-3, "weight_decay": 0.0, "lr_scheduler_type": "cosine", "epochs": 2.0, "lora_r": 16}
    config = settings.train_config(baseline)  # the fixed value wins over the default
    assert config.variant_params["lora_dropout"] == 0.0 and config.epochs == 2.0 and config.lr_scheduler_type == "cosine"
    int_range = SearchSpace.from_dict({"lora": {"lora_r": {"low": 12, "high": 20}}}, ("lora",)).baseline(BUDGET)
    assert int_range[0]["lora_r"] == 12 and isinstance(int_range[0]["lora_r"], int)


def test_target_modules_is_a_fixed_lora_targets():
    settings = StudySettings(variant="head,lora", target_modules=["c_fc"])
    assert settings.space().fixed("lora") == {"lora_targets": ["c_fc"]} and settings.space().fixed("head") == {}
    assert settings.train_config({"variant": "lora", "lora_r": 4}).variant_params == {"lora_r": 4, "lora_targets": ["c_fc"]}
    assert settings.identity()["search"] is None  # the flag is stored as itself, as before
    same = StudySettings(target_modules=["c_fc"], search={"lora": {"lora_targets": ["c_fc"]}})  # both, alike: no conflict
    assert same.space().fixed("lora") == {"lora_targets": ["c_fc"]}
    with pytest.raises(UsageError, match=r"^search.lora.lora_targets and --target-modules both set lora_targets"):
        StudySettings(target_modules=["c_fc"], search={"lora": {"lora_targets": "all-linear"}})


@pytest.mark.parametrize("search,message", [
    ({"lora": {"lora_r": {"choices": [8, "x"]}}}, "search.lora.lora_r.choices[1]: 'x' is not an int"),
    ({"lora": {"lora_r": {"choices": [8, 16.5]}}}, "search.lora.lora_r.choices[1]: 16.5 is not an int"),
    ({"lora": {"lora_r": {"low": 2, "high": 8.0}}}, "search.lora.lora_r.high: 8.0 is not an int"),
    ({"lora": {"rank": 8}}, "search.lora.rank: unknown parameter of variant lora; it takes lora_r, lora_alpha_ratio, lora_dropout, "
                            "lora_targets"),
    ({"lorra": {"lora_r": 8}}, "search.lorra: unknown parameter; the search takes learning_rate, weight_decay, warmup_ratio, "
                               "lr_scheduler_type, epochs, batch_size, and a variant's own under its name (head, lora, qlora, full, dora)"),
    ({"learning_rate": {"low": 1e-2, "high": 1e-3}}, "search.learning_rate: low 0.01 is above high 0.001"),
    ({"weight_decay": {"low": 0, "high": 0.1, "log": True}}, "search.weight_decay.low: a log range needs low above 0, not 0.0"),
    ({"learning_rate": {"low": 1e-4, "high": 1e-3, "step": 1e-4}}, "search.learning_rate: a range takes low, high and log"),
    ({"learning_rate": {"high": 1e-3}}, "search.learning_rate: a range takes low, high and log"),
    ({"learning_rate": {"low": 1e-4, "high": 1e-3, "log": "yes"}}, "search.learning_rate.log: true or false, not 'yes'"),
    ({"lr_scheduler_type": {"choices": ["linear", "cosine_annealing"]}},
     "search.lr_scheduler_type.choices[1]: 'cosine_annealing' is not one of linear, cosine, cosine_with_restarts"),
    ({"lr_scheduler_type": {"low": 0, "high": 1}}, "search.lr_scheduler_type: a range needs a numeric parameter, and this one is a string"),
    ({"lora": {"lora_targets": {"low": 1, "high": 2}}}, "search.lora.lora_targets: a range needs a numeric parameter, and this one is "
                                                        "a string or a list of strings"),
    ({"lora": {"lora_targets": {"choices": [["c_attn"], "all-linear"]}}}, "search.lora.lora_targets.choices[0]: ['c_attn'] is not a string"),
    ({"lr_scheduler_type": {"choices": ["linear"], "low": 1}}, "search.lr_scheduler_type: choices take no other key, not low"),
    ({"weight_decay": {"choices": []}}, "search.weight_decay.choices: give a list of one or more values, not []"),
    ({"warmup_ratio": {"low": 0.0, "high": 1.5}}, "search.warmup_ratio.high: 1.5 is not in [0, 1)"),
    ({"batch_size": 0}, "search.batch_size: 0 is not positive"),
    ({"head": {"head_dropout": True}}, "search.head.head_dropout: True is not a number"),
    ({"lora": [8, 16]}, "search.lora: give a mapping of parameters, not [8, 16]"),
])
def test_a_mistake_names_its_key_path_and_what_is_allowed(search, message):
    with pytest.raises(UsageError) as error:
        StudySettings(variant="head,lora", search=search)
    assert str(error.value).startswith(message), str(error.value)


def test_variants_searched_together_search_a_shared_parameter_alike():
    """Optuna keeps one distribution per parameter name: lora and qlora both ask lora_r."""
    with pytest.raises(UsageError, match=r"^search.qlora.lora_r: \{4, 8, 16, 32\}, but search.lora.lora_r: \{8, 16\}"):
        StudySettings(variant="lora,qlora", search={"lora": {"lora_r": {"choices": [8, 16]}}})
    both = {"choices": [8, 16]}
    assert StudySettings(variant="lora,qlora", search={"lora": {"lora_r": both}, "qlora": {"lora_r": both}}).space()
    assert StudySettings(variant="lora,qlora", search={"lora": {"lora_r": 8}}).space().fixed("lora") == {"lora_r": 8}


def test_one_home_for_each_variants_default_learning_rate():
    assert TrainConfig().learning_rate == variants.get("lora").default_learning_rate == 1e-3
    assert TrainConfig(variant="head").learning_rate == variants.get("head").default_learning_rate
    assert StudySettings(variant="full").train_config({}).learning_rate == variants.get("full").default_learning_rate
    bench = BenchSettings()
    assert bench.learning_rate is None and bench.head_learning_rate is None  # the bench takes the variants' own


class LearningRates(TrainerCallback):
    def __init__(self):
        self.seen = []

    def on_step_begin(self, args, state, control, lr_scheduler=None, **kwargs):
        self.seen.append(lr_scheduler.get_last_lr()[0])


@pytest.mark.parametrize("changes,expect", [
    ({}, "linear decay from the start"),
    ({"warmup_ratio": 0.5, "lr_scheduler_type": "constant_with_warmup"}, "warmup, then constant"),
])
def test_the_warmup_and_schedule_reach_the_trainer(tiny_model, tokenizer, tokenized, changes, expect):
    rates = LearningRates()
    config = TrainConfig(model=tiny_model, learning_rate=1e-2, epochs=1, batch_size=16, feature_cache=False, **changes)
    train(config, tokenized, tokenizer, callbacks=[rates])
    steps = len(rates.seen)
    assert steps == 15  # 240 sentences, batch 16
    if not changes:  # what training did before the two fields existed
        assert rates.seen[0] == 1e-2 and all(a > b for a, b in zip(rates.seen, rates.seen[1:]))
    else:
        rising, flat = rates.seen[:8], rates.seen[8:]
        assert rising[0] == 0 and all(a < b for a, b in zip(rising, rising[1:])) and set(flat) == {1e-2}


def run_with(search: dict | None, flags: list[str]) -> int:
    """``emotion-study run`` with these flags and a study file that holds this search section."""
    out = Path(flags[flags.index("--output-dir") + 1])
    out.mkdir(parents=True, exist_ok=True)
    study_file = out / "study.yaml"
    study_file.write_text(yaml.safe_dump({"search": search}))
    return run.main(["--config", str(study_file), *flags])


def test_a_study_keeps_to_its_space_and_final_retrains_with_its_fixed_values(study_args, capsys):
    search = {"learning_rate": {"low": 1e-3, "high": 2e-3}, "warmup_ratio": {"low": 0.0, "high": 0.2},
              "lora": {"lora_r": {"choices": [2, 4]}, "lora_alpha_ratio": 3.0, "lora_dropout": 0.0}}
    assert run_with(search, ["--trials", "5", "--sampler", "random", "--pruner", "none", *study_args]) == 0
    storage = study_args[study_args.index("--storage") + 1]
    study = optuna.load_study(study_name="t", storage=storage)
    baseline, *others = study.trials
    assert records.TrialStart.read(baseline).baseline
    assert baseline.params == {"learning_rate": 1e-3, "weight_decay": 0.0, "warmup_ratio": 0.0, "lora_r": 4}  # lora_r 8, brought in
    for trial in study.trials:
        assert set(trial.params) == {"learning_rate", "weight_decay", "warmup_ratio", "lora_r"}
        assert 1e-3 <= trial.params["learning_rate"] <= 2e-3 and 0 <= trial.params["warmup_ratio"] <= 0.2 and trial.params["lora_r"] in (2, 4)
    assert len({t.params["warmup_ratio"] for t in others}) == 4
    assert study.user_attrs["settings"]["search"] == StudySettings(search=search).space().to_dict()

    capsys.readouterr()
    assert report.main(["--storage", storage, "--study-name", "t", "--json"]) == 0
    importances = json.loads(capsys.readouterr().out)["importances"]
    assert set(importances) == {"learning_rate", "weight_decay", "warmup_ratio", "lora_r"}  # every searched one

    out = study_args[study_args.index("--output-dir") + 1]
    assert final.main(["--storage", storage, "--study-name", "t", "--output-dir", out]) == 0
    written = json.loads((study_dir(study_args) / "final" / "report.json").read_text())
    chosen = optuna.load_study(study_name="t", storage=storage).best_trial
    config = written["train_config"]
    assert config["variant_params"] == {"lora_r": chosen.params["lora_r"], "lora_alpha_ratio": 3.0, "lora_dropout": 0.0}
    assert (config["learning_rate"], config["warmup_ratio"]) == (chosen.params["learning_rate"], chosen.params["warmup_ratio"])

    # Another space under the same name is refused, by the command a user runs: exit 2, one line, nothing run.
    other = {"lora": {"lora_r": {"choices": [8, 16]}}}
    done = subprocess.run([sys.executable, "-m", "study.run", "--trials", "6", "--search", json.dumps(other), *study_args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: study 't'") and "--search: stored {" in done.stderr and "given {'lora'" in done.stderr
    assert len(optuna.load_study(study_name="t", storage=storage).trials) == 5
    # Without a search section, a rerun of the stored study keeps to the stored one.
    assert run.main(["--trials", "6", *study_args]) == 0
    sixth = optuna.load_study(study_name="t", storage=storage).trials[-1]
    assert sixth.params["lora_r"] in (2, 4) and 1e-3 <= sixth.params["learning_rate"] <= 2e-3


def test_a_bad_search_section_exits_2_and_writes_nothing(study_args, tmp_path, capsys):
    assert run_with({"lora": {"lora_r": {"choices": [8, "x"]}}}, ["--trials", "1", *study_args]) == 2
    assert capsys.readouterr().err == "error: search.lora.lora_r.choices[1]: 'x' is not an int\n"
    assert not (tmp_path / "study.db").exists()


def test_the_search_flag_takes_a_yaml_section_and_prints_it_back(capsys):
    with pytest.raises(SystemExit):
        run.main(["--search", "{lora: {lora_r: {choices: [8, 16]}}}", "--print-config"])
    assert yaml.safe_load(capsys.readouterr().out)["search"] == {"lora": {"lora_r": {"choices": [8, 16]}}}
