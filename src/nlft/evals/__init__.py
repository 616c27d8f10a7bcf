"""Evaluation: accuracy of a model or of every checkpoint of a run (evaluation), and comparisons (compare)."""
