"""Retraining chosen parameters with several seeds, and testing a retrained setup once: what final and compare share.

Each run trains on the train split, selecting on validation as the study did, and saves its trained weights; testing
loads each seed's weights and predicts the whole test split once. The spread over seeds and the bootstrap over test
sentences and seeds (emotion_core.stats) say how far the mean can be trusted; two setups retrained with the same seeds
and tested on the same sentences are compared pairwise (:func:`paired_gain`). A run given a :class:`Resume` keeps
checkpoints, and a rerun continues from the newest.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

from emotion_core.cache import ModelCache
from emotion_core.data import TokenizedSplits
from emotion_core.metrics import classification_metrics
from emotion_core.stats import mcnemar, paired_difference, seeds_interval
from emotion_core.training import Result, TrainConfig, checkpoint, train
from study._backends.artifacts import FinalCheckpoints
from study._errors import describe
from study._show.progress import RunProgress
from study._trackers import Trackers


@dataclass
class Retrained:
    """One setup retrained with several seeds: each seed's result (in seed order) and the folder of its weights."""

    config: TrainConfig  # the first seed's
    results: list[Result]
    folders: list[Path]

    @property
    def seeds(self) -> list[int]:
        return [self.config.seed + k for k in range(len(self.results))]

    @property
    def val_accuracy(self) -> float:
        """The mean over seeds of the validation accuracy each retraining kept."""
        return sum(r.val_accuracy for r in self.results) / len(self.results)

    def configs(self) -> list[TrainConfig]:
        return [replace(self.config, seed=seed) for seed in self.seeds]


@dataclass
class Tested:
    """A retrained setup on the test split: each seed's predictions, the interval over seeds and sentences
    (emotion_core.stats.seeds_interval), and the first seed's per-label numbers and confusion matrix."""

    predictions: list[list[int]]
    labels: list[int]  # the test sentences' labels, in the order of the predictions
    interval: dict
    first: dict  # classification_metrics of the first seed


@dataclass
class Resume:
    """Where one retraining keeps its checkpoints, so that a rerun of the same command continues it: this machine's
    folder, and the artifact store, for a rerun on another machine."""

    local: Path
    stored: FinalCheckpoints

    def start(self, say: Callable[[str], None]) -> int:
        """Ready the newest checkpoint in ``local``, fetched from the store where the store's is newer; its step (0: none).
        A stored checkpoint that cannot be read is removed, and the run starts anew, saying why."""
        here = checkpoint.latest(self.local)
        step = checkpoint.step_of(here) if here is not None else 0
        pointer = self.stored.pointer()
        if pointer is None or pointer.step <= step:
            return step
        try:
            return self.stored.fetch(self.local) or step
        except (tarfile.TarError, EOFError, OSError) as error:
            self.stored.discard()
            say(f"its checkpoint {pointer.artifact_id} cannot be read ({describe(error)}), so it was removed: starting from step 0")
            return 0

    def done(self, steps: set[int]) -> None:
        """The model is written: its checkpoints (at any of ``steps``) go, here and in the store."""
        checkpoint.remove(self.local)
        self.stored.remove(steps)


def retrain(config: TrainConfig, data: TokenizedSplits, tokenizer, seeds: Sequence[int], *, label: str, into: Path,
            cache: ModelCache, trackers: Trackers | None = None, params: dict | None = None,
            resume: Callable[[int], Resume] | None = None) -> Retrained:
    """Train ``config`` once per seed, each run's weights saved under ``into``/seed-<seed>, each run's curves to
    ``trackers`` (named final/<label>-seed-<seed>, with ``params``). With ``resume`` (a seed's Resume) each run keeps
    checkpoints and continues from the newest one there. Raises RuntimeError when a run diverges: it has no weights
    worth testing."""
    results, folders = [], []
    for k, seed in enumerate(seeds):
        run = replace(config, seed=seed)
        progress = RunProgress(f"{label} seed {seed}" + (f" ({k + 1}/{len(seeds)})" if len(seeds) > 1 else ""), epochs=run.epochs)
        folder = into / f"seed-{seed}"
        name = f"final/{label.replace(' ', '-')}-seed-{seed}"
        where = resume(seed) if resume is not None else None
        if where is not None and (step := where.start(lambda line: print(f"  {label} seed {seed}: {line}", flush=True))):
            print(f"  {label} seed {seed}: continues from its checkpoint at step {step}", flush=True)
        try:
            with trackers.run(name) if trackers is not None else nullcontext() as tracked:
                result = train(run, data, tokenizer, progress.on_eval, on_step=progress.on_step, on_predict=progress.on_predict,
                               cache=cache, save_to=folder, callbacks=tracked.callbacks if tracked else (),
                               checkpoint_dir=where.local if where is not None else None,
                               on_checkpoint=where.stored.save if where is not None else None)
                if tracked is not None:
                    tracked.finish(params or {}, result.val_accuracy, "FINISHED")
        finally:
            progress.close()
        if result.diverged:
            raise RuntimeError(f"{label} diverged with seed {seed} ({result.diverged}); there is no model to test")
        print(f"  {label} seed {seed}: val accuracy {result.val_accuracy:.4f} ({result.train_seconds:.0f} s)", flush=True)
        results.append(result)
        folders.append(folder)
    return Retrained(replace(config, seed=seeds[0]), results, folders)


def test(retrained: Retrained, data: TokenizedSplits, tokenizer, *, label: str, cache: ModelCache) -> Tested:
    """Each seed's saved model predicts the whole test split, once."""
    from emotion_core.inference import load_trained, predict_split

    predictions = []
    for config, folder in zip(retrained.configs(), retrained.folders):
        progress = RunProgress(f"{label} seed {config.seed}")
        try:
            model = load_trained(config, folder, tokenizer, data.labels, cache)
            predictions.append(predict_split(model, data.test, tokenizer, config.resolved_eval_batch_size(), progress.on_test))
            del model
        finally:
            progress.close()
    labels = [int(y) for y in data.test["label"][:]]
    for config, predicted in zip(retrained.configs(), predictions):
        right = sum(p == y for p, y in zip(predicted, labels))
        print(f"  {label} seed {config.seed}: test accuracy {right / max(len(labels), 1):.4f}", flush=True)
    return Tested(predictions, labels, seeds_interval(labels, predictions, len(data.labels)),
                  classification_metrics(labels, predictions[0], data.labels))


def paired_gain(first: Tested, second: Tested) -> dict:
    """``first``'s test accuracy minus ``second``'s, both retrained with the same seeds and tested on the same sentences:
    in points, with a 95% paired bootstrap interval over the sentences and the seeds, and McNemar's exact test on the
    sentences (each side's answer: the majority of its seeds)."""
    import numpy as np

    labels = np.asarray(first.labels)
    difference = paired_difference(np.asarray(first.predictions) == labels, np.asarray(second.predictions) == labels)
    test = mcnemar(labels, first.predictions, second.predictions)
    return {"points": 100 * difference["difference"], "ci95_points": [100 * x for x in difference["ci95"]],
            "p_value": test["p_value"], "only_first_right": test["only_first_right"], "only_second_right": test["only_second_right"]}
