"""How the gateway decides that a mirrored answer agrees with the live one (serving/gateway/compare.py)."""

import orjson

from serving.gateway.compare import Body, ComparePolicy, compare, compile_policy

POLICY = ComparePolicy()


def _compare(live, shadow, policy=POLICY, live_status=200, shadow_status=200):
    return compare(
        live_status, Body(orjson.dumps(live), 1024), shadow_status, Body(orjson.dumps(shadow), 1024), policy
    )


def test_numbers_agree_within_the_relative_tolerance_and_not_beyond():
    assert _compare([1.0, 2.0], [1.0 + 1e-9, 2.0]) is None
    assert _compare([1.0], [1.001]) == "$[0]: 1.0 != 1.001"
    assert _compare([1.0], [1.001], ComparePolicy(rtol=0.01)) is None
    assert _compare({"p": 0.0}, {"p": 1e-9}) == "$.p: 0.0 != 1e-09"
    assert _compare({"p": 0.0}, {"p": 1e-9}, ComparePolicy(atol=1e-6)) is None
    assert _compare([1], [1.0]) is None, "an integer and the same float agree"


def test_labels_strings_and_structure_must_match_exactly():
    assert _compare({"label": "cat"}, {"label": "Cat"}) == "$.label: 'cat' != 'Cat'"
    assert _compare({"label": True}, {"label": 1}) is not None, "a boolean is not a number"
    assert _compare([1, 2], [1, 2, 3]) == "$: 2 items != 3 items"
    assert _compare({"a": 1}, {"a": 1, "b": 2}).startswith("$: keys differ")
    assert _compare({"a": 1, "b": 2}, {"b": 2, "a": 1}) is None, "key order does not matter"


def test_statuses_come_first_and_non_json_is_compared_byte_for_byte():
    assert _compare([1], [1], shadow_status=500) == "status 200 != 500"
    assert compare(200, Body(b"ok", 10), 200, Body(b"ok", 10), POLICY) is None
    assert compare(200, Body(b"ok", 10), 200, Body(b"OK", 10), POLICY) == "bodies differ"


def test_answers_over_the_cap_are_kept_as_digests_and_compared_exactly():
    big = b"[" + b"1," * 100 + b"1]"
    assert Body(big, 16).data is None
    assert compare(200, Body(big, 16), 200, Body(big, 16), POLICY) is None
    assert compare(200, Body(big, 16), 200, Body(big.replace(b"1]", b"2]"), 16), POLICY) == "bodies differ"
    assert compare(200, Body(b"[1]", 16), 200, Body(big, 16), POLICY).startswith("body of 3 bytes")


def test_a_malformed_policy_falls_back_to_the_defaults_field_by_field():
    assert compile_policy(None) == POLICY
    policy = compile_policy({"rtol": "lots", "sample_rate": 0.25, "max_body_bytes": -1})
    assert policy == ComparePolicy(sample_rate=0.25)
