"""Views of the weighting: token texts that read as the response, and per-token roles, weights and counts."""

import pytest

from nlft.method.weighting import WeightingConfig, token_weights
from nlft.see.views import record_view
from nlft.train.probes import token_texts

from ..conftest import make_probe


def test_token_texts_read_as_the_decoded_response(tokenizer):
    text = "She sold 48*2 = 96 in May.\n\n#### 144 — café 日本"
    ids = tokenizer(text, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    pieces = token_texts(tokenizer, ids)
    assert len(pieces) == len(ids)
    assert "".join(pieces) == tokenizer.decode(ids)
    assert not any("Ġ" in p or "Ċ" in p or "\ufffd" in p for p in pieces)
    assert " sold" in pieces and pieces[-1] == tokenizer.eos_token
    # A character spread over byte tokens is carried by the token that completes it; the others are empty.
    raw = tokenizer.convert_ids_to_tokens(ids)
    assert len(raw) > len([p for p in pieces if p])
    assert any(p.endswith("日") or p.endswith("本") for p in pieces)


def test_record_view_is_the_weighting_with_roles_and_counts():
    cfg = WeightingConfig(cluster="similarity", cluster_radius=1.0)
    for rec in (make_probe("w", False, seed=1), make_probe("c", True, seed=2)):
        view = record_view(rec, cfg)
        expected = token_weights(rec.correct, rec.p_base, rec.p_std, rec.p_judge, rec.hidden, cfg)
        assert [t.weight for t in view.tokens] == expected.weight.tolist()
        assert view.salient == int(expected.salient.sum()) > 0
        assert view.neighbours == int((expected.cluster & ~expected.salient).sum()) > 0
        roles = {t.role for t in view.tokens}
        assert ("blamed" if not rec.correct else "confirmed") in roles and "neighbour" in roles
        for t in view.tokens:
            assert t.unlikely == (t.role == "blamed")
            assert (t.role in ("blamed", "confirmed")) == bool(expected.salient[t.index])
        assert view.mean_weight == pytest.approx(expected.weight.mean().item())
    wrong = record_view(make_probe("w", False, seed=1), cfg)
    assert wrong.blamed_fraction == wrong.salient / wrong.n
    assert wrong.cutoff_exceeded == (wrong.blamed_fraction > cfg.blamed_fraction_cutoff)
    relaxed = record_view(
        make_probe("w", False, seed=1), WeightingConfig(blamed_fraction_cutoff=0.9, cluster="off")
    )
    assert not relaxed.cutoff_exceeded
    assert any(t.weight > 0 for t in relaxed.tokens if t.role == "other")
