"""How much an accuracy can be trusted: its spread over seeds, a bootstrap interval over test sentences and seeds,
McNemar's test of whether two models differ on the same sentences, and the interval of their difference that belongs to
that test."""

from __future__ import annotations

import numpy as np

RESAMPLES = 2000


def _macro_f1(confusion: np.ndarray) -> np.ndarray:
    """Macro F1 of confusion matrices (..., labels, labels), rows true; a label never true nor predicted scores 0, as
    scikit-learn's f1_score(average="macro", zero_division=0) scores it."""
    true_positive = np.diagonal(confusion, axis1=-2, axis2=-1)
    denominator = confusion.sum(axis=-1) + confusion.sum(axis=-2)
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros(true_positive.shape), where=denominator > 0)
    return f1.mean(axis=-1)


def _confusions(labels: np.ndarray, predictions: np.ndarray, rows: np.ndarray, n_labels: int) -> np.ndarray:
    """Confusion matrices (resamples, seeds, labels, labels) of each seed's predictions on each resample of rows."""
    seeds = predictions.shape[0]
    cell = labels[rows][:, None, :] * n_labels + predictions[:, rows].transpose(1, 0, 2)  # (resamples, seeds, n)
    offsets = (np.arange(cell.shape[0] * seeds) * n_labels * n_labels).reshape(cell.shape[0], seeds, 1)
    counts = np.bincount((cell + offsets).ravel(), minlength=cell.shape[0] * seeds * n_labels * n_labels)
    return counts.reshape(cell.shape[0], seeds, n_labels, n_labels)


def seeds_interval(labels, predictions, n_labels: int, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """Mean, standard deviation over seeds and 95% bootstrap interval of test accuracy and macro F1.

    ``predictions`` holds one row per training seed, one column per test sentence. Each resample draws the test
    sentences with replacement and the seeds with replacement, so the interval holds both the test set's sampling noise
    and the seeds' (with one seed, the test set's alone). scipy.stats.bootstrap resamples one axis of paired samples,
    not two at once, so this is the two-level percentile bootstrap written out.
    """
    labels = np.asarray(labels)
    predictions = np.atleast_2d(np.asarray(predictions))
    seeds, n = predictions.shape
    rng = np.random.default_rng(seed)
    confusion = _confusions(labels, predictions, np.arange(n)[None, :], n_labels)[0]  # (seeds, labels, labels)
    accuracy = np.trace(confusion, axis1=-2, axis2=-1) / n
    f1 = _macro_f1(confusion)
    rows = rng.integers(n, size=(resamples, n))
    picked = rng.integers(seeds, size=(resamples, seeds))
    resampled = _confusions(labels, predictions, rows, n_labels)  # (resamples, seeds, labels, labels)
    take = np.take_along_axis
    boot_accuracy = take(np.trace(resampled, axis1=-2, axis2=-1) / n, picked, axis=1).mean(axis=1)
    boot_f1 = take(_macro_f1(resampled), picked, axis=1).mean(axis=1)

    def summary(values: np.ndarray, boot: np.ndarray) -> tuple[float, float, list[float]]:
        spread = float(values.std(ddof=1)) if seeds > 1 else 0.0
        return float(values.mean()), spread, [float(q) for q in np.quantile(boot, [0.025, 0.975])]

    (acc, acc_std, acc_ci), (mf1, f1_std, f1_ci) = summary(accuracy, boot_accuracy), summary(f1, boot_f1)
    return {
        "test_accuracy": acc, "test_accuracy_std": acc_std, "test_accuracy_ci95": acc_ci,
        "test_macro_f1": mf1, "test_macro_f1_std": f1_std, "test_macro_f1_ci95": f1_ci,
        "test_accuracy_per_seed": [float(a) for a in accuracy],
    }


def majority_correct(labels, predictions) -> np.ndarray:
    """Per test sentence: whether most seeds got it right (a tie counts as wrong)."""
    correct = np.atleast_2d(np.asarray(predictions)) == np.asarray(labels)[None, :]
    return correct.mean(axis=0) > 0.5


def mcnemar(labels, first, second) -> dict:
    """McNemar's exact test on the same test sentences, each model's answer by the majority of its seeds (see
    :func:`mcnemar_correct`)."""
    return mcnemar_correct(majority_correct(labels, first), majority_correct(labels, second))


def mcnemar_correct(first, second) -> dict:
    """McNemar's exact test of two models on the same sentences, from whether each got each sentence right: of the
    sentences exactly one of them got right, is either side's share different from one half?"""
    test = mcnemar_against(np.asarray(first, dtype=bool)[None, :], second)
    return {key: value[0].item() for key, value in test.items()}


def mcnemar_against(firsts, second) -> dict[str, np.ndarray]:
    """McNemar's exact test of each row of ``firsts`` (models by sentences, bools: got it right) against ``second``
    on the same sentences, all at once. The exact p is the binomial test's of the discordant sentences against one half:
    as that distribution is symmetric, twice its smaller tail (at most 1), as scipy.stats.binomtest computes it."""
    from scipy.stats import binom

    a, b = np.asarray(firsts, dtype=bool), np.asarray(second, dtype=bool)[None, :]
    only_first, only_second = np.sum(a & ~b, axis=1), np.sum(~a & b, axis=1)
    p_value = np.minimum(1.0, 2 * binom.cdf(np.minimum(only_first, only_second), only_first + only_second, 0.5))
    return {"only_first_right": only_first, "only_second_right": only_second, "p_value": p_value}


def paired_difference(first, second, resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """The accuracy of ``first`` minus that of ``second`` on the same sentences (each a bool per sentence: got it
    right), with a 95% percentile bootstrap interval that resamples the sentences, both models' answers together.

    Each may also be one row per training seed (seeds, sentences), row k of both trained with the same seed: each
    resample then draws the sentences and the seeds (row k of both together), as ``seeds_interval`` does, and the
    difference is that of the means over seeds."""
    a, b = np.atleast_2d(np.asarray(first, dtype=float)), np.atleast_2d(np.asarray(second, dtype=float))
    seeds, n = a.shape
    rng = np.random.default_rng(seed)
    difference = a - b
    if not n:
        return {"difference": 0.0, "ci95": [0.0, 0.0]}
    rows = rng.integers(n, size=(resamples, n))
    boot = np.stack([row[rows].mean(axis=1) for row in difference], axis=1)  # (resamples, seeds)
    if seeds > 1:
        boot = np.take_along_axis(boot, rng.integers(seeds, size=(resamples, seeds)), axis=1)
    low, high = (float(q) for q in np.quantile(boot.mean(axis=1), [0.025, 0.975]))
    return {"difference": float(difference.mean()), "ci95": [low, high]}


def mcnemar_difference(first, second, confidence: float = 0.95) -> dict:
    """The accuracy of ``first`` minus that of ``second`` on the same sentences (each a bool per sentence: got it
    right), McNemar's exact p, and the interval that belongs to that test: the exact (Clopper-Pearson) interval of the
    share of the discordant sentences that ``first`` got right, as a difference in accuracy given their number.

    McNemar's exact test is the binomial test of that share against one half, and the interval is its inversion, so
    the interval leaves out 0 exactly when p < 1 - ``confidence``: a verdict taken from either never contradicts the
    other (a bootstrap interval beside McNemar's p can).
    """
    from scipy.stats import binomtest

    test = mcnemar_correct(first, second)
    only_first, only_second = test["only_first_right"], test["only_second_right"]
    n, discordant = len(first), only_first + only_second
    if not discordant:  # the same sentences right: no difference, and nothing that could show one
        return {**test, "difference": 0.0, "ci95": [0.0, 0.0]}
    share = binomtest(only_first, discordant, 0.5).proportion_ci(confidence_level=confidence, method="exact")
    scale = discordant / n  # a share s of the discordant sentences is a difference of scale * (2s - 1) in accuracy
    return {**test, "difference": (only_first - only_second) / n,
            "ci95": [scale * (2 * float(share.low) - 1), scale * (2 * float(share.high) - 1)]}
