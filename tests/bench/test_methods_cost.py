"""bench/methods_cost.py: the table's ratios are each method's cost over GRPO's, from the numbers it is given."""

from . import load_bench


def load():
    return load_bench("methods_cost")


def test_each_row_gives_the_methods_time_and_memory_as_fractions_of_grpos():
    module = load()
    cost = dict(seconds_per_record_epoch=0.0, tokens_generated_per_record_epoch=0.0)
    rows = module.table(
        {
            "grpo": {**cost, "seconds_per_epoch": 400.0, "peak_memory_mb": 8000.0},
            "nlft": {**cost, "seconds_per_epoch": 100.0, "peak_memory_mb": 2000.0},
            "sft": {**cost, "seconds_per_epoch": 50.0, "peak_memory_mb": None},
        }
    ).splitlines()
    assert rows[2].endswith("| 1.00 | 1.00 |")
    assert rows[3].endswith("| 0.25 | 0.25 |")
    assert rows[4].startswith("| sft |") and rows[4].endswith("| 0.12 | - |")
