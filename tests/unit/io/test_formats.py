import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray.io import formats
from recsys_ray.io.formats import InputError


def test_csv_keeps_contract_columns_as_text():
    table = formats.decode(b"user_id,item_id,interaction_type,timestamp,rating\n1,2,view,1704067200,\n",
                           "csv", "interactions")
    assert table.schema.field("user_id").type == pa.string()
    assert table.column("timestamp").to_pylist() == ["1704067200"]
    assert table.column("rating").to_pylist() == [None]


def test_json_array_with_mixed_value_types():
    body = json.dumps([{"user_id": "u", "timestamp": 1704067200}, {"user_id": 5, "timestamp": "2024-01-01"}])
    table = formats.decode(body.encode(), "json", "interactions")
    assert table.column("timestamp").to_pylist() == ["1704067200", "2024-01-01"]
    assert table.num_rows == 2


def test_ndjson_fast_and_careful_paths_agree():
    lines = b'{"user_id": "u", "item_id": "i"}\n{"user_id": "v", "item_id": "j"}\n'
    assert formats.decode(lines, "ndjson", "interactions").column("user_id").to_pylist() == ["u", "v"]
    mixed = b'{"user_id": "u", "timestamp": 1}\n{"user_id": "v", "timestamp": "x"}\n'
    assert formats.decode(mixed, "ndjson", "interactions").column("timestamp").to_pylist() == ["1", "x"]


@pytest.mark.parametrize(
    "body,fmt,code",
    [
        (b'{"user_id": "u"}', "json", "expected_array"),
        (b'[{"user_id": "u"}', "json", "invalid_json"),
        (b"[1, 2]", "json", "expected_object"),
        (b'\xff\xfe[{"a": 1}]', "json", "invalid_utf8"),
        (b"", "csv", "empty_body"),
        (b"\x00\x01\x02garbage", "csv", "binary_body"),
        (b"not parquet at all", "parquet", "invalid_parquet"),
        (b'{"a": 1}\nnot json\n', "ndjson", "invalid_json"),
        (b'{"a": 1}\n[1]\n', "ndjson", "expected_object"),
    ],
)
def test_whole_input_errors(body, fmt, code):
    with pytest.raises(InputError) as err:
        formats.decode(body, fmt, "interactions")
    assert err.value.code == code


def test_parquet_round_trip():
    table = pa.table({"user_id": ["u"], "item_id": ["i"]})
    assert formats.decode(formats.encode_parquet(table), "parquet").equals(table)


def test_format_detection():
    assert formats.format_from_content_type("text/csv; charset=utf-8") == "csv"
    assert formats.format_from_content_type("application/vnd.apache.parquet") == "parquet"
    assert formats.format_from_path("s3://b/x/part.NDJSON") == "ndjson"
    assert formats.format_from_path("data.bin") is None


@pytest.mark.parametrize("decode, body", [
    (formats.decode_json, b'[{"user_id": "u\\udc00", "item_id": "i"}]'),
    (formats.decode_ndjson, b'{"user_id": "u", "item_id": "i"}\n{"user_id": "u\\ud800x", "item_id": 3}\n'),
])
def test_lone_surrogate_escape_is_invalid_text_not_a_crash(decode, body):
    with pytest.raises(InputError) as info:
        decode(body, "interactions")
    assert info.value.code == "invalid_utf8"


def test_a_surrogate_pair_is_one_character():
    table = formats.decode_json(b'[{"user_id": "\\ud83d\\ude00", "item_id": "i"}]', "interactions")
    assert table.column("user_id").to_pylist() == ["\U0001f600"]



def test_parquet_of_consecutive_tables_keeps_order_and_row_groups():
    schema = pa.schema([("user_id", pa.string()), ("n", pa.int64())])
    parts = [pa.table({"user_id": [f"u{i}" for i in range(s, s + 3)], "n": list(range(s, s + 3))}, schema=schema)
             for s in (0, 3, 6)]
    data = _written(iter(parts), schema)
    assert formats.decode(data, "parquet").equals(pa.concat_tables(parts))
    assert pq.ParquetFile(pa.BufferReader(data)).metadata.num_row_groups == 3
    empty = _written([schema.empty_table()], schema)
    assert formats.decode(empty, "parquet").schema == schema


def _written(tables, schema, **kwargs) -> bytes:
    sink = pa.BufferOutputStream()
    formats.write_parquet(sink, tables, schema, **kwargs)
    return sink.getvalue().to_pybytes()


def test_a_transient_parquet_file_has_no_statistics_and_reads_back_the_same():
    table = pa.table({"user_id": ["u1", "u2", "u1"] * 50, "history": [["a", "b"], [], None] * 50})
    transient = _written([table], table.schema, compression="lz4", transient=True)
    assert formats.decode(transient, "parquet").equals(table)
    column = pq.ParquetFile(pa.BufferReader(transient)).metadata.row_group(0).column(0)
    assert column.statistics is None
    kept = pq.ParquetFile(pa.BufferReader(_written([table], table.schema))).metadata.row_group(0).column(0)
    assert kept.statistics is not None


def test_input_errors_survive_pickling():
    """They are raised in Ray tasks and re-raised in the driver."""
    import pickle

    error = pickle.loads(pickle.dumps(formats.InputError("missing_columns", "no user_id", {"missing": ["user_id"]})))
    assert (error.code, error.message, error.details) == ("missing_columns", "no user_id", {"missing": ["user_id"]})
@pytest.mark.parametrize("fmt, body", [
    ("json", b'[{"user_id": "u", "item_id": "i"}]'),
    ("json", b'{"user_id": "u", "item_id": "i"}\n{"user_id": "v", "item_id": "j"}\n'),
    ("ndjson", b'{"user_id": "u", "item_id": "i"}\n'),
    ("csv", b"user_id,item_id\nu,i\n"),
])
def test_a_utf8_byte_order_mark_is_ignored_in_every_text_format(fmt, body):
    table = formats.decode(b"\xef\xbb\xbf" + body, fmt, "interactions")
    assert table.column("user_id").to_pylist()[0] == "u"
    assert table.equals(formats.decode(body, fmt, "interactions"))


@pytest.mark.parametrize("fmt, body", [
    ("ndjson", b'{"user_id": "u"}\n' * 6),
    ("json", b"[" + b",".join([b'{"user_id": "u"}'] * 6) + b"]"),
    ("json", b'{"user_id": "u"}\n' * 6),
    ("csv", b"user_id\n" + b"u\n" * 6),
])
def test_more_rows_than_max_rows_is_too_many_rows(fmt, body):
    assert formats.decode(body, fmt, "interactions", max_rows=6).num_rows == 6
    with pytest.raises(InputError) as err:
        formats.decode(body, fmt, "interactions", max_rows=5)
    assert err.value.code == "too_many_rows" and err.value.details == {"limit": 5}


def test_the_row_limit_is_found_before_the_body_is_parsed():
    # Rows past the limit are never parsed: the invalid UTF-8 and JSON after them are not reported.
    body = b"{}\n" * 20 + b"\xff\xfe not json at all"
    for fmt in ("ndjson", "json"):
        with pytest.raises(InputError) as err:
            formats.decode(body, fmt, "interactions", max_rows=10)
        assert err.value.code == "too_many_rows"
