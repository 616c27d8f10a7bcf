"""The linear clustering (nlft.method.clustering) against the reference's walk, one comparison at a time."""

from __future__ import annotations

import pytest
import torch

from nlft.method import clustering
from nlft.method.clustering import cluster_mask, reference_walk


def anisotropic(g, n, d, dtype, spread=2.0):
    """A shared direction plus noise: walks of every length, not just 0 or n."""
    base = torch.randn(d, generator=g, dtype=dtype)
    return base * torch.rand(n, 1, generator=g, dtype=dtype) * spread + torch.randn(
        n, d, generator=g, dtype=dtype
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("mode", ["distance", "similarity"])
@pytest.mark.parametrize("seed", range(6))
def test_equals_the_reference_walk(mode, seed, dtype):
    g = torch.Generator().manual_seed(seed)
    n, d = 90, 12
    hidden = anisotropic(g, n, d, dtype)
    seeds = torch.rand(n, generator=g) < 0.15
    assert (
        cluster_mask(hidden, seeds, mode, 0.4).tolist() == reference_walk(hidden, seeds, mode, 0.4).tolist()
    )


@pytest.mark.parametrize(
    "kind,mode",
    [("shared", "similarity"), ("random", "distance"), ("shared", "distance"), ("phrases", "similarity")],
)
def test_long_walks_across_many_blocks(kind, mode):
    # Walks far longer than a block (similar states under similarity, unrelated ones under distance), seeds dense
    # enough that walks meet and are followed as one group.
    g = torch.Generator().manual_seed(7)
    n, d = 400, 48
    if kind == "shared":
        hidden = 3.0 * torch.randn(d, generator=g) + torch.randn(n, d, generator=g)
    elif kind == "random":
        hidden = torch.randn(n, d, generator=g)
    else:
        hidden = torch.cat(
            [torch.randn(d, generator=g) + 0.1 * torch.randn(17, d, generator=g) for _ in range(n // 17 + 1)]
        )[:n]
    seeds = torch.rand(n, generator=g) < 0.1
    got = cluster_mask(hidden, seeds, mode, 0.4)
    assert got.tolist() == reference_walk(hidden, seeds, mode, 0.4).tolist()
    assert n > clustering.BLOCK


def test_decisions_too_close_to_call_are_taken_as_the_reference_takes_them(monkeypatch):
    # States built so that every cosine sits within float32 rounding of the threshold: no decision can be certified,
    # every one is replayed exactly — and the mask must still be the reference's.
    g = torch.Generator().manual_seed(3)
    n, d = 200, 64
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    hidden = torch.empty(n, d)
    for j in range(n):
        v = torch.randn(d, generator=g)
        v = v - (v @ u) * u
        v = v / v.norm()
        # cos(u, h) = 0.6 exactly in real arithmetic, so 1 - cos sits on the radius 0.4 up to rounding
        hidden[j] = 0.6 * u + 0.8 * v + 1e-7 * torch.randn(d, generator=g)
    hidden = torch.cat([u[None], hidden])[:n]
    decided = []
    real = clustering._Clusterer.decide
    monkeypatch.setattr(
        clustering._Clusterer, "decide", lambda self, c, h: decided.append(1) or real(self, c, h)
    )
    seeds = torch.zeros(n, dtype=torch.bool)
    seeds[::5] = True
    for mode in ("distance", "similarity"):
        assert (
            cluster_mask(hidden, seeds, mode, 0.4).tolist()
            == reference_walk(hidden, seeds, mode, 0.4).tolist()
        )
    assert decided, "the exact path was never taken"


def test_identical_walks_are_merged_and_still_exact():
    # Every state the same up to tiny noise: under similarity every walk covers everything, and walks that meet
    # have centres within the merge tolerance — the grouped result must be the reference's.
    g = torch.Generator().manual_seed(11)
    n, d = 400, 32
    hidden = torch.randn(d, generator=g) + 1e-3 * torch.randn(n, d, generator=g)
    seeds = torch.rand(n, generator=g) < 0.3
    assert cluster_mask(hidden, seeds, "similarity", 0.4).all()
    mixed = hidden.clone()
    mixed[::37] = torch.randn(len(range(0, n, 37)), d, generator=g) * 5
    assert (
        cluster_mask(mixed, seeds, "similarity", 0.4).tolist()
        == reference_walk(mixed, seeds, "similarity", 0.4).tolist()
    )


def test_edges_off_and_no_seeds():
    hidden = torch.randn(5, 4)
    seeds = torch.tensor([False, True, False, False, False])
    assert cluster_mask(hidden, seeds, "off").tolist() == seeds.tolist()
    assert not cluster_mask(hidden, torch.zeros(5, dtype=torch.bool)).any()
    for s in ([True, False, False, False, False], [False, False, False, False, True], [True] * 5):
        mask = torch.tensor(s)
        for mode in ("distance", "similarity"):
            assert (
                cluster_mask(hidden, mask, mode, 0.4).tolist()
                == reference_walk(hidden, mask, mode, 0.4).tolist()
            )
    one = torch.randn(1, 4)
    assert cluster_mask(one, torch.tensor([True]), "distance", 0.4).tolist() == [True]
    with pytest.raises(ValueError, match="cluster mode"):
        cluster_mask(hidden, seeds, "sideways")


def test_half_precision_states_are_clustered_in_float32():
    g = torch.Generator().manual_seed(5)
    hidden = anisotropic(g, 120, 16, torch.float32)
    seeds = torch.rand(120, generator=g) < 0.2
    half = hidden.to(torch.bfloat16)
    got = cluster_mask(half, seeds, "similarity", 0.4)
    assert got.tolist() == reference_walk(half.float(), seeds, "similarity", 0.4).tolist()
