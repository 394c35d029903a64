"""python -m study.predict "i feel wonderful today" [...]: classify sentences with a study's final model.

Loads the base model and the head or adapter that study.final saved in <output-dir>/<study>/final/, and prints one
line per sentence: the label, its probability, and the sentence. Without arguments it reads sentences from stdin,
one a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from emotion_core.data import MAX_LENGTH
from emotion_core.labels import LABELS
from emotion_core.train import TrainConfig, evaluate_logits
from emotion_core.variants import ModelLoadError, load_base, load_tokenizer
from study.cli import UsageError, add_settings_arguments, configure_logging, run_main
from study.settings import StudySettings


def final_dir(output_dir: str, study_name: str | None) -> Path:
    name = study_name or StudySettings().resolved_study_name()
    folder = Path(output_dir) / name / "final"
    if not (folder / "report.json").is_file():
        raise UsageError(f"no final model for study {name!r} in {folder}; run python -m study.final first (or pass --study-name/--output-dir)")
    return folder


def load_final_model(folder: Path):
    """(model, tokenizer) as study.final trained them: the base model (4-bit for qlora) plus the saved weights."""
    report = json.loads((folder / "report.json").read_text())
    config = TrainConfig(**report["train_config"])
    tokenizer = load_tokenizer(report.get("tokenizer") or config.model)
    model = load_base(config.model, config.variant, tokenizer.pad_token_id, config.precision)
    weights = folder / "model"
    if config.variant in ("lora", "qlora"):
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(weights))
    else:
        from safetensors.torch import load_file

        unexpected = model.load_state_dict(load_file(str(weights / "trained.safetensors")), strict=False).unexpected_keys
        if unexpected:
            raise ModelLoadError(f"{weights} holds weights that the model {config.model!r} lacks: {unexpected[:3]}")
    if torch.cuda.is_available() and config.variant != "qlora":  # a 4-bit model is placed when it is loaded
        model = model.to("cuda")
    return model.eval(), tokenizer


def predict(model, tokenizer, texts: list[str]) -> list[tuple[str, float]]:
    """(label, probability) for each text, in order."""
    from datasets import Dataset

    encoded = Dataset.from_dict({"text": texts}).map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=MAX_LENGTH), batched=True, remove_columns=["text"]
    )
    probabilities = torch.softmax(torch.from_numpy(evaluate_logits(model, encoded, tokenizer)), dim=-1)
    best = probabilities.max(dim=-1)
    return [(LABELS[int(i)], float(p)) for p, i in zip(best.values, best.indices)]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.predict",
        description="Classify sentences with the final model of a study (run python -m study.final first). "
        "Prints label, probability and sentence, tab-separated, one line per sentence.",
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="sentences to classify (default: one per line from stdin)")
    add_settings_arguments(parser, ["study_name", "output_dir", "verbose"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    folder = final_dir(args.output_dir, args.study_name)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError("no sentence to classify: pass them as arguments or one per line on stdin")
    model, tokenizer = load_final_model(folder)
    for text, (label, probability) in zip(texts, predict(model, tokenizer, texts)):
        print(f"{label}\t{probability:.3f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
