"""python -m study.predict "i feel wonderful today" [...]: classify sentences with a study's final model.

Loads the base model and what study.final trained (a head or an adapter, saved by its variant) from
<output-dir>/<study>/final/, and prints one line per sentence: the label, its probability, and the sentence. Without
arguments it reads sentences from stdin, one a line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from study.cli import add_settings_arguments, configure_logging, run_main
from study.errors import UsageError, logged_to
from study.settings import StudySettings


def final_dir(output_dir: str, study_name: str | None) -> Path:
    name = study_name or StudySettings().resolved_study_name()
    folder = Path(output_dir) / name / "final"
    if not (folder / "report.json").is_file():
        raise UsageError(f"no final model for study {name!r} in {folder}; run python -m study.final first (or pass --study-name/--output-dir)")
    return folder


def load_final_model(folder: Path):
    """(model, tokenizer) as study.final trained them: the base model (as its variant stores it) plus the saved weights."""
    import torch

    from emotion_core.models import load_tokenizer
    from emotion_core.training import TrainConfig

    report = json.loads((folder / "report.json").read_text())
    config = TrainConfig.from_dict(report["train_config"])
    tokenizer = load_tokenizer(report.get("tokenizer") or config.model)
    base = config.spec.load_base(config.model, tokenizer.pad_token_id, config.precision, report["labels"])
    model = config.spec.load_trained(base, folder / "model")
    if torch.cuda.is_available() and not config.spec.quantized:  # a 4-bit model is placed when it is loaded
        model = model.to("cuda")
    return model.eval(), tokenizer


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
    from emotion_core.inference import classify

    with logged_to(folder.parent):
        model, tokenizer = load_final_model(folder)
        for text, (label, probability) in zip(texts, classify(model, tokenizer, texts)):
            print(f"{label}\t{probability:.3f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
