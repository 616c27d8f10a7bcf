"""The cost ratios of the results table."""


def test_cost_ratios_are_nlft_over_grpo_at_each_size():
    from nlft.experiment import cost_ratios

    def row(size, method, seconds, memory):
        return {
            "size": size,
            "method": method,
            "epoch": 2.0,
            "seconds_per_epoch": seconds,
            "peak_memory_mb": memory,
        }

    rows = [row(25, "nlft", 10.0, 300.0), row(25, "grpo", 40.0, 1200.0), row(50, "nlft", 20.0, 310.0),
            row(25, "sft", 8.0, 290.0), {**row(25, "nlft", 99.0, 9.0), "epoch": 1.0}]  # fmt: skip
    assert cost_ratios(rows) == [
        {"size": 25, "method": "nlft", "against": "grpo", "seconds_per_epoch": 0.25, "peak_memory_mb": 0.25}
    ]  # 50 has no grpo run; epoch 1 is not the last
