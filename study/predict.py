"""emotion-study predict "i feel wonderful today" [...] (also python -m study.predict): classify sentences with a study's
final model.

Finds the study's final model through the storage (final records its files in the artifact store), fetches what this
machine lacks into <output-dir>/<storage>/<study>/final/, loads the base model plus what was trained (a head or an
adapter, as its variant saved it), and prints one line per sentence: the label, its probability, and the sentence.
Without arguments it reads sentences from stdin, one a line. Without --study-name it takes the study whose final model
is the newest.
"""

from __future__ import annotations

import sys

from emotion_core.text import normalize_text
from study._command import Command
from study._errors import UsageError, logged_to
from study.settings import PredictSettings


def sentences(settings: PredictSettings) -> list[str]:
    """The sentences to classify, normalised as the training texts were: the arguments, else stdin's lines (LF or CRLF).
    An empty one is refused: a model given no text has nothing to classify, and its answer would be the head's bias."""
    if settings.texts:
        texts = [normalize_text(text) for text in settings.texts]
        empty = [i for i, text in enumerate(texts, start=1) if not text]
        if empty:
            raise UsageError(f"sentence {empty[0]} of the arguments is empty: there is nothing in it to classify; "
                             "pass sentences with words in them")
        return texts
    texts = [text for text in map(normalize_text, sys.stdin.read().splitlines()) if text]
    if not texts:
        raise UsageError("no sentence to classify: pass them as arguments or one per line on stdin")
    return texts


def run_predict(settings: PredictSettings) -> int:
    texts = sentences(settings)
    from emotion_core.inference import classify
    from study import records
    from study._command import quiet_imported_libraries
    from study._final_model import fetch_final, load_final_model
    from study._studies import open_stored
    from study._urls import mask_url

    quiet_imported_libraries()
    opened = open_stored(settings.storage, settings.study_name, say=lambda line: print(line, file=sys.stderr), final=True,
                         output_dir=settings.output_dir, artifact_store=settings.artifact_store, model=settings.model)
    final = records.FinalRecord.read(opened.study)
    if final is None:
        raise UsageError(f"no final model for study {opened.name!r}; run emotion-study final --storage "
                         f"{mask_url(settings.storage)} --study-name {opened.name!r} first")
    stored = opened.definition
    with logged_to(stored.study_dir):
        model, tokenizer = load_final_model(fetch_final(final, stored.study_dir / "final", stored.artifact_location), settings.model)
        for text, (label, probability) in zip(texts, classify(model, tokenizer, texts)):
            print(f"{label}\t{probability:.3f}\t{text}")
    return 0


COMMAND = Command(
    name="predict",
    description="Classify sentences with the final model of a study (run emotion-study final first). Prints label, "
    "probability and sentence, tab-separated, one line per sentence.",
    settings=PredictSettings,
    execute=run_predict,
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
