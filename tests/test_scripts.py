"""What scripts/ runs on a lent GPU imports and starts here, on the CPU (each script's dry run), so that a renamed or
removed name breaks a test instead of the next GPU session."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def test_gpu_reliability_dry_run():
    result = subprocess.run([sys.executable, "scripts/gpu_reliability.py", "--dry-run"], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "dry run: 2 of 2 trials finished" in result.stdout


def test_gpu_bench_dry_run(tiny_model, data_folder, tmp_path):
    env = {**ENV, "DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "GPU_BENCH_TOKENIZER": tiny_model,
           "GPU_BENCH_DATA": data_folder, "GPU_BENCH_WORK": str(tmp_path)}
    result = subprocess.run(["bash", "scripts/gpu_bench.sh", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "failed" not in result.stdout, result.stdout[-3000:]
    b512 = json.loads((tmp_path / "out" / "lora_b512.json").read_text())
    b32 = json.loads((tmp_path / "out" / "lora_b32.json").read_text())
    assert b512["batch_size"] == 512 and "compiled_epoch_s" in b512 and "head_cache_speedup" in b512
    assert b32["batch_size"] == 32 and b32["speedup"] > 0


def test_gpu_study_dry_run(tiny_model, data_folder, tmp_path):
    env = {**ENV, "DRY_RUN": "1", "PYTHON": sys.executable, "OUT": str(tmp_path / "out"), "GPU_STUDY_MODEL": tiny_model,
           "GPU_STUDY_DATA": data_folder, "GPU_STUDY_WORK": str(tmp_path / "work")}
    result = subprocess.run(["bash", "scripts/gpu_study.sh", "run"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scaling = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert [run["workers"] for run in scaling["runs"]] == [1, 2]
    assert all(run["exit_code"] == 0 and run["finished"] == 3 and "best_val_accuracy" in run for run in scaling["runs"]), scaling
    assert scaling["speedup"]["2"] > 0
    study = json.loads((tmp_path / "out" / "study.json").read_text())
    assert study["study"]["finished"] == 3 and study["study"]["exit_code"] == 0
    final = study["final"]
    assert final["exit_code"] == 0 and final["seeds"] == [1, 2] and 0 <= final["test_accuracy"] <= 1 and len(final["test_accuracy_ci95"]) == 2
    assert (tmp_path / "out" / "report.json").is_file()
