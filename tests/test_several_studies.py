"""Several studies in one storage, and same-named studies in two storages: which one each command reads, where their
outputs go, and the one dashboard command that serves every study's files."""

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna

from study import final, predict, records, report, run
from tests.conftest import study_dir
from tests.test_dashboard import free_port

ROOT = Path(__file__).resolve().parents[1]


def flags(study_args, name, storage=None, variant="head"):
    args = list(study_args)
    args[args.index("--study-name") + 1] = name
    if storage is not None:
        args[args.index("--storage") + 1] = storage
    return ["--trials", "1", "--variant", variant, "--pruner", "none", *args]


def test_commands_pick_the_only_or_the_most_recent_study_and_say_which(study_args, capsys):
    storage, output = study_args[study_args.index("--storage") + 1], study_args[study_args.index("--output-dir") + 1]
    where = ["--storage", storage, "--output-dir", output]
    assert run.main(flags(study_args, "first")) == 0
    assert final.main(where) == 0  # the storage's only study
    assert json.loads((study_dir(storage, output, "first") / "final" / "report.json").read_text())["study_name"] == "first"
    capsys.readouterr()

    time.sleep(1.1)  # the second study's trial starts later
    assert run.main(flags(study_args, "second")) == 0
    capsys.readouterr()
    assert report.main(where) == 0
    assert "study 'second': the most recently run of the 2" in capsys.readouterr().out
    # predict takes the study whose final model is the newest: "first" has one, "second" none yet
    assert predict.main([*where, "i feel happy"]) == 0
    captured = capsys.readouterr()
    assert "study 'first': the one with the newest final model" in captured.err and captured.out.endswith("\ti feel happy\n")
    assert final.main(where) == 0  # the most recently run: second
    assert "study 'second': the most recently run" in capsys.readouterr().out
    assert (study_dir(storage, output, "second") / "final" / "report.json").is_file()
    assert predict.main([*where, "i feel happy"]) == 0
    assert "study 'second': the one with the newest final model" in capsys.readouterr().err
    assert final.main([*where, "--study-name", "third"]) == 2
    err = capsys.readouterr().err
    assert "no study 'third'" in err and "it holds first, second" in err


def test_same_named_studies_in_a_sqlite_file_and_a_journal_keep_their_outputs_apart(study_args, tmp_path):
    output = study_args[study_args.index("--output-dir") + 1]
    storages = [f"sqlite:///{tmp_path / 'a.db'}", str(tmp_path / "a.journal")]
    reports = {}
    for storage, variant in zip(storages, ("head", "lora")):
        assert run.main(flags(study_args, "same", storage, variant)) == 0
        assert final.main(["--storage", storage, "--study-name", "same", "--output-dir", output]) == 0
        reports[storage] = study_dir(storage, output, "same") / "final" / "report.json"
    assert reports[storages[0]].parent != reports[storages[1]].parent
    assert [json.loads(path.read_text())["variant"] for path in reports.values()] == ["head", "lora"]  # neither overwrote the other
    for storage, path in reports.items():
        stored = optuna.load_study(study_name="same", storage=storage if "://" in storage else optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(storage)))
        assert records.FinalRecord.read(stored).test_accuracy == json.loads(path.read_text())["test_accuracy"]


def test_no_storage_is_made_by_a_run_that_fails_before_it_starts(study_args, tmp_path, capsys):
    fresh = tmp_path / "fresh" / "study.db"
    args = flags(study_args, "x", f"sqlite:///{fresh}")
    args[args.index("--data") + 1] = str(tmp_path / "no-such-data")
    assert run.main(args) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not fresh.exists()


def test_the_printed_dashboard_command_serves_every_studys_artifacts(study_args, capsys):
    storage, output = study_args[study_args.index("--storage") + 1], study_args[study_args.index("--output-dir") + 1]
    for name in ("one", "two"):
        assert run.main(flags(study_args, name)) == 0
        assert final.main(["--storage", storage, "--study-name", name, "--output-dir", output]) == 0
    capsys.readouterr()
    assert report.main(["--storage", storage, "--study-name", "one", "--output-dir", output]) == 0
    command = next(line.split(": ", 1)[1] for line in capsys.readouterr().out.splitlines() if line.startswith("dashboard:"))
    assert command.startswith("optuna-dashboard ") and "--artifact-dir" in command
    port = free_port()
    dashboard = Path(sys.executable).parent / "optuna-dashboard"
    process = subprocess.Popen([str(dashboard), *command.split()[1:], "--host", "127.0.0.1", "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/meta", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and process.poll() is None, "the dashboard did not start"
                time.sleep(0.3)
        served = 0
        for summary in json.load(urllib.request.urlopen(f"{base}/api/studies"))["study_summaries"]:
            detail = json.load(urllib.request.urlopen(f"{base}/api/studies/{summary['study_id']}?after=0"))
            assert {"report.json", "confusion_matrix.png"} <= {a["filename"] for a in detail["artifacts"]}, summary["study_name"]
            for artifact in detail["artifacts"]:
                with urllib.request.urlopen(f"{base}/artifacts/{summary['study_id']}/{artifact['artifact_id']}") as response:
                    assert response.status == 200
                    served += 1
        assert served >= 8  # both studies' report, plot and model files
    finally:
        process.terminate()
        process.wait(timeout=10)
