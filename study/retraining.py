"""Retraining chosen parameters with several seeds and testing each once: what study.final and study.compare share.

The seeds are the study's seed and the ones after it. Each run trains on the train split, keeps its best validation
evaluation's weights and is tested once on the whole test split; the spread over seeds and the bootstrap over test
sentences and seeds (emotion_core.stats) say how far the mean can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from emotion_core.cache import ModelCache
from emotion_core.data import TokenizedSplits
from emotion_core.stats import seeds_interval
from emotion_core.training import Result, TrainConfig, train
from study.progress import RunProgress


@dataclass
class Retrained:
    config: TrainConfig  # the first seed's
    results: list[Result]  # one per seed, in seed order
    interval: dict  # emotion_core.stats.seeds_interval: test accuracy and macro F1, mean, std, 95% interval
    labels: list[int]  # the test sentences' labels, in the order of each result's test_predictions

    @property
    def seeds(self) -> list[int]:
        return [self.config.seed + k for k in range(len(self.results))]


def retrain(config: TrainConfig, data: TokenizedSplits, tokenizer, seeds: int, *, label: str, save_to: Path | None = None,
            cache: ModelCache | None = None) -> Retrained:
    """Train ``config`` with ``seeds`` seeds (config.seed, +1, ...), each tested once; the first seed's weights are saved
    to ``save_to``. Raises RuntimeError when a run diverges: there is no test accuracy to report then."""
    cache = cache or ModelCache()
    results = []
    for k in range(seeds):
        run = replace(config, seed=config.seed + k)
        progress = RunProgress(f"{label} seed {run.seed}" + (f" ({k + 1}/{seeds})" if seeds > 1 else ""))
        try:
            result = train(run, data, tokenizer, progress.on_eval, on_step=progress.on_step, on_predict=progress.on_predict, cache=cache,
                           evaluate_test=True, save_to=save_to if k == 0 else None)
        finally:
            progress.close()
        if result.test is None:
            raise RuntimeError(f"{label} diverged with seed {run.seed} ({result.diverged}); there is no test accuracy to report")
        print(f"  {label} seed {run.seed}: test accuracy {result.test['accuracy']:.4f}, macro F1 {result.test['macro_f1']:.4f} "
              f"({result.train_seconds:.0f} s)", flush=True)
        results.append(result)
    labels = [int(y) for y in data.test["label"][:]]
    interval = seeds_interval(labels, [r.test_predictions for r in results], len(data.labels))
    return Retrained(config, results, interval, labels)
