"""Peak memory of one training run, for the experiment's cost table (measured in the run, not estimated).

On a GPU: the most memory torch allocated on the process's device (``torch.cuda.max_memory_allocated``, reset at the
start). On a CPU: the process's peak resident memory (Linux ``VmHWM``), reset at the start through
``/proc/self/clear_refs`` so that runs inside one process (``nlft experiment``) are each measured from their own
start; where that reset is not possible, the process's peak so far (``ru_maxrss``), said so in ``kind``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class PeakMemory:
    device: str = "cpu"
    kind: str = ""

    def start(self) -> PeakMemory:
        import torch

        if self.device.startswith("cuda") and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self.kind = "cuda max allocated"
            return self
        try:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident size
            self.kind = "process peak RSS since the run started"
        except OSError:
            self.kind = "process peak RSS (since the process started)"
        return self

    def peak_mb(self) -> float:
        import torch

        if self.kind.startswith("cuda"):
            return torch.cuda.max_memory_allocated() / 2**20
        status = Path("/proc/self/status")
        if "since the run" in self.kind and status.is_file():
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux

    def info(self) -> dict:
        return {"peak_memory_mb": round(self.peak_mb(), 1), "memory_measure": self.kind}
