"""python -m study.compare: the seed's experiment as one command.

Trains head, LoRA and QLoRA (and, when asked, the full fine-tune) with fixed default hyperparameters on the same
model, data and budget, evaluates each once on the whole test split, and writes compare.md, compare.json and
compare.png (test accuracy and memory per variant) into --out.

Each variant trains in a fresh process, so that one variant's memory does not show up in the next one's peak and
every variant starts from the same state. Memory is two numbers, because one hides the story:
- weights: the model's weights and buffers as loaded (``get_memory_footprint``); 4-bit for QLoRA;
- training peak: on a GPU ``torch.cuda.max_memory_allocated`` during training (weights included); on the CPU the
  growth of the process's resident memory during training (activations, gradients, optimizer state, dequantization
  buffers; the weights were loaded before). The process's absolute peak RSS is in compare.json too.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from emotion_core import variants
from emotion_core.training import TrainConfig
from study.cli import add_settings_arguments, check_positive, configure_logging, run_main, settings_from_args
from study.errors import logged_to
from study.plots import bar_chart, mib
from study.progress import params_text
from study.settings import StudySettings
from study.workers import process_context

BUDGET = ("model", "tokenizer", "data", "epochs", "batch_size", "max_train_samples", "max_eval_samples", "seed", "target_modules")


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({torch.get_num_threads()} threads)"


def run_variant(settings: StudySettings, variant: str) -> dict:
    """Train one variant with its default parameters and evaluate it on the test split (runs in a fresh process)."""
    from emotion_core.training import train
    from study.inputs import prepare_data

    configure_logging(settings.verbose)
    tokenizer, data = prepare_data(settings)
    params = variants.get(variant).default_params()
    config = settings.train_config({"variant": variant, **params})
    result = train(config, data, tokenizer, evaluate_test=True)
    if result.test is None:
        raise RuntimeError(f"{variant} diverged: {result.diverged}")
    return {
        "variant": variant,
        "params": params,
        **result.summary(),
        "test_accuracy": result.test["accuracy"],
        "test_macro_f1": result.test["macro_f1"],
        "test_f1_per_class": {label: round(row["f1"], 4) for label, row in result.test["per_class"].items()},
        "n_test": result.test["n"],
        "device": device_name(),
    }


def markdown(summary: dict) -> str:
    budget = summary["budget"]
    lines = [
        "# Head vs LoRA vs QLoRA",
        "",
        f"Model `{budget['model']}`, data `{budget['data']}`: {summary['n_train']} training sentences, {budget['epochs']:g} epoch(s), "
        f"batch {budget['batch_size']}, selected on {summary['n_validation']} validation sentences, tested once on all "
        f"{summary['n_test']} test sentences. Device: {summary['device']}.",
        "",
        f"Command: `{summary['command']}`",
        "",
        "| variant | parameters | test accuracy | macro F1 | weights MiB | training peak MiB |"
        + ("" if summary["gpu"] else " process peak RSS MiB |") + " trainable params | train s |",
        "|---" * (8 if summary["gpu"] else 9) + "|",
    ]
    for row in summary["rows"]:
        if "error" in row:
            lines.append(f"| {row['variant']} | failed: {row['error']} |||||||| ")
            continue
        lines.append(
            f"| {row['variant']} | {params_text(row['params'])} | {row['test_accuracy']:.4f} | "
            f"{row['test_macro_f1']:.4f} | {mib(row['weights_mib'])} | {mib(row['peak_memory_mib'])} | "
            + ("" if summary["gpu"] else f"{mib(row['peak_rss_mib'])} | ")
            + f"{row['trainable_params']:,} | {row['train_seconds']:.1f} |"
        )
    lines += [
        "",
        "Weights: `get_memory_footprint()` of the loaded model. Training peak: "
        + ("`torch.cuda.max_memory_allocated` during training, weights included."
           if summary["gpu"] else
           "the CPU tensor storage that training allocated and held at its peak (emotion_core.memory), weights not included; "
           "process peak RSS: the whole process's peak, weights, libraries and what loading left behind included."),
        f"Train time includes the validation passes during training ({TrainConfig.evals_per_epoch} per epoch).",
    ]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m study.compare",
        description="Train head, LoRA and QLoRA with fixed default hyperparameters on the same model, data and budget; "
        "report test accuracy, macro F1, memory (weights and training peak), train time and trainable parameters. "
        "Writes compare.md, compare.json and compare.png.",
        epilog="Defaults per variant: " + "; ".join(f"{name}: {params_text(v.default_params())}" for name, v in variants.REGISTRY.items()),
    )
    add_settings_arguments(parser, [*BUDGET, "precision", "output_dir", "verbose"])
    parser.add_argument("--variants", nargs="+", choices=variants.names(), default=list(variants.DEFAULT_SEARCH),
                        help=f"what to compare, in order (default: {' '.join(variants.DEFAULT_SEARCH)})")
    parser.add_argument("--out", help="folder for compare.md/json/png (default: <output-dir>/compare/<model>)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = settings_from_args(args)
    for name in ("epochs", "batch_size", "max_train_samples", "max_eval_samples"):
        check_positive(name, getattr(settings, name))
    configure_logging(settings.verbose)
    out = Path(args.out) if args.out else Path(settings.output_dir) / "compare" / (Path(settings.model.rstrip("/")).name or "model")

    import torch

    from study.inputs import prepare_data

    _, data = prepare_data(settings)  # bad input fails here, once; the tokenized splits are cached for the workers
    summary = {
        "command": "python -m study.compare " + shlex.join(sys.argv[1:] if argv is None else argv),
        "budget": {k: getattr(settings, k) for k in BUDGET},
        "n_train": len(data.train),
        "n_validation": len(data.validation),
        "n_test": len(data.test),
        "device": device_name(),
        "gpu": torch.cuda.is_available(),
        "rows": [],
    }
    del data
    # A fresh process per variant, so that its peak memory is its own and it starts from a clean state.
    context = process_context(torch.cuda.is_available(), ["transformers", "peft", "emotion_core.training.loop", "study.inputs"])
    for variant in args.variants:
        print(f"{variant}: training with {params_text(variants.get(variant).default_params())} ...", flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                row = pool.submit(run_variant, settings, variant).result()
            except Exception as error:  # one broken variant should not hide the others' results
                row = {"variant": variant, "params": variants.get(variant).default_params(), "error": f"{type(error).__name__}: {str(error)[:200]}"}
        summary["rows"].append(row)
        if "error" in row:
            print(f"{variant}: failed: {row['error']}", flush=True)
        else:
            print(
                f"{variant}: test_acc={row['test_accuracy']:.4f} macro_f1={row['test_macro_f1']:.4f} weights={mib(row['weights_mib'])} MiB "
                f"peak={mib(row['peak_memory_mib'])} MiB trainable={row['trainable_params']:,} train={row['train_seconds']:.0f}s",
                flush=True,
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "compare.md").write_text(markdown(summary))
    written = [out / "compare.json", out / "compare.md"]
    if any("error" not in r for r in summary["rows"]):
        written.append(bar_chart(summary, out / "compare.png"))
    print(markdown(summary))
    print(f"wrote {', '.join(map(str, written))}")
    return 1 if any("error" in r for r in summary["rows"]) else 0


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.exit(run_main(main))
