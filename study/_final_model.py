"""A study's final model: fetched from the artifact store onto this machine, loaded as final trained it, and exported
as a standalone transformers model folder (what final writes, predict loads)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from study import records
from study._backends.artifacts import download, open_store

STANDALONE = "standalone"  # the folder under final/ that transformers.pipeline loads as it is
MARKER = ".fetched.json"  # which final model (its FinalRecord) a local final/ folder holds


def mark(folder: Path, final: records.FinalRecord) -> None:
    (folder / MARKER).write_text(json.dumps(dataclasses.asdict(final)))


def fetch_final(final: records.FinalRecord, folder: Path, artifact_location: str) -> Path:
    """The final model's folder on this machine, fetched from the artifact store where it is missing or another."""
    marker = folder / MARKER
    if not marker.is_file() or json.loads(marker.read_text()) != dataclasses.asdict(final):
        store = open_store(artifact_location)
        for name, artifact_id in final.files.items():
            download(store, artifact_id, folder / name)
        mark(folder, final)
    return folder


def _stored_run(folder: Path, model: str | None = None):
    """(report, TrainConfig, tokenizer) of the final model in ``folder``; ``model`` replaces the stored base model's path."""
    from emotion_core.models import load_tokenizer
    from emotion_core.training import TrainConfig

    report = json.loads((folder / "report.json").read_text())
    config = TrainConfig.from_dict(report["train_config"])
    config.model = model or config.model
    return report, config, load_tokenizer(model or report.get("tokenizer") or config.model)


def load_final_model(folder: Path, model: str | None = None):
    """(model, tokenizer) as final trained them: the base model (as its variant stores it) plus the saved weights.
    ``model`` replaces the stored base model's path (the same model elsewhere on this machine)."""
    from emotion_core.inference import load_trained

    report, config, tokenizer = _stored_run(folder, model)
    tokenizer.model_max_length = report.get("max_length", tokenizer.model_max_length)  # what a text keeps, as in training
    return load_trained(config, folder / "model", tokenizer, report["labels"]), tokenizer


def export_standalone(folder: Path) -> Path:
    """``folder``/standalone: the final model as a plain transformers model (an adapter merged into its base where
    the variant allows it), its label names in its config, and its tokenizer; transformers.pipeline loads it as it is."""
    from emotion_core import variants

    report, config, tokenizer = _stored_run(folder)
    variant = variants.get(config.variant)
    base = variant.standalone_base(config.model, tokenizer.pad_token_id, report["labels"])
    out = folder / STANDALONE
    variant.standalone(variant.load_trained(base, folder / "model")).save_pretrained(str(out))
    tokenizer.model_max_length = report.get("max_length", tokenizer.model_max_length)  # pipeline(truncation=True) cuts there
    tokenizer.save_pretrained(str(out))
    return out
