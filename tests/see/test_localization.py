"""Finding the judged step (nlft.see.localization) and the precision/recall of blamed tokens against it."""

import torch

from nlft.data.arithmetic import judge_response
from nlft.models.tiny import load_tokenizer
from nlft.see.localization import judged_quote, localize, locate_quote, locate_step, token_span
from nlft.train.probes import ProbeRecord

RESPONSE = "Natalia sold 48/2 = <<48/2=25>>25 clips in May.\nAltogether she sold 48+25 = <<48+25=73>>73 clips.\n#### 73"
REFERENCE = (
    "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
)


def test_the_arithmetic_judges_quote_is_found_in_the_response():
    verdict = judge_response(RESPONSE, REFERENCE)
    assert not verdict.correct
    span = locate_step(RESPONSE, verdict.judgment)
    assert span is not None
    # The quote is the annotation-free step; the span covers it as written, annotation included.
    assert RESPONSE[span[0] : span[1]] == "Natalia sold 48/2 = <<48/2=25>>25 clips in May."


def test_a_critiques_first_wrong_step_is_the_judged_one():
    critique = (
        "Step sentence: Natalia sold 48/2 = 25 clips in May.\nCorrectness of the step: Wrong\nExplanation: 48/2 is 24.\n\n"
        "Step sentence: Altogether she sold 48+25 = 73 clips.\nCorrectness of the step: Wrong\nExplanation: carried.\n"
    )
    assert judged_quote(critique) == "Natalia sold 48/2 = 25 clips in May."
    correct_first = critique.replace("Wrong\nExplanation: 48/2", "Correct\nExplanation: 48/2", 1)
    assert judged_quote(correct_first) == "Altogether she sold 48+25 = 73 clips."
    span = locate_step(RESPONSE, correct_first)
    assert RESPONSE[span[0] : span[1]].startswith("Altogether she sold 48+25")


def test_quotes_match_across_white_space_and_a_cut_long_step():
    text = "First   line\twith  spaces.\nSecond line that goes on and on for a while."
    assert locate_quote(text, "First line with spaces.") == (0, text.index(".") + 1)
    a, b = locate_quote(text, "Second line that goes...")
    assert text[a:b] == "Second line that goes"
    assert locate_quote(text, "Not in the text") is None
    assert locate_step(text, "No step is quoted here.") is None
    assert locate_step(text, None) is None


def test_token_span_marks_the_tokens_of_the_characters():
    tok = load_tokenizer()
    ids = tok(RESPONSE, add_special_tokens=False)["input_ids"]
    a, b = RESPONSE.index("Altogether"), RESPONSE.index("clips.\n#") + len("clips.")
    mask = token_span(tok, ids, (a, b))
    inside = tok.decode([i for i, m in zip(ids, mask.tolist()) if m])
    assert "Altogether she sold" in inside and "73 clips" in inside
    assert "May" not in inside and "####" not in inside


def _probe(id_, correct, ids, p_base, p_judge, judgment):
    n = len(ids)
    return ProbeRecord(
        id=id_, correct=correct, question="q", judgment=judgment, token_ids=ids, tokens=[""] * n,
        p_base=torch.tensor(p_base), p_std=torch.full((n,), 0.5), p_judge=None if p_judge is None else torch.tensor(p_judge),
        hidden=torch.eye(n)[:, : max(n, 2)] if n else torch.zeros(0, 2),
    )  # fmt: skip


def test_precision_recall_and_chance_count_blamed_tokens_against_the_step():
    tok = load_tokenizer()
    ids = tok(RESPONSE, add_special_tokens=False)["input_ids"]
    n = len(ids)
    judgment = judge_response(RESPONSE, REFERENCE).judgment
    step = token_span(tok, ids, locate_step(RESPONSE, judgment))
    inside = step.nonzero().squeeze(1).tolist()
    outside = (~step).nonzero().squeeze(1).tolist()
    # Record a blames two tokens in the step and one outside; record b blames one outside only.
    p_base = [0.5] * n
    pj_a = [0.5] * n
    for i in inside[:2] + outside[:1]:
        pj_a[i] = 0.9  # p_judge / p_base = 1.8 > 1.1 (and > p_judge / p_std), above the floor: blamed
    pj_b = [0.5] * n
    pj_b[outside[-1]] = 0.9
    records = [
        _probe("a", False, ids, p_base, pj_a, judgment),
        _probe("b", False, ids, p_base, pj_b, judgment),
        _probe("c", True, ids, p_base, None, None),
        _probe("d", False, ids, p_base, pj_b, "A judgment that names no step."),
    ]
    from nlft.method.weighting import WeightingConfig

    cfg = WeightingConfig(cluster="off")
    got = localize(records, {"a": RESPONSE, "b": RESPONSE, "c": RESPONSE, "d": RESPONSE}, tok, cfg)
    assert (got.records, got.wrong, got.located) == (4, 3, 2)
    assert (got.blamed_tokens, got.blamed_in_step) == (4, 2)
    assert got.precision == 2 / 4
    assert got.recall == 1 / 2
    assert got.chance == len(inside) / n
    # Comprehension: the judge prompt raised two step tokens of a (log 1.8) and none of b's.
    import math

    expected_step = (2 * math.log(1.8) / len(inside) + 0.0) / 2
    assert abs(got.log_ratio_step - expected_step) < 1e-5
    assert any("precision 50.0%" in line for line in got.lines())
