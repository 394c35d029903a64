"""Settings from a YAML file (--config FILE): its keys are the settings' field names, flags after it override it,
--print-config writes one that gives the same settings back, and a key or value the command refuses is one line and
exit code 2, naming the key, before anything is written."""

import dataclasses
from pathlib import Path

import optuna
import pytest
import yaml

from study import cli, records
from study._command import settings_from

# A command line of each command with settings away from their defaults, flags of every kind among them.
COMMAND_LINES = {
    "run": ["--trials", "5", "--variant", "lora,qlora", "--no-baseline", "--target-modules", "c_attn", "c_proj", "--labels",
            "a,b,c", "--max-length", "64", "--max-train-samples", "200", "--study-name", "s", "--verbose"],
    "report": ["--top", "3", "--json", "--study-name", "s"],
    "final": ["--top", "2", "--seeds", "3", "--model", "/models/gpt2"],
    "predict": ["--study-name", "s", "i feel fine", "i am scared"],
    "compare": ["--variants", "head", "lora", "--seeds", "2", "--max-length", "auto", "--batch-size", "8"],
    "bench": ["--parts", "head", "pruning", "--compare-compile", "--trials", "4", "--threads", "2"],
}


def settings_of(name: str, argv: list[str]):
    command = cli.command(name)
    return settings_from(command.settings, command.parser().parse_args(argv))


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_print_config_writes_a_file_that_gives_the_same_settings_back(name, tmp_path, capsys):
    command = cli.command(name)
    help_text = command.parser().format_help()
    assert "--config" in help_text and "--print-config" in help_text
    with pytest.raises(SystemExit) as exit_info:
        command.main([*COMMAND_LINES[name], "--print-config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "batch-size" not in printed and yaml.safe_load(printed)  # the keys are the field names
    (tmp_path / "settings.yaml").write_text(printed)
    from_file = settings_of(name, ["--config", str(tmp_path / "settings.yaml")])
    assert from_file == settings_of(name, COMMAND_LINES[name]) != command.settings()


def test_a_flag_overrides_the_file_and_the_file_overrides_the_defaults(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text("trials: 7\nbatch_size: 8\nbaseline: false\nlabels: [sadness, joy]\nmax_length: 96\n")
    settings = settings_of("run", ["--config", str(path), "--trials", "2", "--baseline"])
    assert (settings.trials, settings.batch_size, settings.baseline, settings.labels, settings.max_length) == (2, 8, True, ["sadness", "joy"], 96)
    # A flag before --config is what the file overrides.
    assert settings_of("run", ["--trials", "2", "--config", str(path)]).trials == 7


def test_a_study_runs_from_a_settings_file(study_args, tmp_path):
    flags = dict(zip(study_args[::2], study_args[1::2]))
    file = {key.removeprefix("--").replace("-", "_"): value for key, value in flags.items()}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**file, "variant": "head", "trials": 5, "batch_size": 8}))
    assert cli.main(["run", "--config", str(path), "--trials", "1"]) == 0
    study = optuna.load_study(study_name="t", storage=flags["--storage"])
    assert len(study.trials) == 1 and records.TrialStart.read(study.trials[0]).variant == "head"
    assert study.user_attrs["settings"]["batch_size"] == 8


@pytest.mark.parametrize("text,named", [
    ("trialz: 3\n", "trialz"),
    ("trials: -1\n", "--trials must be positive"),
    ("batch_size: x\n", "batch_size"),
    ("pruner: fastest\n", "pruner"),
    ("baseline: maybe\n", "baseline"),
    ("max_length: long\n", "max_length"),
    ("target_modules: c_attn\n", "target_modules"),
    ("variant: lorra\n", "--variant 'lorra'"),
])
def test_a_bad_key_or_value_in_the_file_is_exit_2_naming_it_and_writes_nothing(text, named, study_args, tmp_path, capsys):
    path = tmp_path / "study.yaml"
    path.write_text(text)
    assert cli.main(["run", *study_args, "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err
    assert not (tmp_path / "study.db").exists() and not (tmp_path / "out").exists()


def test_a_file_that_is_missing_or_not_a_mapping_is_exit_2(tmp_path, capsys):
    assert cli.main(["report", "--config", str(tmp_path / "absent.yaml")]) == 2
    assert "absent.yaml" in capsys.readouterr().err
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    assert cli.main(["report", "--config", str(tmp_path / "list.yaml")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.parametrize("name", cli.COMMANDS)
def test_every_field_of_the_settings_is_a_key_of_the_file(name, tmp_path):
    """A file may set whatever a flag can: one with every field, at values away from the defaults where it can."""
    command = cli.command(name)
    values = dataclasses.asdict(settings_of(name, COMMAND_LINES[name]))
    (tmp_path / "all.yaml").write_text(yaml.safe_dump(values))
    assert dataclasses.asdict(settings_of(name, ["--config", str(tmp_path / "all.yaml")])) == values
    assert set(values) == {f.name for f in dataclasses.fields(command.settings)}


def test_the_hyphenated_flags_are_the_ones_the_settings_had(capsys):
    text = cli.command("run").parser().format_help()
    for flag in ("--max-train-samples", "--batch-size", "--study-name", "--no-baseline", "--target-modules", "--output-dir"):
        assert flag in text
    assert "--max_train_samples" not in text


def test_the_file_is_the_documented_form():
    assert "--config FILE" in (Path(__file__).resolve().parents[1] / "docs" / "commands.md").read_text()


def test_print_config_of_a_stored_study_writes_its_definition_back_out(study_args, tmp_path, capsys):
    from study import run

    storage = study_args[study_args.index("--storage") + 1]
    search = "{lora: {lora_r: {choices: [2, 4]}}}"
    assert run.main(["--trials", "1", "--pruner", "none", "--search", search, *study_args, "--epochs", "1"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as printing:
        run.main(["--print-config", "--storage", storage, "--study-name", "t"])
    assert printing.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert (printed["trials"], printed["epochs"], printed["pruner"], printed["patience"]) == (1, 1.0, "none", 0)
    assert printed["search"] == {"lora": {"lora_r": {"choices": [2, 4]}}}
    # Passed back with a larger total, it runs the same study (the same identity: nothing refused), in the stored space.
    study_file = tmp_path / "printed.yaml"
    study_file.write_text(yaml.safe_dump({**printed, "trials": 2}))
    assert run.main(["--config", str(study_file)]) == 0
    trials = optuna.load_study(study_name="t", storage=storage).trials
    assert len(trials) == 2 and trials[1].params["lora_r"] in (2, 4)
    assert records.StudyRecord.read(optuna.load_study(study_name="t", storage=storage)).settings["epochs"] == 1.0


def test_an_abbreviated_flag_is_refused(capsys):
    """A run of a stored study takes what its flags do not give from the study: a flag must be spelled out to count."""
    from study import run

    assert run.main(["--epoch", "2", "--print-config"]) == 2  # refused before anything is printed
    assert capsys.readouterr().err.startswith("error: unrecognized arguments: --epoch")
