"""The paired bootstrap: exact ends where there is no spread, the normal approximation's width where it is known,
and seeds resampled as well as questions."""

import math

import pytest

from nlft.evals.bootstrap import paired_difference


def test_no_difference_and_a_sure_difference_have_exact_intervals():
    same = [[True, False, True, False]] * 3
    r = paired_difference(same, same, resamples=200)
    assert (r.difference, r.low, r.high) == (0.0, 0.0, 0.0)
    r = paired_difference([[True] * 5] * 2, [[False] * 5] * 2, resamples=200)
    assert (r.difference, r.low, r.high) == (1.0, 1.0, 1.0)
    assert (r.seeds, r.questions) == (2, 5)


def test_one_seed_gives_the_binomial_width_over_questions():
    # Half the questions right for a, none for b: d is 0/1 with p = 0.5 over 400 questions; the 95% interval is
    # about 0.5 ± 1.96 * sqrt(0.25 / 400) = 0.5 ± 0.049.
    a = [[q % 2 == 0 for q in range(400)]]
    b = [[False] * 400]
    r = paired_difference(a, b, resamples=4000)
    half = 1.96 * math.sqrt(0.25 / 400)
    assert r.difference == 0.5
    assert r.low == pytest.approx(0.5 - half, abs=0.008)
    assert r.high == pytest.approx(0.5 + half, abs=0.008)


def test_seeds_are_resampled_not_only_questions():
    # Seed 0: a is right on 20% more questions than b; seed 1: 20% fewer. Over questions alone the interval is
    # narrow around 0; drawing seeds too reaches both seeds' own differences (each drawn twice: 1 in 4).
    n = 500
    a = [[q < 100 for q in range(n)], [False] * n]
    b = [[False] * n, [q < 100 for q in range(n)]]
    r = paired_difference(a, b, resamples=4000)
    assert r.difference == 0.0
    assert r.low < -0.15 and r.high > 0.15


def test_tables_must_match():
    with pytest.raises(ValueError, match="equal seeds x questions"):
        paired_difference([[True, False]], [[True]])
