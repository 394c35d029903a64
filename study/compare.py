"""emotion-study compare (also python -m study.compare): head vs LoRA vs QLoRA, with default or tuned parameters, and
how far to trust the table.

Trains each variant on the same model, data and budget, with N seeds each, and tests each run once on the whole test
split. Its parameters are the variant's defaults (emotion_core.variants: fixed before any result was seen), or with
``--from-study`` the best trial of each variant that the named studies hold (one study that searched several variants,
or one study per variant), on those studies' budget. Writes compare.md, compare.json and compare.png into --out: test
accuracy and macro F1 with their spread over seeds and a 95% bootstrap interval, McNemar's test for each pair of
variants on the same test sentences, and memory, trainable parameters and train time.

Each variant trains in a fresh process, so that one variant's memory does not show up in the next one's peak and
every variant starts from the same state. Memory is two numbers, because one hides the story:
- weights: the model's weights and buffers as loaded (``get_memory_footprint``); 4-bit for QLoRA;
- training peak: emotion_core.memory's figure (on a GPU ``torch.cuda.max_memory_allocated`` during training). The
  process's absolute peak RSS is in compare.json too.
"""

from __future__ import annotations

import itertools
import json
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from emotion_core import variants
from study import records
from study._command import Command, configure_logging, invocation
from study._errors import UsageError, logged_to
from study._show.text import format_mib, interval_text, params_text
from study.settings import CompareSettings, StudySettings

if TYPE_CHECKING:
    import optuna

BUDGET = ("model", "tokenizer", "data", "epochs", "batch_size", "max_train_samples", "max_eval_samples", "seed", "target_modules",
          "evaluation", "max_length", "labels")
# McNemar's p below this: the two variants' test accuracies differ beyond what the test set's luck explains.
SIGNIFICANCE = 0.05


def device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({torch.get_num_threads()} threads)"


def run_variant(settings: StudySettings, name: str, params: dict, seeds: int) -> dict:
    """Train one entry (a variant, on the model its ``params`` name where a study searched several) with ``params``
    and ``seeds`` seeds, each tested once (runs in a fresh process)."""
    import tempfile

    from emotion_core.cache import ModelCache
    from emotion_core.data import in_split_order
    from study._inputs import prepare_data
    from study._retraining import retrain, test

    configure_logging(settings.verbose)
    settings = settings.for_model(settings.model_of(params))
    tokenizer, data = prepare_data(settings)
    cache = ModelCache()
    config = settings.train_config(params, len(data.validation))
    with tempfile.TemporaryDirectory(prefix="emotion-compare-") as scratch:
        retrained = retrain(config, data, tokenizer, [settings.seed + k for k in range(seeds)], label=name, into=Path(scratch), cache=cache)
        tested = test(retrained, data, tokenizer, label=name, cache=cache)
    first = retrained.results[0]
    mean = lambda key: sum(getattr(r, key) for r in retrained.results) / seeds  # noqa: E731
    return {
        "name": name,
        "variant": params["variant"],
        "params": {k: v for k, v in params.items() if k != "variant"},
        **first.summary(),
        **tested.interval,
        "seeds": retrained.seeds,
        "train_seconds": round(mean("train_seconds"), 3),
        "test_f1_per_class": {label: round(row["f1"], 4) for label, row in tested.first["per_class"].items()},
        "n_test": tested.first["n"],
        "device": device_name(),
        # In the raw test split's order: the pairs below may be of models whose tokenizers order the split otherwise.
        "test_labels": in_split_order(tested.labels, data.test),
        "test_predictions": [in_split_order(predicted, data.test) for predicted in tested.predictions],
    }


def tuned_params(storage: str, names: list[str]) -> tuple[StudySettings, dict[str, tuple[dict, str]]]:
    """The budget the studies share, and the best completed trial of each variant they hold (the best pruned one for a
    variant with none completed), of each model where they searched several: name -> (params, source), the name
    the variant's, or the model's and the variant's ("gpt2 lora")."""
    import optuna

    from study._studies import open_stored, stored_settings

    studies = [open_stored(storage, name).study for name in names]
    budgets = {json.dumps({k: getattr(stored_settings(s), k) for k in BUDGET}, sort_keys=True) for s in studies}
    if len(budgets) > 1:
        raise UsageError(f"studies {', '.join(names)} were run on different budgets (model, data, epochs, batch, samples); "
                         "compare studies of one budget")
    best: dict[str, tuple[optuna.trial.FrozenTrial, str, str]] = {}
    # A variant's best completed trial; a variant whose trials were all pruned (a pruner compares all variants at a
    # step) by its best pruned one, whose value is its last report.
    def score(trial: optuna.trial.FrozenTrial) -> float:
        return trial.values[0] if trial.values else trial.intermediate_values.get(trial.last_step, float("-inf"))

    for states in ((optuna.trial.TrialState.COMPLETE,), (optuna.trial.TrialState.PRUNED,)):
        found: dict[str, tuple[optuna.trial.FrozenTrial, str, str]] = {}
        for study in studies:
            for trial in study.get_trials(deepcopy=False, states=states):
                variant = trial.params.get("variant", records.TrialStart.read(trial).variant)
                key = (trial.params.get("model"), variant)
                if key not in best and (key not in found or score(trial) > score(found[key][0])):
                    pruned = f" (pruned at step {trial.last_step})" if trial.state == optuna.trial.TrialState.PRUNED else ""
                    found[key] = (trial, f"study {study.study_name} trial {trial.number}{pruned}", study.study_name)
        best.update(found)
    if not best:
        raise UsageError(f"studies {', '.join(names)} hold no finished trial yet; run emotion-study run first")
    order = sorted(best, key=lambda key: (key[0] or "", variants.names().index(key[1])))
    # A trial's params hold what its study searched; the values its study's space fixed come with them.
    spaces = {study.study_name: stored_settings(study).space() for study in studies}
    return stored_settings(studies[0]), {
        (f"{model} {variant}" if model else variant): ({**spaces[best[(model, variant)][2]].fixed(variant), **best[(model, variant)][0].params,
                                                       "variant": variant}, best[(model, variant)][1])
        for model, variant in order}


def pairwise_tests(rows: list[dict]) -> list[dict]:
    from emotion_core.stats import mcnemar

    done = [r for r in rows if "error" not in r]
    tests = []
    for a, b in itertools.combinations(done, 2):
        test = mcnemar(a["test_labels"], a["test_predictions"], b["test_predictions"])
        tests.append({"first": a["name"], "second": b["name"], **test, "significant": test["p_value"] < SIGNIFICANCE})
    return tests


def markdown(summary: dict) -> str:
    budget = summary["budget"]
    seeds = summary["seeds"]
    lines = [
        "# " + " vs ".join(r["name"] for r in summary["rows"]) + (" (tuned)" if summary["from_study"] else " (default parameters)"),
        "",
        f"Model `{budget['model']}`, data `{budget['data']}`: {summary['n_train']} training sentences, {budget['epochs']:g} epoch(s), "
        f"batch {budget['batch_size']}, selected on {summary['n_validation']} validation sentences, tested once on all "
        f"{summary['n_test']} test sentences; {seeds} seed(s) per variant. Device: {summary['device']}.",
        "",
        f"Command: `{summary['command']}`",
        "",
        "| variant | parameters | from | test accuracy (mean ± std over seeds, 95% interval) | macro F1 | weights MiB | "
        "training peak MiB | trainable params | train s |",
        "|---" * 9 + "|",
    ]
    for row in summary["rows"]:
        if "error" in row:
            lines.append(f"| {row['name']} | {params_text(row['params'])} | {row['source']} | failed: {row['error']} ||||||")
            continue
        peak = format_mib(row["peak_memory_mib"])
        lines.append(
            f"| {row['name']} | {params_text(row['params'])} | {row['source']} | {interval_text(row)} | "
            f"{interval_text(row, 'test_macro_f1')} | {format_mib(row['weights_mib'])} | {peak} | {row['trainable_params']:,} | "
            f"{row['train_seconds']:.1f} |"
        )
    if summary["pairs"]:
        lines += ["", "McNemar's exact test on the same test sentences (a sentence counts as right for a variant when most of "
                  "its seeds got it right):", "", "| pair | only the first right | only the second right | p | differ at 5%? |",
                  "|---|---|---|---|---|"]
        for pair in summary["pairs"]:
            lines.append(f"| {pair['first']} vs {pair['second']} | {pair['only_first_right']} | {pair['only_second_right']} | "
                         f"{pair['p_value']:.3g} | {'yes' if pair['significant'] else 'no'} |")
    lines += [
        "",
        "Weights: `get_memory_footprint()` of the loaded model. Training peak: "
        + ("`torch.cuda.max_memory_allocated` during training, weights included."
           if summary["gpu"] else
           "the CPU tensor storage that training allocated and held at its peak (emotion_core.memory), weights not included; "
           "process peak RSS: the whole process's peak, weights, libraries and what loading left behind included."),
        "Train s: the mean over seeds, validation passes included.",
    ]
    return "\n".join(lines) + "\n"


def plan(chosen: CompareSettings) -> tuple[StudySettings, dict[str, tuple[dict, str]], Path]:
    """The budget, each variant's (params, where they come from) and the output folder."""
    settings = chosen.study()
    if chosen.from_study:
        studied, found = tuned_params(chosen.storage, chosen.from_study)
        settings = chosen.study(**{k: getattr(studied, k) for k in BUDGET})
        held = {params["variant"] for params, _ in found.values()}
        missing = [v for v in chosen.variants or [] if v not in held]
        if missing:
            raise UsageError(f"studies {', '.join(chosen.from_study)} hold no completed {', '.join(missing)} trial; they hold {', '.join(found)}")
        found = {name: entry for name, entry in found.items() if not chosen.variants or entry[0]["variant"] in chosen.variants}
        name = chosen.from_study[0]
    else:
        found = {v: ({**variants.get(v).default_params(), "variant": v}, "defaults") for v in chosen.variants or variants.DEFAULT_SEARCH}
        name = Path(settings.model.rstrip("/")).name or "model"
    from study._urls import safe_name

    return settings, found, Path(chosen.out) if chosen.out else Path(settings.output_dir) / "compare" / safe_name(name)


def run_compare(chosen: CompareSettings) -> int:
    settings, found, out = plan(chosen)
    with logged_to(out, settings.batch_size):
        return compare(settings, found, out, chosen)


def compare(settings: StudySettings, chosen: dict[str, tuple[dict, str]], out: Path, args: CompareSettings) -> int:
    import torch

    from study._inputs import prepare_data
    from study._show.plots import bar_chart
    from study._trials.workers import process_context

    _, data = prepare_data(settings.for_model(settings.searched_models()[0]))  # bad input fails here, once; cached for the workers
    summary = {
        "command": shlex.join(invocation()),
        "budget": {k: getattr(settings, k) for k in BUDGET},
        "from_study": args.from_study,
        "seeds": args.seeds,
        "n_train": len(data.train),
        "n_validation": len(data.validation),
        "n_test": len(data.test),
        "device": device_name(),
        "gpu": torch.cuda.is_available(),
        "rows": [],
    }
    del data
    # A fresh process per variant, so that its peak memory is its own and it starts from a clean state.
    context = process_context(torch.cuda.is_available())
    for variant, (params, source) in chosen.items():
        print(f"{variant}: training with {params_text({k: v for k, v in params.items() if k != 'variant'})} ({source}), "
              f"{args.seeds} seed(s) ...", flush=True)
        with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
            try:
                row = pool.submit(run_variant, settings, variant, params, args.seeds).result()
            except Exception as error:  # one broken variant should not hide the others' results
                row = {"name": variant, "variant": params["variant"], "params": params, "error": f"{type(error).__name__}: {str(error)[:200]}"}
        row["source"] = source
        summary["rows"].append(row)
        print(f"{variant}: failed: {row['error']}" if "error" in row else f"{variant}: test accuracy {interval_text(row)}", flush=True)
    summary["pairs"] = pairwise_tests(summary["rows"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "compare.md").write_text(markdown(summary))
    written = [out / "compare.json", out / "compare.md"]
    if any("error" not in r for r in summary["rows"]):
        written.append(bar_chart(summary, out / "compare.png"))
    print(markdown(summary))
    print(f"wrote {', '.join(map(str, written))}")
    return 1 if any("error" in r for r in summary["rows"]) else 0


COMMAND = Command(
    name="compare",
    description="Train several variants on the same model, data and budget, with default parameters or the best of a study, N "
    "seeds each; report test accuracy and macro F1 with their intervals, McNemar's test for each pair, memory (weights and "
    "training peak), train time and trainable parameters. Writes compare.md, compare.json and compare.png.",
    settings=CompareSettings,
    execute=run_compare,
    epilog="Default parameters: " + "; ".join(f"{name}: {params_text(v.default_params())}" for name, v in variants.REGISTRY.items()),
)
main = COMMAND.main

if __name__ == "__main__":
    sys.exit(main())
