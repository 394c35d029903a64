"""study.compare: head, LoRA and QLoRA with default parameters on one budget, each in a fresh process."""

import json

import pytest

from emotion_core import variants
from study import compare
from study.cli import run_main


def test_compare_writes_the_table_json_and_chart(tiny_model, data_folder, tmp_path, capsys):
    out = tmp_path / "cmp"
    args = ["--model", tiny_model, "--data", data_folder, "--epochs", "1", "--batch-size", "16", "--max-train-samples", "96",
            "--max-eval-samples", "30", "--output-dir", str(tmp_path / "storage"), "--out", str(out)]
    assert run_main(compare.main, args) == 0
    summary = json.loads((out / "compare.json").read_text())
    rows = {row["variant"]: row for row in summary["rows"]}
    assert list(rows) == ["head", "lora", "qlora"]
    assert summary["n_train"] == 96 and summary["n_validation"] == 30 and summary["n_test"] == 60
    for variant, row in rows.items():
        assert row["params"] == variants.get(variant).default_params()
        assert 0 <= row["test_accuracy"] <= 1 and 0 <= row["test_macro_f1"] <= 1 and row["n_test"] == 60
        assert row["train_seconds"] > 0 and row["optimizer_steps"] == 6 and row["peak_rss_mib"] > 0
    # What the seed's table is about: the head trains least, LoRA and QLoRA train the same adapter,
    # and QLoRA's 4-bit weights take less memory than LoRA's full-precision ones.
    assert rows["head"]["trainable_params"] < rows["lora"]["trainable_params"] == rows["qlora"]["trainable_params"]
    assert rows["qlora"]["weights_mib"] < rows["lora"]["weights_mib"]

    table = (out / "compare.md").read_text()
    assert "| variant | parameters | test accuracy | macro F1 | weights MiB | training peak MiB |" in table
    for variant, row in rows.items():
        assert f"| {variant} | learning_rate={row['params']['learning_rate']:.3g} " in table and f"{row['test_accuracy']:.4f}" in table
    assert "python -m study.compare --model" in table
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "wrote" in capsys.readouterr().out


@pytest.mark.parametrize("flags,message", [(["--epochs", "0"], "--epochs must be positive"), (["--variants", "big"], "invalid choice")])
def test_compare_rejects_bad_input(tiny_model, data_folder, tmp_path, capsys, flags, message):
    args = ["--model", tiny_model, "--data", data_folder, "--out", str(tmp_path / "cmp"), *flags]
    if "--variants" in flags:
        with pytest.raises(SystemExit) as exit_info:
            compare.main(args)
        assert exit_info.value.code == 2
    else:
        assert run_main(compare.main, args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "cmp").exists()
