"""DoRA, added as one variant file and its registry line: it trains, a study searches it, final and predict use it."""

import json
from pathlib import Path

import optuna

from emotion_core import variants
from emotion_core.cache import build_model
from emotion_core.training import TrainConfig, train
from study import final, predict, run
from tests.conftest import study_dir

ROOT = Path(__file__).resolve().parents[1]


def test_dora_adds_magnitude_vectors_to_the_lora_layers(tiny_model, tokenizer):
    model = build_model(tiny_model, "dora", {"lora_r": 4}, tokenizer.pad_token_id)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names) and any("lora_A" in n for n in names)
    lora = build_model(tiny_model, "lora", {"lora_r": 4}, tokenizer.pad_token_id)
    assert not any("lora_magnitude_vector" in n for n, _ in lora.named_parameters())


def test_dora_learns(tiny_model, tokenizer, tokenized, tmp_path):
    config = TrainConfig(model=tiny_model, variant="dora", learning_rate=1e-2, epochs=3, batch_size=16)
    result = train(config, tokenized, tokenizer, evaluate_test=True, save_to=tmp_path / "w")
    assert result.val_accuracy > 0.4 and result.test["accuracy"] > 0.3
    assert Path(result.saved_to).name == "adapter_model.safetensors"
    assert json.loads((tmp_path / "w" / "adapter_config.json").read_text())["use_dora"] is True


def test_a_dora_study_runs_finals_and_predicts(study_args, capsys):
    assert run.main(["--trials", "2", "--variant", "dora", "--pruner", "none", *study_args]) == 0
    storage = study_args[study_args.index("--storage") + 1]
    study = optuna.load_study(study_name="t", storage=storage)
    assert {t.user_attrs["variant"] for t in study.trials} == {"dora"} and "lora_r" in study.best_params
    output = study_args[study_args.index("--output-dir") + 1]
    assert final.main(["--storage", storage, "--study-name", "t", "--output-dir", output]) == 0
    report = json.loads((study_dir(study_args) / "final" / "report.json").read_text())
    assert report["variant"] == "dora" and 0 <= report["test_accuracy"] <= 1
    capsys.readouterr()
    assert predict.main(["--storage", storage, "--study-name", "t", "--output-dir", output, "i feel happy", "i am so scared"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2] for line in lines] == ["i feel happy", "i am so scared"]


def test_dora_is_named_only_in_its_file_and_the_registry():
    """Adding a variant touches one new file and one registry line: no other code branches on its name."""
    naming = sorted(str(p.relative_to(ROOT)) for folder in ("emotion_core", "study", "scripts") for p in (ROOT / folder).rglob("*.py")
                    if "dora" in p.read_text().lower())
    assert naming == ["emotion_core/variants/__init__.py", "emotion_core/variants/dora.py"]
    assert "dora" in variants.REGISTRY and "dora" not in variants.DEFAULT_SEARCH
