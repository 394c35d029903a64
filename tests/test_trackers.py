"""--report-to: the trials' training curves land in a real local TensorBoard log folder and a real local MLflow store."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from study import final, run
from tests.conftest import study_dir

ROOT = Path(__file__).resolve().parents[1]


def test_tensorboard_gets_each_trials_evaluation_accuracy(study_args):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert run.main(["--trials", "2", "--report-to", "tensorboard", "--variant", "lora", *study_args]) == 0
    study = optuna.load_study(study_name="t", storage=study_args[study_args.index("--storage") + 1])
    runs = study_dir(study_args) / "runs"
    for trial in study.trials:
        events = EventAccumulator(str(runs / f"trial-{trial.number}")).Reload()
        accuracy = events.Scalars("eval/accuracy")
        assert [round(e.value, 6) for e in accuracy][-1] == round(trial.value, 6)  # the last evaluation is the trial's value
        assert len(accuracy) == len(trial.intermediate_values)
        assert events.Scalars("trial/value")[0].value == pytest.approx(trial.value)


def test_mlflow_gets_one_run_per_trial_with_its_parameters_and_value(study_args, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a local store (MLflow refuses a plain file store by default)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert run.main(["--trials", "2", "--report-to", "mlflow", "--variant", "head", *study_args]) == 0
    storage = study_args[study_args.index("--storage") + 1]
    study = optuna.load_study(study_name="t", storage=storage)
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("t")
    found = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(found) == {f"t/trial-{t.number}" for t in study.trials}
    for trial in study.trials:
        logged = found[f"t/trial-{trial.number}"]
        assert logged.info.status == "FINISHED"
        assert logged.data.metrics["value"] == pytest.approx(trial.value)
        assert float(logged.data.params["trial.learning_rate"]) == pytest.approx(trial.params["learning_rate"])
        assert "eval_accuracy" in logged.data.metrics
    where = ["--storage", storage, "--study-name", "t", "--output-dir", study_args[study_args.index("--output-dir") + 1]]
    assert final.main([*where, "--report-to", "mlflow"]) == 0  # the retraining is a run of its own, under final/
    names = {r.info.run_name for r in client.search_runs([experiment.experiment_id])}
    assert any(name.startswith("t/final/trial-") for name in names)


def test_a_tracker_that_is_not_installed_is_named_with_its_extra(study_args):
    """In a process where the mlflow package cannot be found (a finder that hides it)."""
    hide = ("import sys\nclass Hide:\n    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'mlflow':\n            raise ModuleNotFoundError(name)\n"
            "sys.meta_path.insert(0, Hide())\nfrom study.run import main\nsys.exit(main(sys.argv[1:]))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", hide, "--trials", "1", "--report-to", "mlflow", *study_args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: --report-to mlflow needs the mlflow package: pip install 'emotion-study[mlflow]'"
