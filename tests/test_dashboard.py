"""The real optuna-dashboard server, on a study that study.run and study.final made: what its HTTP API serves."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import study_dir


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def dashboard_command() -> str:
    beside_python = Path(sys.executable).parent / "optuna-dashboard"
    return str(beside_python) if beside_python.exists() else shutil.which("optuna-dashboard")


@pytest.fixture
def dashboard(finished_study):
    """Base URL of a dashboard serving finished_study with its artifact store; stopped afterwards."""
    port = free_port()
    import optuna

    artifacts = optuna.load_study(study_name=finished_study["name"], storage=finished_study["storage"]).user_attrs["artifact_store"]
    process = subprocess.Popen(
        [dashboard_command(), finished_study["storage"], "--host", "127.0.0.1", "--port", str(port), "--artifact-dir", str(artifacts)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"optuna-dashboard exited with {process.returncode}: {process.stderr.read().decode()[-2000:]}")
            try:
                urllib.request.urlopen(f"{base}/api/meta", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("optuna-dashboard did not answer within 60 s")
                time.sleep(0.3)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stderr.close()


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_dashboard_shows_trials_attrs_note_and_artifacts(dashboard, finished_study):
    summaries = get_json(f"{dashboard}/api/studies")["study_summaries"]
    study = next(s for s in summaries if s["study_name"] == finished_study["name"])
    assert study["directions"] == ["maximize"]
    detail = get_json(f"{dashboard}/api/studies/{study['study_id']}?after=0")

    assert [t["state"] for t in detail["trials"]] == ["Complete"] * 3
    assert detail["objective_names"] == ["val_accuracy"]
    for trial, variant in zip(detail["trials"], ["head", "lora", "qlora"]):
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert attrs["variant"] == variant
        for key in ("peak_memory_mib", "weights_mib", "train_seconds", "train_samples_per_second", "trainable_params"):
            assert float(attrs[key]) >= 0, key
        assert len(trial["intermediate_values"]) == 6  # three times per epoch, two epochs

    report = json.loads((study_dir(finished_study["storage"], finished_study["output_dir"], "done") / "final" / "report.json").read_text())
    study_attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    assert json.loads(study_attrs["final"])["test_accuracy"] == pytest.approx(report["test_accuracy"])  # the FinalRecord
    note = detail["note"]["body"]
    assert f"| test accuracy | {report['test_accuracy']:.4f} (95% interval " in note
    assert "| sadness |" in note and "Confusion matrix" in note

    artifacts = {a["filename"]: a for a in detail["artifacts"]}
    weights = Path(report["weights"])
    assert {"confusion_matrix.png", "report.json", weights.name} <= set(artifacts)
    assert artifacts["confusion_matrix.png"]["mimetype"] == "image/png"
    image_path = f"/artifacts/{study['study_id']}/{artifacts['confusion_matrix.png']['artifact_id']}"
    assert f"]({image_path})" in note  # the note shows the image the dashboard serves
    with urllib.request.urlopen(f"{dashboard}{image_path}") as image:
        assert image.read(8) == b"\x89PNG\r\n\x1a\n"
    with urllib.request.urlopen(f"{dashboard}/artifacts/{study['study_id']}/{artifacts[weights.name]['artifact_id']}") as served:
        assert served.read() == weights.read_bytes()
