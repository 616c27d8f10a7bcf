"""Time of the phrase clustering (docs/method.md section 5) at 1024 response tokens and hidden size 4096.

    python bench/bench_cluster.py [--device cuda]

``nlft.weighting.cluster_mask`` advances every seed's walk together and looks at the device only every 16
steps; the reference walked one comparison at a time with a device sync each (Q7). Both are timed here on the
same inputs, with the results checked equal, for three kinds of hidden states:

* ``realistic``: a shared direction plus noise, as last-layer states of LLMs are (pairwise cosine ~0.6-0.9):
  with the reference ``distance`` criterion walks stop at once, with ``similarity`` they run long;
* ``random``: independent Gaussian states (cosine ~0): ``distance`` walks absorb everything — the worst case;
* ``blocks``: runs of near-identical states (phrases) separated by unrelated ones.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from nlft.weighting import cluster_mask


def reference_walk(hidden: torch.Tensor, seeds: torch.Tensor, mode: str, radius: float) -> torch.Tensor:
    """The reference's loop (one .item() per comparison), for timing and for checking results."""
    n = hidden.shape[0]
    out = set()
    for i in torch.nonzero(seeds).flatten().tolist():
        center = hidden[i]
        for step in (-1, 1):
            j = i + step
            while 0 <= j < n:
                d = 1 - F.cosine_similarity(center[None], hidden[j][None]).item()
                if not ((d > radius) if mode == "distance" else (d <= radius)):
                    break
                out.add(j)
                center = (center + hidden[j]) / 2
                j += step
        out.add(i)
    mask = torch.zeros(n, dtype=torch.bool, device=hidden.device)
    if out:
        mask[sorted(out)] = True
    return mask


def states(kind: str, n: int, d: int, device: str, g: torch.Generator) -> torch.Tensor:
    if kind == "random":
        h = torch.randn(n, d, generator=g)
    elif kind == "realistic":
        h = 3.0 * torch.randn(d, generator=g) + torch.randn(n, d, generator=g)
    elif kind == "blocks":
        h = torch.empty(n, d)
        i = 0
        while i < n:
            length = int(torch.randint(2, 12, (1,), generator=g))
            h[i : i + length] = torch.randn(d, generator=g) + 0.1 * torch.randn(
                min(length, n - i), d, generator=g
            )
            i += length
    else:
        raise ValueError(kind)
    return h.to(device)


def timeit(fn, repeat: int, device: str) -> float:
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    times = []
    for _ in range(repeat):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument(
        "--salient", type=float, nargs="+", default=[0.02, 0.1, 0.3], help="fractions of seed tokens"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--reference-limit",
        type=float,
        default=120.0,
        help="skip the reference loop where it would take longer (s)",
    )
    args = parser.parse_args()
    g = torch.Generator().manual_seed(0)
    print(f"## Clustering: {args.tokens} response tokens, hidden {args.hidden}, {args.device}, float32\n")
    print("| hidden states | mode | seeds | cluster size | nlft (ms) | reference loop (ms) | speed-up |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for kind in ("realistic", "blocks", "random"):
        hidden = states(kind, args.tokens, args.hidden, args.device, g)
        for mode in ("distance", "similarity"):
            for frac in args.salient:
                seeds = (torch.rand(args.tokens, generator=g) < frac).to(args.device)
                ours = cluster_mask(hidden, seeds, mode, 0.4)
                t_ours = timeit(
                    lambda h=hidden, s=seeds, m=mode: cluster_mask(h, s, m, 0.4), args.repeat, args.device
                )
                # Estimate the reference's cost from one run; skip it where it would be prohibitive.
                t0 = time.perf_counter()
                ref = reference_walk(hidden, seeds, mode, 0.4) if frac <= 0.1 or kind != "random" else None
                t_ref = time.perf_counter() - t0 if ref is not None else None
                if ref is not None:
                    assert torch.equal(ours.cpu(), ref.cpu()), (kind, mode, frac)
                ref_ms = f"{1000 * t_ref:.0f}" if t_ref is not None else "skipped"
                speed = f"{t_ref / t_ours:.0f}x" if t_ref is not None else "-"
                print(
                    f"| {kind} | {mode} | {int(seeds.sum())} | {int(ours.sum())} | {1000 * t_ours:.1f} | {ref_ms} | {speed} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
