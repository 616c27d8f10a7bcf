"""Parity with the NLFT authors' loss functions, and the loss's behaviour at the edges."""

import json
import os
from pathlib import Path

import pytest
import torch

from nlft.method.loss import correct_loss, incorrect_loss, record_loss, weighted_nll
from nlft.method.weighting import WeightingConfig, token_weights

from ..conftest import SHARED

SHIPPED_CASES = Path(__file__).parents[1] / "fixtures" / "reference_loss_cases.json"


def reference_cases() -> tuple[str, list]:
    """The reference cases: $NLFT_REFERENCE_CASES, else the project's shared fixtures (all twelve), else the four
    shipped in tests/fixtures, so that parity is checked in any clone."""
    env = os.environ.get("NLFT_REFERENCE_CASES")
    shared = SHARED / "fixtures" / "reference_loss_cases.json"
    path = Path(env) if env else shared if shared.exists() else SHIPPED_CASES
    cases = json.loads(path.read_text())["cases"]
    assert cases, f"{path} holds no cases"
    return str(path), cases


SOURCE, CASES = reference_cases()


def test_the_shipped_cases_are_cases_of_the_shared_fixtures():
    shared = SHARED / "fixtures" / "reference_loss_cases.json"
    if not shared.exists():
        pytest.skip(f"needs {shared} to compare the shipped copy with")
    everything = json.loads(shared.read_text())["cases"]
    shipped = json.loads(SHIPPED_CASES.read_text())["cases"]
    assert len(shipped) == 4 and all(case in everything for case in shipped)
    assert {c["polarity"] for c in shipped} == {0, 1}


def t64(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("index", range(len(CASES)))
def test_parity_with_reference_cases(index):
    case = CASES[index]
    cfg = WeightingConfig(threshold=case["threshold"])
    p_base = t64(case["p_base"]).requires_grad_(True)
    p_std, hidden = t64(case["p_std"]), t64(case["hidden"])
    exp = case["expected"]
    if case["polarity"] == 1:
        loss = correct_loss(p_base, p_std, hidden, cfg)
        weights = token_weights(True, p_base, p_std, None, hidden, cfg)
    else:
        p_judge = t64(case["p_judge"])
        loss = incorrect_loss(p_base, p_std, p_judge, hidden, cfg)
        weights = token_weights(False, p_base, p_std, p_judge, hidden, cfg)
    loss.backward()
    assert weights.salient.tolist() == exp["salient"]
    assert weights.cluster.tolist() == exp["cluster"]
    assert loss.item() == pytest.approx(exp["loss"], rel=1e-6, abs=1e-12)
    assert p_base.grad.tolist() == pytest.approx(exp["grad_p_base"], rel=1e-6, abs=1e-9)
    assert len(exp["salient"]) == case["n"]


def test_zero_probabilities_stay_finite():
    n = 8
    zeros = torch.zeros(n, dtype=torch.float64)
    hidden = torch.randn(n, 4, dtype=torch.float64)
    for p_std in (zeros, torch.ones(n, dtype=torch.float64)):
        p_base = zeros.clone().requires_grad_(True)
        out = record_loss(False, p_base, p_std, zeros, hidden)  # p_base = p_judge = 0: the reference's 0/0
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(p_base.grad).all()
        p_base = zeros.clone().requires_grad_(True)
        out = record_loss(True, p_base, p_std, None, hidden)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(p_base.grad).all()
    # p_base = 1 on a blamed token: q = 1 - p = 0 is floored too.
    p_base = torch.ones(n, dtype=torch.float64).requires_grad_(True)
    out = record_loss(
        False, p_base, torch.full((n,), 0.1, dtype=torch.float64), torch.ones(n, dtype=torch.float64), hidden
    )
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(p_base.grad).all()


def test_weights_one_and_no_extra_terms_is_sft():
    p = torch.tensor([0.2, 0.5, 0.9, 0.01], dtype=torch.float64)
    ones = token_weights(True, p, p, None, torch.randn(4, 3, dtype=torch.float64))
    ones.weight = torch.ones(4, dtype=torch.float64)
    assert weighted_nll(p, ones).item() == pytest.approx(-torch.log(p).mean().item())


def test_record_loss_composition():
    """Every figure worked out by hand from docs/method.md sections 3, 4 and 6 (defaults, no clustering)."""
    import math

    cfg = WeightingConfig(cluster="off")
    # A correct record of two tokens: the first confirmed (p_std 0.975 > c = 0.95), the second not.
    p_base = torch.tensor([0.5, 0.25], dtype=torch.float64, requires_grad=True)
    p_std = torch.tensor([0.975, 0.475], dtype=torch.float64)
    hidden = torch.eye(2, dtype=torch.float64)
    boost = 1 + ((0.975 - 0.95) / 0.05) ** 5  # 1 + ((p_std - c) / (1 - c))^5
    other = (0.475 / 0.95) ** 0.6  # (p_std / c)^0.6
    sft = -(math.log(0.5) + math.log(0.25)) / 2
    weighted = -(boost * math.log(0.5) + other * math.log(0.25)) / 2
    c = record_loss(True, p_base, p_std, None, hidden, cfg, loss_scale=10)
    assert c.loss.item() == pytest.approx(10 * (sft + weighted), rel=1e-12)

    # A wrong record of 20 tokens, one blamed (p_judge/p_base = 4 and p_judge/p_std = 3.2, both > 1.5; 1/20 is
    # under the 6% cutoff): unlikelihood 2*sigmoid(4 - 1.5) on log(1 - p_base); the rest keep p_std^0.5. No SFT term.
    n = 20
    p_base = torch.full((n,), 0.2, dtype=torch.float64)
    p_std = torch.full((n,), 0.25, dtype=torch.float64)
    p_judge = torch.full((n,), 0.005, dtype=torch.float64)
    p_judge[0] = 0.8
    hidden = torch.eye(n, dtype=torch.float64)
    blamed = 2 / (1 + math.exp(-2.5))
    expected = -(blamed * math.log(0.8) + (n - 1) * 0.5 * math.log(0.2)) / n
    w = record_loss(False, p_base, p_std, p_judge, hidden, cfg, loss_scale=10)
    assert w.loss.item() == pytest.approx(10 * expected, rel=1e-12)
    assert w.weights.salient.tolist() == [True] + [False] * (n - 1)

    # incorrect_sft: judge adds -mean log P(y | X_judge) as the wrong record's SFT term (default loss scale 10).
    j = record_loss(False, p_base, p_std, p_judge, hidden, cfg, incorrect_sft="judge", p_judge_grad=p_judge)
    judge_sft = -(math.log(0.8) + (n - 1) * math.log(0.005)) / n
    assert j.sft.item() == pytest.approx(judge_sft, rel=1e-12)
    assert j.loss.item() == pytest.approx(10 * (judge_sft + expected), rel=1e-12)
    with pytest.raises(ValueError, match="needs the X_judge"):
        record_loss(False, p_base, p_std, p_judge, hidden, cfg, incorrect_sft="judge")


def test_blamed_fraction_cutoff_silences_the_rest():
    n = 20
    p_base = torch.full((n,), 0.2, dtype=torch.float64)
    p_std = torch.full((n,), 0.2, dtype=torch.float64)
    p_judge = torch.full((n,), 0.2, dtype=torch.float64)
    hidden = torch.eye(n, dtype=torch.float64)  # orthogonal states: with cluster=off nothing spreads anyway
    cfg = WeightingConfig(cluster="off")
    quiet = token_weights(False, p_base, p_std, p_judge, hidden, cfg)
    assert not quiet.salient.any() and torch.allclose(quiet.weight, p_std.sqrt())
    p_judge2 = p_judge.clone()
    p_judge2[:2] = 0.9  # 2/20 = 10% blamed > 6%: everything else gets weight 0
    loud = token_weights(False, p_base, p_std, p_judge2, hidden, cfg)
    assert loud.salient.sum() == 2 and (loud.weight[2:] == 0).all() and (loud.weight[:2] > 0).all()
    assert loud.unlikely[:2].all()
