"""The one command: emotion-study lists its six subcommands, each also python -m study.X, their flags from the typed
settings, and --help that needs none of the training libraries."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from study import bench, cli, compare, final, predict, report, run
from study._command import settings_from
from study.settings import BenchSettings, StudySettings

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
HEAVY = ("torch", "transformers", "optuna", "datasets", "peft", "sqlalchemy", "numpy")


def test_emotion_study_lists_its_six_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("run", "final", "report", "predict", "compare", "bench"):
        assert f"\n    {name} " in text, name
    assert list(cli.COMMANDS) == ["run", "report", "final", "predict", "compare", "bench"]


@pytest.mark.parametrize("argv", [["-m", "study", "run", "--help"], ["-m", "study.run", "--help"], ["-m", "study.final", "--help"],
                                  ["-m", "study", "--help"]])
def test_help_imports_no_training_library(argv):
    module, args = argv[1], argv[2:]
    code = (f"import runpy, sys\nsys.argv = ['x', *sys.argv[1:]]\ntry:\n    runpy.run_module({module!r}, run_name='__main__')\n"
            f"except SystemExit:\n    pass\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code, *args], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "usage: " in done.stdout and done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("module", [run, final, report, predict, compare, bench])
def test_the_alias_and_the_subcommand_parse_the_same_flags(module):
    name = module.COMMAND.name
    argv = {"run": ["--trials", "3", "--no-baseline"], "final": ["--top", "2"], "report": ["--json"], "predict": ["i feel fine"],
            "compare": ["--variants", "head", "lora"], "bench": ["--parts", "head"]}[name]
    alias = settings_from(module.COMMAND.settings, module.COMMAND.parser().parse_args(argv))
    sub = cli.build_parser().parse_args([name, *argv])
    assert sub.command == name and settings_from(module.COMMAND.settings, sub[name]) == alias != module.COMMAND.settings()


def test_a_command_imports_no_other_command():
    code = ("import sys\nfrom study import cli\ntry:\n    cli.main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('study.') and m.removeprefix('study.') in cli.COMMANDS))\n")
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['study.report']"


def test_a_bad_command_or_flag_is_one_line_and_exit_2(capsys):
    for argv, named in ((["nope"], "nope"), ([], "command"), (["run", "--no-such-flag"], "--no-such-flag"),
                        (["run", "--trials", "x"], "trials"), (["run", "--pruner", "fastest"], "fastest")):
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and named in err, err


def test_settings_check_themselves_wherever_they_are_built():
    from study._errors import UsageError

    with pytest.raises(UsageError, match="--batch-size must be positive, got 0"):
        StudySettings(batch_size=0)
    with pytest.raises(UsageError, match="--variant 'lorra': unknown 'lorra'"):
        StudySettings(variant="lorra")
    with pytest.raises(UsageError, match="--trials must be positive"):
        BenchSettings(trials=-1)
    assert BenchSettings().max_train_samples == 2000 and StudySettings().max_train_samples is None  # the bench's own budget


def test_no_eval_in_the_study_package():
    import ast

    calls = [f"{path.name}:{node.lineno}" for path in (ROOT / "study").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec")]
    assert not calls, calls


# What a library prints that a user would read as trouble: bitsandbytes and its hub lookup for a CPU kernel (a LoRA run
# has no use for it), transformers' weight bars (checkpoints, the standalone export) and warnings.
NOISE = ("bitsandbytes", "kernels-community", "Writing model shards", "Loading weights", "Warning:", "warnings.warn")


def test_a_lora_study_and_its_final_print_the_projects_lines_only(study_args):
    # HF_HUB_DISABLE_PROGRESS_BARS=1 for the run: the user's own switch, which the commands leave as it is.
    for command, env in ((["study.run", "--trials", "2", "--variant", "lora", *study_args], {"HF_HUB_DISABLE_PROGRESS_BARS": "1"}),
                         (["study.final", *study_args[study_args.index("--storage"):]], {})):
        done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, env={**ENV, **env}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        output = done.stdout + done.stderr
        found = [noise for noise in NOISE if noise in output]
        assert not found, f"{found}: {output[-3000:]}"
    assert "standalone model: " in done.stdout
