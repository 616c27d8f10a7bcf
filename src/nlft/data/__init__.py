"""Data: the target model's own answers (sampling), judgments (judging, the arithmetic judge), datasets
(builder, pipeline) and ready-made pools from public data (sources).
"""
