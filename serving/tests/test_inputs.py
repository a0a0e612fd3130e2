"""Request conventions and signature validation, without a server."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from serving import inputs
from serving.errors import BadInput
from serving.inputs import merge, parse_input, render, split
from serving.signature import parse_signature

TENSOR = parse_signature(
    {"inputs": '[{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 3]}}]'}
)
COLUMNS = parse_signature(
    {
        "inputs": '[{"type": "double", "name": "x"}, {"type": "double", "name": "y"},'
        ' {"type": "double", "name": "z", "required": false}]',
        "params": '[{"name": "k", "type": "long", "default": 3, "shape": null}]',
    }
)
MIXED = parse_signature({"inputs": '[{"type": "string", "name": "s"}, {"type": "long", "name": "n"}]'})


def parse(body, signature):
    return parse_input(orjson.dumps(body), signature)


def test_a_split_table_in_signature_order_becomes_one_float_matrix():
    item = parse({"dataframe_split": {"columns": ["x", "y", "z"], "data": [[1, 2, 3], [4, 5, 6]]}}, COLUMNS)
    assert item.array.dtype == np.float64 and item.array.shape == (2, 3)
    assert item.columns == ("x", "y", "z")
    assert item.params == {"k": 3}


def test_reordered_and_extra_columns_are_put_in_signature_order():
    body = {"dataframe_split": {"columns": ["extra", "z", "y", "x"], "data": [[9, 3, 2, 1]]}}
    item = parse(body, COLUMNS)
    assert item.array.tolist() == [[1.0, 2.0, 3.0]]


def test_records_may_leave_out_an_optional_column():
    item = parse({"dataframe_records": [{"x": 1, "y": 2}]}, COLUMNS)
    assert item.array[0, :2].tolist() == [1.0, 2.0] and np.isnan(item.array[0, 2])
    assert not item.finite


def test_params_are_checked_against_the_signature():
    assert parse({"inputs": {"x": [1], "y": [2]}, "params": {"k": 5}}, COLUMNS).params == {"k": 5}
    with pytest.raises(BadInput, match="'k' must be long"):
        parse({"inputs": {"x": [1], "y": [2]}, "params": {"k": 1.5}}, COLUMNS)
    with pytest.raises(BadInput, match="Unknown param"):
        parse({"inputs": {"x": [1], "y": [2]}, "params": {"q": 1}}, COLUMNS)


def test_mixed_types_stay_as_named_columns():
    item = parse({"dataframe_records": [{"s": "a", "n": 1}, {"s": "b", "n": 2}]}, MIXED)
    assert item.array is None
    assert item.named["s"].tolist() == ["a", "b"] and item.named["n"].dtype == np.int64


def test_split_tables_of_mixed_columns_read_each_column_once():
    body = {"dataframe_split": {"columns": ["n", "s", "n"], "data": [[1, "a", 7], [2, "b", 8]]}}
    item = parse(body, MIXED)
    assert item.named["n"].tolist() == [1, 2] and item.named["s"].tolist() == ["a", "b"]  # the first 'n'
    # Strings are not certainly finite: a conversion could make "inf" or "nan" of them.
    assert not item.finite
    optional = parse_signature(
        {"inputs": '[{"type": "string", "name": "s"}, {"type": "double", "name": "x", "required": false}]'}
    )
    item = parse({"dataframe_split": {"columns": ["s", "x"], "data": [["a", None], ["b", 1]]}}, optional)
    assert np.isnan(item.named["x"][0]) and item.named["x"][1] == 1.0


TYPED_INPUTS = (
    '[{"type": "double", "name": "x"}, {"type": "string", "name": "s"},'
    ' {"type": "long", "name": "n"}, {"type": "double", "name": "y"}, {"type": "string", "name": "t"}]'
)
TYPED = parse_signature({"inputs": TYPED_INPUTS})


def test_a_split_table_of_mixed_columns_is_converted_a_type_at_a_time():
    body = {
        "dataframe_split": {
            "columns": ["t", "y", "n", "s", "x"],
            "data": [["u", 2.5, 3, "a", 1], ["v", 4, 5, "b", 6]],
        }
    }
    item = parse(body, TYPED)
    assert item.columns == ("x", "s", "n", "y", "t")
    assert list(item.blocks) == [("x", "y"), ("s", "t"), ("n",)]
    assert item.blocks[("x", "y")].tolist() == [[1.0, 2.5], [6.0, 4.0]]
    assert item.blocks[("x", "y")].dtype == np.float64 and item.blocks[("n",)].dtype == np.int64
    assert item.blocks[("s", "t")].dtype == object
    # The named columns are the ones converted column by column, in the signature's order.
    records = {
        "dataframe_records": [
            dict(zip(body["dataframe_split"]["columns"], row, strict=True))
            for row in body["dataframe_split"]["data"]
        ]
    }
    by_column = parse(records, TYPED)
    assert by_column.blocks is None
    assert list(item.named) == list(by_column.named)
    for name, column in by_column.named.items():
        assert item.named[name].dtype == column.dtype and item.named[name].tolist() == column.tolist()
    assert item.block(("y", "x")).tolist() == [[2.5, 1.0], [4.0, 6.0]]
    assert item.block(("t",)).tolist() == [["u"], ["v"]]
    assert item.block(("x", "s")) is None  # two types: the caller stacks the columns


def test_each_order_of_columns_is_worked_out_once_and_answers_as_the_first_time(monkeypatch):
    signature = parse_signature({"inputs": TYPED_INPUTS})
    row = {"x": 1.0, "s": "a", "n": 3, "y": 2.5, "t": "b", "extra": 0}
    orders = [["t", "y", "n", "s", "x"], ["x", "s", "n", "y", "t"], ["extra", "x", "s", "n", "y", "t"]]
    for _ in range(2):
        for columns in orders:
            item = parse(
                {"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}}, signature
            )
            assert item.columns == ("x", "s", "n", "y", "t")
            assert item.blocks[("x", "y")].tolist() == [[1.0, 2.5]]
            assert item.blocks[("s", "t")].tolist() == [["a", "b"]] and item.blocks[("n",)].tolist() == [[3]]
    assert len(signature.layouts) == len(orders)
    # A missing column is refused every time, not only when its order is first seen.
    for _ in range(2):
        with pytest.raises(BadInput, match="Missing required column 'x'"):
            parse(
                {"dataframe_split": {"columns": ["s", "n", "y", "t"], "data": [["a", 3, 2.5, "b"]]}},
                signature,
            )
    # Past the orders a signature keeps, each is worked out afresh, with the same answer.
    monkeypatch.setattr(inputs, "LAYOUTS", len(signature.layouts))
    columns = ["y", "x", "t", "s", "n"]
    for _ in range(2):
        item = parse(
            {"dataframe_split": {"columns": columns, "data": [[row[c] for c in columns]]}}, signature
        )
        assert item.blocks[("x", "y")].tolist() == [[1.0, 2.5]]
    assert tuple(columns) not in signature.layouts


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([[1.0, None, 3, 2.0, "t"]], "'s', row 0: null is not allowed"),
        ([[1.0, "a", 2**64 - 1, 2.0, "t"]], "Column 'n': cannot convert to long"),
        ([[1.0, "a", 3.0, 2.0, "t"]], "'n', row 0: expected long"),
        ([[True, "a", 3, 2.0, "t"]], "'x', row 0: expected double"),
    ],
)
def test_a_value_the_blocks_cannot_hold_is_refused_as_column_by_column(data, message):
    with pytest.raises(BadInput) as error:
        parse({"dataframe_split": {"columns": ["x", "s", "n", "y", "t"], "data": data}}, TYPED)
    assert message in error.value.message


def test_nulls_in_optional_columns_leave_the_table_column_by_column():
    optional = parse_signature(
        {"inputs": '[{"type": "string", "name": "s"}, {"type": "double", "name": "x", "required": false}]'}
    )
    item = parse({"dataframe_split": {"columns": ["s", "x"], "data": [["a", None]]}}, optional)
    assert item.blocks is None and np.isnan(item.named["x"][0])


def test_columns_a_signature_names_twice_are_read_column_by_column():
    # A DataFrame with the labels 1 and "1" is saved with two columns named "1".
    twice = parse_signature({"inputs": '[{"type": "long", "name": "e"}, {"type": "double", "name": "e"}]'})
    item = parse({"dataframe_split": {"columns": ["e"], "data": [[1]]}}, twice)
    assert item.blocks is None and item.columns == ("e",) and item.array.shape == (1, 1)


def test_merged_requests_keep_their_blocks():
    def body(n):
        return {
            "dataframe_split": {
                "columns": ["x", "s", "n", "y", "t"],
                "data": [[n, "a", n, 0.5, "b"]] * (n + 1),
            }
        }

    items = [parse(body(n), TYPED) for n in range(3)]
    assert len({item.batch_key() for item in items}) == 1
    merged = merge(items)
    assert merged.rows == 6 and list(merged.blocks) == [("x", "y"), ("s", "t"), ("n",)]
    assert merged.named["n"].tolist() == [0, 1, 1, 2, 2, 2]
    assert merged.block(("x",)).ravel().tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 2.0]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"dataframe_records": [{"s": "a", "n": "1"}]}, "Column 'n', row 0: expected long, got a string '1'"),
        ({"dataframe_records": [{"s": 1, "n": 1}]}, "Column 's', row 0: expected string"),
        ({"dataframe_records": [{"n": 1}]}, "Missing required column 's'"),
        ({"dataframe_split": {"columns": ["s", "n"], "data": [["a", 1], ["b"]]}}, "Row 1 has 1 value"),
        (
            {"dataframe_split": {"columns": ["s", "n"], "data": [["a", 1], ["b", 2.5]]}},
            "'n', row 1: expected long",
        ),
        (
            {"dataframe_split": {"columns": ["n", "s"], "data": [[True, "a"]]}},
            "'n', row 0: expected long, got",
        ),
        (
            {"dataframe_split": {"columns": ["s", "n"], "data": [[None, 1]]}},
            "'s', row 0: null is not allowed",
        ),
        ({"inputs": {"s": ["a", "b"], "n": [1]}}, "Column 'n' has 1 values"),
    ],
)
def test_column_errors_name_the_column_and_row(body, message):
    with pytest.raises(BadInput) as error:
        parse(body, MIXED)
    assert message in error.value.message


@pytest.mark.parametrize(
    "body",
    [
        {"inputs": [[1, 2, 3]]},
        {"instances": [[1, 2, 3]]},
        {"input_data": [[1, 2, 3]]},
        {"input_data": {"columns": ["a", "b", "c"], "index": [0], "data": [[1, 2, 3]]}},
        {"dataframe_records": [{"a": 1, "b": 2, "c": 3}]},
    ],
)
def test_every_convention_reaches_a_tensor_model(body):
    item = parse(body, TENSOR)
    assert item.array.dtype == np.float32 and item.array.tolist() == [[1.0, 2.0, 3.0]]


def test_tensor_shape_and_type_errors():
    with pytest.raises(BadInput, match=r"shape \(1, 2\); the model expects \(-1, 3\)"):
        parse({"inputs": [[1, 2]]}, TENSOR)
    with pytest.raises(BadInput, match="rectangular"):
        parse({"inputs": [[1, 2, 3], [1]]}, TENSOR)
    with pytest.raises(BadInput, match="numbers"):
        parse({"inputs": [["a", "b", "c"]]}, TENSOR)


def test_bodies_that_are_not_a_convention_are_refused():
    for body, words in (
        (b"[1, 2]", "JSON object"),
        (b'{"inputs": [], "instances": []}', "exactly one"),
        (b'{"inputs": [[1]], "extra": 1}', "Unexpected key"),
        (b"\xff", "not valid JSON"),
    ):
        with pytest.raises(BadInput, match=words):
            parse_input(body, None)


def test_without_a_signature_numbers_become_arrays_and_strings_columns():
    assert parse({"inputs": [[1, 2], [3, 4]]}, None).array.shape == (2, 2)
    item = parse({"dataframe_split": {"columns": ["a", "b"], "data": [["x", 1]]}}, None)
    assert item.named["a"].tolist() == ["x"]


def test_merge_and_split_keep_each_request_rows_in_order():
    items = [parse({"inputs": [[n, n, n]] * (n + 1)}, TENSOR) for n in range(3)]
    assert len({item.batch_key() for item in items}) == 1
    merged = merge(items)
    assert merged.rows == 6
    parts = split(merged.array[:, 0] * 10, [item.rows for item in items])
    assert [p.tolist() for p in parts] == [[0.0], [10.0, 10.0], [20.0, 20.0, 20.0]]
    with pytest.raises(ValueError, match="one row per input row"):
        split(np.zeros(5), [item.rows for item in items])


def test_answers_take_the_shape_of_their_convention():
    azure = parse({"input_data": [[1, 2, 3]]}, TENSOR)
    mlflow = parse({"inputs": [[1, 2, 3]]}, TENSOR)
    assert render(azure, np.array([7])) == b"[7]"
    assert render(mlflow, np.array([7])) == b'{"predictions":[7]}'
    assert render(mlflow, {"a": np.array([1.5])}) == b'{"predictions":{"a":[1.5]}}'
