"""python -m study.predict "i feel wonderful today" [...]: classify sentences with a study's final model.

Finds the study's final model through the storage (study.final records its files in the artifact store), fetches
what this machine lacks into <output-dir>/<storage>/<study>/final/, loads the base model plus what was trained (a head
or an adapter, as its variant saved it), and prints one line per sentence: the label, its probability, and the
sentence. Without arguments it reads sentences from stdin, one a line. Without --study-name it takes the study whose
final model is the newest.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from study.cli import add_settings_arguments, configure_logging, run_main
from study.errors import UsageError, logged_to


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.predict",
        description="Classify sentences with the final model of a study (run python -m study.final first). "
        "Prints label, probability and sentence, tab-separated, one line per sentence.",
    )
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="sentences to classify (default: one per line from stdin)")
    add_settings_arguments(parser, ["storage", "study_name", "artifact_store", "output_dir", "verbose"])
    parser.add_argument("--model", help="the study's model on this machine, if not where the study was run (it must hold the same content)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        raise UsageError("no sentence to classify: pass them as arguments or one per line on stdin")
    from emotion_core.inference import classify
    from study.cli import quiet_imported_libraries
    from study.final_model import fetch_final, load_final_model
    from study.studies import FINAL_ATTR, artifact_location, load_stored_study, stored_settings
    from study.urls import mask_url

    quiet_imported_libraries()
    study = load_stored_study(args.storage, args.study_name, say=lambda line: print(line, file=sys.stderr), final=True)
    if FINAL_ATTR not in study.user_attrs:
        raise UsageError(f"no final model for study {study.study_name!r}; run python -m study.final --storage {mask_url(args.storage)} "
                         f"--study-name {study.study_name} first")
    settings = stored_settings(study, storage=args.storage, output_dir=args.output_dir, artifact_store=args.artifact_store, model=args.model)
    settings = replace(settings, artifact_store=artifact_location(study, settings))
    with logged_to(settings.study_dir):
        model, tokenizer = load_final_model(fetch_final(study, settings), args.model)
        for text, (label, probability) in zip(texts, classify(model, tokenizer, texts)):
            print(f"{label}\t{probability:.3f}\t{text}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
