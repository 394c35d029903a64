"""A study's final model: fetched from the artifact store onto this machine, loaded as study.final trained it, and
exported as a standalone transformers model folder (what study.final writes, study.predict loads)."""

from __future__ import annotations

import json
from pathlib import Path

from study.artifacts import download, open_store
from study.studies import FINAL_ATTR

STANDALONE = "standalone"  # the folder under final/ that transformers.pipeline loads as it is


def fetch_final(study, settings) -> Path:
    """The final model's folder on this machine, fetched from the artifact store where it is missing or older."""
    final = study.user_attrs[FINAL_ATTR]
    folder = settings.study_dir / "final"
    marker = folder / ".fetched.json"  # which final model this folder holds
    if not marker.is_file() or json.loads(marker.read_text()) != final:
        store = open_store(settings.artifact_location)
        for name, artifact_id in final["files"].items():
            download(store, artifact_id, folder / name)
        marker.write_text(json.dumps(final))
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
    """(model, tokenizer) as study.final trained them: the base model (as its variant stores it) plus the saved
    weights. ``model`` replaces the stored base model's path (the same model elsewhere on this machine)."""
    import torch

    report, config, tokenizer = _stored_run(folder, model)
    base = config.spec.load_base(config.model, tokenizer.pad_token_id, config.precision, report["labels"])
    trained = config.spec.load_trained(base, folder / "model")
    if torch.cuda.is_available() and not config.spec.quantized:  # a 4-bit model is placed when it is loaded
        trained = trained.to("cuda")
    return trained.eval(), tokenizer


def export_standalone(folder: Path) -> Path:
    """``folder``/standalone: the final model as a plain transformers model (an adapter merged into its base where
    the variant allows it), its label names in its config, and its tokenizer; transformers.pipeline loads it as it is."""
    report, config, tokenizer = _stored_run(folder)
    base = config.spec.standalone_base(config.model, tokenizer.pad_token_id, report["labels"])
    out = folder / STANDALONE
    config.spec.standalone(config.spec.load_trained(base, folder / "model")).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
