"""PeakMemory measures a run's own peak: reset at its start, so memory an earlier run held is not counted."""

import sys
from pathlib import Path

import pytest

from nlft.train.costs import PeakMemory


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
def test_peak_memory_counts_what_the_run_allocated_since_its_start():
    import torch

    big = torch.ones(300 * 2**20 // 4)  # 300 MB, touched, then freed: an earlier run's peak
    del big
    memory = PeakMemory("cpu").start()
    assert memory.kind == "process peak RSS since the run started"
    before = rss_mb()
    assert memory.peak_mb() < before + 100  # the earlier 300 MB peak is forgotten
    block = torch.ones(200 * 2**20 // 4)  # this run's 200 MB
    assert memory.peak_mb() >= before + 190
    del block
    assert memory.peak_mb() >= before + 190  # a peak, not the current size
    info = memory.info()
    assert info["peak_memory_mb"] >= before + 190 and info["memory_measure"] == memory.kind
