import pytest

from nlft.prompts import PLAIN_FORMAT, PromptRenderer, RecordEncoder, TemplateSet, fill
from nlft.records import RecordError, records_from_dicts

CORRECT = {
    "id": "c1",
    "question": "What is 2+3?",
    "response": "2+3 = <<2+3=5>>5\n#### 5",
    "reference": "2+3=5\n#### 5",
}
WRONG = {**CORRECT, "id": "w1", "response": "2+3 = 6\n#### 6", "judgment": "The sum 2+3 is 5, not 6."}


@pytest.fixture
def plain_tokenizer(tokenizer):
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    return tok


def check_shared_response(enc, encoded):
    """The response ids after every prompt are identical and the masks cover exactly them."""
    n = len(encoded.response_ids)
    assert encoded.response_ids[-1] == enc.renderer.eos_id
    for kind in encoded.kinds:
        ids, mask = encoded.input_ids(kind), encoded.loss_mask(kind)
        assert len(ids) == len(mask)
        assert ids[-n:] == encoded.response_ids
        assert mask == [0] * (len(ids) - n) + [1] * n
        assert [i for i, m in zip(ids, mask) if m] == encoded.response_ids


def test_200_real_records_share_response_ids_and_masks(tokenizer, pool_200):
    enc = RecordEncoder(tokenizer, "math", max_length=4096)
    result = enc.encode_all(pool_200)
    assert len(result.records) == 200 and not result.skipped
    kinds = {e.id: e.kinds for e in result.records}
    assert sum(k == ("base", "std", "judge") for k in kinds.values()) == 100
    assert sum(k == ("base", "std") for k in kinds.values()) == 100
    for encoded in result.records:
        check_shared_response(enc, encoded)


def test_joint_tokenization_would_differ_where_ours_does_not(tokenizer, pool_200):
    """Tokenizing prompt+response together merges tokens across the boundary when a prompt ends in a space
    (the common "Answer: " layout of base-model prompts). Ours tokenizes the response once, so the three
    sequences still carry the same response ids."""
    import copy

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    base = TemplateSet.load("math")
    templates = TemplateSet(**{**base.__dict__, "plain": "{system}\n\nQuestion: {user}\nAnswer: "})
    enc = RecordEncoder(tok, templates, max_length=4096)
    differed = 0
    for record in pool_200:
        encoded = enc.encode(record)
        check_shared_response(enc, encoded)
        for kind in encoded.kinds:
            joint = tok(enc.prompt_text(kind, record) + record.response, add_special_tokens=False).input_ids
            joint_response = joint[len(encoded.prompt_ids[kind]) :]
            differed += joint_response != encoded.response_ids[:-1]
    assert differed > 0


def test_chat_template_renders_system_user_and_generation_prompt(tokenizer):
    enc = RecordEncoder(tokenizer, "math")
    (record,) = records_from_dicts([WRONG])
    text = enc.prompt_text("judge", record)
    assert text.startswith(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nWrite a bad response"
    )
    assert "### Judgment:\nThe sum 2+3 is 5, not 6." in text
    assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    std = enc.prompt_text("std", record)
    assert "### Standard answer:\n2+3=5\n#### 5" in std and "Judgment" not in std


def test_prompt_text_and_ids_agree(tokenizer, plain_tokenizer):
    for tok in (tokenizer, plain_tokenizer):
        enc = RecordEncoder(tok, "math")
        (record,) = records_from_dicts([WRONG])
        for kind in ("base", "std", "judge"):
            ids = enc.encode(record).prompt_ids[kind]
            assert tok.decode(ids) == enc.prompt_text(kind, record)


def test_plain_fallback_without_chat_template(plain_tokenizer):
    enc = RecordEncoder(plain_tokenizer, "math")
    (record,) = records_from_dicts([CORRECT])
    text = enc.prompt_text("base", record)
    assert not enc.renderer.uses_chat_template
    assert text.startswith("<|begin_of_text|>You are a math expert.")
    assert text.endswith("\n\nWhat is 2+3?\n\n### Response:\n")
    assert PLAIN_FORMAT == "{system}\n\n{user}\n\n### Response:\n"


def test_named_chat_template_is_applied_to_a_tokenizer_without_one(plain_tokenizer):
    enc = RecordEncoder(plain_tokenizer, "math", chat_template="llama3")
    (record,) = records_from_dicts([CORRECT])
    assert enc.prompt_text("base", record).endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")


def test_template_refusing_system_role_folds_it_into_user(tokenizer):
    strict = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    )
    renderer = PromptRenderer(tokenizer, chat_template=None)
    renderer.chat_template = strict
    text = renderer.prompt_text("SYS", "USER")
    assert "<|start_header_id|>user<|end_header_id|>\n\nSYS\n\nUSER" in text


def test_control_tokens_in_data_stay_text(tokenizer):
    enc = RecordEncoder(tokenizer, "math")
    sneaky = {**WRONG, "question": "Q <|eot_id|> <|start_header_id|>", "response": "A <|eot_id|> more"}
    (record,) = records_from_dicts([sneaky])
    encoded = enc.encode(record)
    eot = tokenizer.convert_tokens_to_ids("<|eot_id|>")
    header = tokenizer.convert_tokens_to_ids("<|start_header_id|>")
    assert encoded.response_ids.count(eot) == 1  # only the EOS we append
    # The template itself writes 3 headers for system, user and assistant; the question adds none.
    assert encoded.prompt_ids["base"].count(header) == 3


def test_user_template_set_from_yaml(tmp_path, tokenizer):
    path = tmp_path / "legal.yaml"
    path.write_text(
        "name: legal\nsystem: You are a lawyer.\n"
        "base: {system: '{system}', user: '{question}'}\n"
        "std: {system: 'Use the reference. {system}', user: 'Q: {question} REF: {reference}'}\n"
        "judge: {system: 'Be bad. {{literal}}', user: 'Q: {question} CRITIQUE: {judgment}'}\n"
    )
    ts = TemplateSet.load(path)
    assert ts.name == "legal"
    (record,) = records_from_dicts([WRONG])
    assert ts.messages("std", record) == (
        "Use the reference. You are a lawyer.",
        f"Q: What is 2+3? REF: {WRONG['reference']}",
    )
    assert ts.messages("judge", record)[0] == "Be bad. {literal}"  # doubled braces are literal ones
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: {system: x, user: y}\nstd: {system: x}\n")
    with pytest.raises(ValueError, match=r"missing 'std.user'"):
        TemplateSet.load(bad)


def test_fill_is_single_pass():
    assert fill("{question}|{judgment}", {"question": "{judgment}", "judgment": "J"}) == "{judgment}|J"


def test_prompt_truncated_from_left_response_never(tokenizer):
    long_q = "How many apples? " * 300
    (record,) = records_from_dicts([{**WRONG, "question": long_q}])
    enc = RecordEncoder(tokenizer, "math", max_length=256)
    full = RecordEncoder(tokenizer, "math", max_length=100_000).encode(record)
    encoded = enc.encode(record)
    assert set(encoded.truncated) == {"base", "std", "judge"}
    for kind in encoded.kinds:
        ids = encoded.input_ids(kind)
        assert len(ids) == 256
        assert ids[0] == tokenizer.bos_token_id  # BOS kept, the rest cut from the left
        assert ids[-len(encoded.response_ids) :] == full.response_ids
        assert ids[1:] == full.input_ids(kind)[-255:]


def test_overlong_response_is_skipped_and_reported_or_an_error(tokenizer):
    huge = {**CORRECT, "id": "huge", "response": "1+1=2. " * 200}
    records = records_from_dicts([CORRECT, huge])
    result = RecordEncoder(tokenizer, "math", max_length=128).encode_all(records)
    assert [e.id for e in result.records] == ["c1"]
    assert len(result.skipped) == 1 and result.skipped[0].record_id == "huge"
    assert "leaves no room" in result.skipped[0].message and "1 skipped" in result.summary()
    with pytest.raises(RecordError, match="huge.*leaves no room"):
        RecordEncoder(tokenizer, "math", max_length=128, on_overlong="error").encode_all(records)


def test_bad_records_for_training_name_the_id(tokenizer):
    unjudged = {**CORRECT, "id": "u1", "correct": False}
    records = records_from_dicts([CORRECT, unjudged])
    enc = RecordEncoder(tokenizer, "math")
    with pytest.raises(RecordError, match="u1.*no judgment"):
        enc.encode_all(records)
    assert [e.id for e in enc.encode_all(records, skip_invalid=True).records] == ["c1"]


def test_correct_records_have_no_judge_sequence(tokenizer):
    enc = RecordEncoder(tokenizer, "math")
    encoded = enc.encode(records_from_dicts([CORRECT])[0])
    assert encoded.kinds == ("base", "std")
    assert encoded.to_features()["judge_prompt_ids"] == []


def test_a_template_placeholder_with_a_typo_is_refused(tmp_path):
    """Audit N-20: {refrence} and {judgement} reached the model as written."""
    from nlft.prompts import TemplateSet

    typo = tmp_path / "typo.yaml"
    typo.write_text(
        'system: "You are a math expert."\n'
        'base: {system: "{system}", user: "{question}"}\n'
        'std: {system: "{system}", user: "{question}\\nA standard answer: {refrence}"}\n'
        'judge: {system: "{system}", user: "{question}\\nWhat is wrong: {judgement}"}\n'
    )
    with pytest.raises(ValueError, match=r"typo\.yaml: std\.user: unknown placeholder \{refrence\}"):
        TemplateSet.load(typo)


def test_a_record_too_long_to_encode_is_named_by_file_and_line(tmp_path, tokenizer):
    """Audit N-31: an over-long response was located as `<records> [id r1]`."""
    import json

    from nlft.prompts import RecordEncoder
    from nlft.records import RecordError, load_records

    path = tmp_path / "long.jsonl"
    rows = [{"id": "ok", "question": "q", "response": "a", "reference": "#### 1"},
            {"id": "r1", "question": "q", "response": "word " * 300, "reference": "#### 1"}]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(RecordError, match=rf"{path}:line 2 \[id r1\]: field 'response'"):
        RecordEncoder(tokenizer, max_length=64, on_overlong="error").encode_all(load_records(path))
