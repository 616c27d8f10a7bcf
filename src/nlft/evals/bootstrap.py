"""The paired difference of two methods' accuracy over the same test questions and seeds, with a bootstrap
interval that resamples both: the questions (the test set is a sample of the task) and the seeds (each training
run is a sample of the method). Seed ``s`` of one method is paired with seed ``s`` of the other (the same data,
the same initialisation), and every question with itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedDifference:
    difference: float  # mean over seeds and questions of (a - b): accuracy points as a fraction
    low: float  # the 95% interval's ends (percentile bootstrap)
    high: float
    seeds: int
    questions: int
    resamples: int


def paired_difference(
    a: Sequence[Sequence[bool]],
    b: Sequence[Sequence[bool]],
    *,
    resamples: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> PairedDifference:
    """``a[s][q]`` and ``b[s][q]``: whether seed ``s``'s run of each method answered question ``q`` right. Each
    resample draws seeds and questions with replacement, independently, and takes the mean of ``a - b`` over the
    drawn (seed, question) pairs."""
    import numpy as np

    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"need two equal seeds x questions tables, got {x.shape} and {y.shape}")
    d = x - y
    n_seeds, n_questions = d.shape
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    for start in range(0, resamples, 500):  # in blocks: a (500, seeds, questions) draw stays small
        k = min(500, resamples - start)
        s = rng.integers(0, n_seeds, size=(k, n_seeds))
        q = rng.integers(0, n_questions, size=(k, n_questions))
        # mean over the drawn seeds of the mean over the drawn questions of that seed's row
        rows = d[s]  # (k, seeds, questions)
        picked = np.take_along_axis(rows, q[:, None, :].repeat(n_seeds, axis=1), axis=2)
        means[start : start + k] = picked.mean(axis=(1, 2))
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return PairedDifference(float(d.mean()), float(low), float(high), n_seeds, n_questions, resamples)
