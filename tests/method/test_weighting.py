"""The weighting's formulas (docs/method.md sections 3-5), against values worked out by hand for every branch,
and its settings: one list, each with a valid range that every entry point enforces."""

import math

import pytest
import torch

from nlft.method.loss import record_loss
from nlft.method.weighting import (
    LIKELIHOOD_WEIGHT_MAX,
    WeightingConfig,
    correct_weights,
    incorrect_weights,
    token_weights,
    weight_scale,
)

C = 0.95
OFF = WeightingConfig(cluster="off")


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# -- correct records (section 3) -----------------------------------------------------------------------------


def test_a_confirmed_token_weighs_one_plus_the_fifth_power_of_its_margin():
    w = correct_weights(t(0.99, 0.96, 1.0), torch.eye(3, dtype=torch.float64), OFF)
    # 1 + ((0.99 - 0.95) / 0.05)^5 = 1 + 0.8^5; 1 + 0.2^5; and a certain token gets the most, 2.
    assert w.weight.tolist() == pytest.approx([1.32768, 1.00032, 2.0])
    assert w.salient.tolist() == [True, True, True] and not w.unlikely.any()


def test_other_tokens_weigh_their_ratio_to_c_to_the_power_0_6():
    w = correct_weights(t(0.5, 0.95, 0.0), torch.eye(3, dtype=torch.float64), OFF)
    # p_std = c exactly is not salient (strictly greater is): (0.95/0.95)^0.6 = 1.
    assert w.weight.tolist() == pytest.approx([0.680374204, 1.0, 0.0])
    assert not w.salient.any()


def test_cluster_neighbours_of_a_confirmed_token_weigh_to_the_power_0_3():
    # Under the reference criterion (absorb while the cosine distance to the running centre exceeds 0.4):
    # from token 0 = [1, 0], token 1 = [0, 1] is at distance 1 (absorbed, centre -> [0.5, 0.5]) and token 2 =
    # [1, 1] is at distance 0 from that centre (the walk stops).
    hidden = t([1.0, 0.0], [0.0, 1.0], [1.0, 1.0])
    w = correct_weights(t(0.99, 0.5, 0.5), hidden, WeightingConfig())
    assert w.cluster.tolist() == [True, True, False]
    assert w.weight.tolist() == pytest.approx([1.32768, (0.5 / C) ** 0.3, (0.5 / C) ** 0.6])
    assert w.weight[1].item() == pytest.approx(0.824847989)


# -- wrong records (section 4) -------------------------------------------------------------------------------


def wrong(p_base, p_std, p_judge, cfg=OFF, n_pad: int = 0):
    """A wrong record with ``n_pad`` unremarkable tokens after the given ones (so the blamed fraction is small)."""
    pad = [0.5] * n_pad
    p_base, p_std, p_judge = t(*p_base, *pad), t(*p_std, *pad), t(*p_judge, *pad)
    n = p_base.shape[0]
    return incorrect_weights(p_base, p_std, p_judge, torch.eye(n, dtype=torch.float64), cfg)


def test_a_blamed_token_gets_the_unlikelihood_weight_two_sigmoid_r1_minus_theta():
    # p_judge/p_base = 3 and p_judge/p_std = 3 (> 1.5), p_judge 0.3 > 0.01: blamed, weight 2 sigmoid(3 - 1.5).
    w = wrong([0.1], [0.1], [0.3], n_pad=19)
    assert w.salient[0] and w.unlikely[0]
    assert w.weight[0].item() == pytest.approx(2 * sigmoid(1.5)) == pytest.approx(1.635148952)
    assert w.ratio[0].item() == pytest.approx(3.0)
    theta = wrong([0.1], [0.1], [0.3], WeightingConfig(cluster="off", threshold=1.1), n_pad=19)
    assert theta.weight[0].item() == pytest.approx(2 * sigmoid(3 - 1.1))


@pytest.mark.parametrize(
    ("p_base", "p_std", "p_judge", "why"),
    [
        (0.1, 0.25, 0.3, "p_judge/p_std = 1.2 is not above 1.5"),
        (0.25, 0.1, 0.3, "p_judge/p_base = 1.2 is not above 1.5"),
        (0.001, 0.001, 0.009, "p_judge 0.009 is under the 0.01 floor"),
        (0.2, 0.2, 0.3, "a ratio of exactly 1.5 is not above it"),
    ],
)
def test_a_token_is_blamed_only_when_both_ratios_and_the_floor_say_so(p_base, p_std, p_judge, why):
    w = wrong([p_base], [p_std], [p_judge], n_pad=19)
    assert not w.salient[0], why


def test_the_rest_of_a_mostly_right_answer_keeps_the_square_root_of_p_std():
    # One blamed token of 20 = 5% <= 6%: the others weigh p_std^0.5.
    w = wrong([0.1, 0.3], [0.1, 0.49], [0.3, 0.3], n_pad=18)
    assert w.salient.sum() == 1 and not w.cutoff_exceeded
    assert w.weight[1].item() == pytest.approx(0.7)
    assert w.weight[2:].tolist() == pytest.approx([math.sqrt(0.5)] * 18)
    assert not w.unlikely[1:].any()


def test_past_the_blamed_fraction_cutoff_the_others_weigh_nothing():
    # Two blamed of 20 = 10% > 6%: every other token weighs 0; the blamed ones keep their weight.
    w = wrong([0.1, 0.1], [0.1, 0.1], [0.3, 0.3], n_pad=18)
    assert w.salient.sum() == 2 and w.cutoff_exceeded and w.salient_fraction == pytest.approx(0.1)
    assert (w.weight[2:] == 0).all()
    assert w.weight[:2].tolist() == pytest.approx([2 * sigmoid(1.5)] * 2)
    relaxed = wrong(
        [0.1, 0.1], [0.1, 0.1], [0.3, 0.3], WeightingConfig(cluster="off", blamed_fraction_cutoff=0.1), 18
    )
    assert not relaxed.cutoff_exceeded  # 10% is not more than 10%
    assert relaxed.weight[2:].tolist() == pytest.approx([math.sqrt(0.5)] * 18)


def test_cluster_neighbours_of_a_blamed_token_weigh_nothing():
    # Token 0 is blamed. Walking right: token 1 (orthogonal, distance 1 > 0.4) is absorbed and the centre moves to
    # (e0 + e1)/2; token 2 = e0 + e1 points the same way (distance 0): the walk stops there.
    n = 20
    hidden = torch.eye(n, dtype=torch.float64)
    hidden[2] = hidden[0] + hidden[1]
    p_base, p_std, p_judge = t(*([0.5] * n)), t(*([0.5] * n)), t(*([0.5] * n))
    p_base[0] = p_std[0] = 0.1
    p_judge[0] = 0.3
    w = incorrect_weights(p_base, p_std, p_judge, hidden, WeightingConfig())
    assert w.cluster.tolist() == [True, True] + [False] * (n - 2)
    assert w.weight[1].item() == 0.0  # a neighbour: neither pushed down nor learned
    assert w.weight[0].item() == pytest.approx(2 * sigmoid(1.5))
    assert w.weight[2:].tolist() == pytest.approx([math.sqrt(0.5)] * (n - 2))


def test_zero_over_zero_is_no_evidence_and_x_over_zero_is_certain_blame():
    # Token 0: p_base = p_judge = 0, the reference's 0/0 = NaN: the ratio counts as 1, nothing is blamed.
    # Token 1: p_base = 0 < p_judge: the ratio is infinite and the unlikelihood weight its limit, 2.
    w = wrong([0.0, 0.0], [0.2, 0.1], [0.0, 0.5], n_pad=30)
    assert w.ratio[0].item() == 1.0 and not w.salient[0]
    assert math.isinf(w.ratio[1].item()) and w.salient[1]
    assert w.weight[1].item() == pytest.approx(2.0)


# -- the loss (section 6) ------------------------------------------------------------------------------------


def test_the_record_loss_is_ten_times_sft_plus_the_weighted_term():
    p_base = t(0.5, 0.25, 0.0).requires_grad_(True)
    p_std = t(0.99, 0.5, 0.5)
    out = record_loss(True, p_base, p_std, None, torch.eye(3, dtype=torch.float64), OFF)
    logs = [math.log(0.5), math.log(0.25), math.log(1e-5)]  # p_base 0 is floored at 1e-5
    weights = [1 + 0.8**5, (0.5 / C) ** 0.6, (0.5 / C) ** 0.6]
    sft = -sum(logs) / 3
    weighted = -sum(w * x for w, x in zip(weights, logs)) / 3
    assert out.sft.item() == pytest.approx(sft)
    assert out.weighted.item() == pytest.approx(weighted)
    assert out.loss.item() == pytest.approx(10 * (sft + weighted))


def test_a_blamed_token_is_pushed_down_with_log_one_minus_p():
    p_base = t(0.1, *([0.5] * 19)).requires_grad_(True)
    p_std = t(0.1, *([0.5] * 19))
    p_judge = t(0.3, *([0.5] * 19))
    out = record_loss(False, p_base, p_std, p_judge, torch.eye(20, dtype=torch.float64), OFF)
    blamed = 2 * sigmoid(1.5) * math.log(1 - 0.1)
    kept = 19 * math.sqrt(0.5) * math.log(0.5)
    assert out.sft.item() == 0.0  # no SFT term for a wrong record (Q1)
    assert out.weighted.item() == pytest.approx(-(blamed + kept) / 20)
    out.loss.backward()
    # d/dp of -10/20 * w log(1 - p) at p = 0.1 is +10/20 * w / 0.9: the blamed token's probability is pushed down.
    assert p_base.grad[0].item() == pytest.approx(10 / 20 * 2 * sigmoid(1.5) / 0.9)
    assert p_base.grad[1].item() == pytest.approx(-10 / 20 * math.sqrt(0.5) / 0.5)


def test_token_weights_dispatches_on_polarity():
    p = t(0.99, 0.5)
    h = torch.eye(2, dtype=torch.float64)
    assert (
        token_weights(True, p, p, None, h, OFF).weight.tolist() == correct_weights(p, h, OFF).weight.tolist()
    )
    with pytest.raises(ValueError, match="p_judge"):
        token_weights(False, p, p, None, h, OFF)


# -- the settings --------------------------------------------------------------------------------------------


def test_the_colour_scale_is_the_largest_weight_of_each_kind():
    assert weight_scale(WeightingConfig(), False) == LIKELIHOOD_WEIGHT_MAX == 2.0
    assert weight_scale(WeightingConfig(unlikelihood_factor=3.0), True) == 3.0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("threshold", float("nan")),
        ("threshold", float("inf")),
        ("prob_floor", 0.0),
        ("prob_floor", -1.0),
        ("unlikelihood_factor", float("inf")),
        ("other_exponent", -50.0),
        ("correct_confidence", 1.0),
        ("blamed_fraction_cutoff", 1.5),
        ("judge_floor", 1.0),
        ("cluster_radius", -0.1),
        ("cluster", "nearest"),
        ("salient_exponent", True),
        ("keep_exponent", "much"),
    ],
)
def test_every_setting_refuses_values_outside_its_range(name, value):
    with pytest.raises(ValueError, match=name):
        WeightingConfig(**{name: value})
    with pytest.raises(ValueError, match=name):
        WeightingConfig().replace({name: value})


def test_settings_know_their_range_and_numbers_from_yaml_strings():
    assert WeightingConfig(prob_floor="1e-6").prob_floor == 1e-6  # YAML 1.1 reads 1e-6 as a string
    assert WeightingConfig(threshold=2).threshold == 2.0 and isinstance(
        WeightingConfig(threshold=2).threshold, float
    )
    spec = WeightingConfig.spec("judge_floor")
    assert 0.0 in spec.valid and 0.5 in spec.valid and 1.0 not in spec.valid
    assert set(WeightingConfig.names()) == {s.name for s in WeightingConfig.specs()}
    with pytest.raises(ValueError, match="threshhold"):
        WeightingConfig().replace({"threshhold": 1.0})
