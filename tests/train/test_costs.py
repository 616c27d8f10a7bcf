"""PeakMemory measures a run's own peak: reset at its start, so memory an earlier run held is not counted."""

import mmap
import sys
from pathlib import Path

import pytest

from nlft.train.costs import PeakMemory


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def touched(mb: int) -> mmap.mmap:
    """``mb`` MB of fresh anonymous pages, every one written: resident until closed. (Freed malloc memory may stay
    resident and be reused, so a tensor allocated after another was freed need not raise the RSS at all.)"""
    block = mmap.mmap(-1, mb * 2**20)
    for offset in range(0, len(block), mmap.PAGESIZE):
        block[offset] = 1
    return block


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self (Linux)")
def test_peak_memory_counts_what_the_run_allocated_since_its_start():
    big = touched(300)  # an earlier run's peak, then freed
    big.close()
    memory = PeakMemory("cpu").start()
    assert memory.kind == "process peak RSS since the run started"
    before = rss_mb()
    assert memory.peak_mb() < before + 100  # the earlier 300 MB peak is forgotten
    block = touched(200)  # this run's 200 MB
    assert memory.peak_mb() >= before + 190
    block.close()
    assert memory.peak_mb() >= before + 190  # a peak, not the current size
    info = memory.info()
    assert info["peak_memory_mb"] >= before + 190 and info["memory_measure"] == memory.kind
