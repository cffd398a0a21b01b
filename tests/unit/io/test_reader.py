"""The one reader: any format, local (S3 in the integration tests), in chunks numbered from the file's start."""

import json

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from recsys_ray.io import formats, reader
from recsys_ray.io.formats import InputError


def file_events(n: int, bad_every: int = 0) -> pa.Table:
    kinds = ["click" if not bad_every or i % bad_every else "teleport" for i in range(n)]
    return pa.table({
        "user_id": [f"u{i % 13}" for i in range(n)],
        "item_id": [f"i{i % 7}" for i in range(n)],
        "interaction_type": kinds,
        "timestamp": [f"2024-05-01T00:{i % 60:02d}:00Z" for i in range(n)],
        "event_id": [f"e{i}" for i in range(n)],
        "note": [str(i) if i < n - 1 else "text" for i in range(n)],  # an extra column whose type changes late
    })


def write_file(directory, table: pa.Table, fmt: str) -> str:
    path = str(directory / f"input.{fmt}")
    if fmt == "csv":
        pacsv.write_csv(table, path)
    elif fmt == "parquet":
        pq.write_table(table, path, row_group_size=300)
    else:
        with open(path, "w") as out:
            out.write("\n".join(json.dumps(r) for r in table.to_pylist()))
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet", "ndjson"])
def test_chunks_hold_the_same_rows_as_whole_decoding_numbered_from_the_start(tmp_path, fmt):
    path = write_file(tmp_path, file_events(1000), fmt)
    chunks = list(reader.read_file(path, fmt, "interactions", chunk_rows=300))
    if fmt != "ndjson":
        assert len(chunks) > 1
    assert [c.row_offset for c in chunks] == [sum(c.table.num_rows for c in chunks[:i]) for i in range(len(chunks))]
    whole = formats.decode(open(path, "rb").read(), fmt, "interactions")
    combined = pa.concat_tables([c.table for c in chunks])
    for name in ("user_id", "item_id", "interaction_type", "timestamp", "event_id"):
        assert combined.column(name).to_pylist() == whole.column(name).to_pylist()
    in_memory = list(reader.read_data(open(path, "rb").read(), fmt, "interactions", chunk_rows=300))
    assert [(c.row_offset, c.table.num_rows) for c in in_memory] == [(c.row_offset, c.table.num_rows) for c in chunks]


def test_a_file_in_memory_is_decoded_whole_by_default(tmp_path):
    data = open(write_file(tmp_path, file_events(50), "csv"), "rb").read()
    [chunk] = reader.read_data(data, "csv", "interactions")
    assert chunk.row_offset == 0 and chunk.table.equals(formats.decode(data, "csv", "interactions"))


def test_header_only_csv_is_one_empty_chunk(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"user_id,item_id,interaction_type,timestamp\n")
    [chunk] = reader.read_file(str(path), "csv", "interactions")
    assert chunk.table.num_rows == 0 and "timestamp" in chunk.table.column_names


def test_a_parquet_file_without_rows_is_one_empty_chunk(tmp_path):
    path = tmp_path / "none.parquet"
    pq.write_table(file_events(0), path)
    [chunk] = reader.read_file(str(path), "parquet")
    assert chunk.table.num_rows == 0 and chunk.table.schema.names == file_events(0).schema.names


@pytest.mark.parametrize(("content", "fmt", "code"), [
    (b"", "csv", "empty_body"),
    (b"\x00\x01\x02garbage", "csv", "binary_body"),
    (b"item_id,title\n" + b"i,ok\n" * 10 + b"i,\xff\xfe\n", "csv", "invalid_utf8"),
    (b'item_id,title\n"i,unterminated\n', "csv", "invalid_csv"),
    (b"PAR1 not really parquet PAR1", "parquet", "invalid_parquet"),
    (b"not parquet at all", "parquet", "invalid_parquet"),
])
def test_unusable_files_raise_input_errors(tmp_path, content, fmt, code):
    path = tmp_path / "bad"
    path.write_bytes(content)
    with pytest.raises(InputError) as info:
        list(reader.read_file(str(path), fmt, "items"))
    assert info.value.code == code


def test_parquet_errors_name_the_file_when_asked(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=f"^{path} is not a Parquet file"):
        list(reader.read_file(str(path), "parquet", name=str(path)))
    with pytest.raises(InputError, match="^body is not a Parquet file"):
        formats.decode(path.read_bytes(), "parquet")
    with pytest.raises(InputError, match="is not a Parquet file"):
        reader.check_parquet(str(path))
    footless = tmp_path / "footless.parquet"
    footless.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    reader.check_parquet(str(footless))  # the cheap check reads the magic bytes only
    with pytest.raises(InputError, match=f"cannot read Parquet {footless}"):
        reader.parquet_metadata(str(footless), name=str(footless))


@pytest.fixture()
def uneven_groups(tmp_path):
    """A Parquet file of row groups of 7, 0, 600 and 393 rows."""
    path = tmp_path / "uneven.parquet"
    table = file_events(1000)
    start = 0
    with pq.ParquetWriter(path, table.schema) as writer:
        for rows in (7, 0, 600, 393):
            writer.write_table(table.slice(start, rows))
            start += rows
    return str(path), table


def test_a_piece_of_row_groups_is_numbered_from_the_start_of_the_file(uneven_groups):
    path, table = uneven_groups
    whole = reader.read_parquet_piece(path)
    assert whole.row_offset == 0 and whole.table.equals(table)
    later = reader.read_parquet_piece(path, row_groups=[2, 3])
    assert later.row_offset == 7 and later.table.equals(table.slice(7))
    last = reader.read_parquet_piece(path, row_groups=[3], row_slice=(100, 50))
    assert last.row_offset == 707 and last.table.equals(table.slice(707, 50))


def test_chunked_parquet_reads_only_the_rows_asked_for(uneven_groups):
    path, table = uneven_groups
    chunks = list(reader.read_file(path, "parquet", chunk_rows=250))
    assert pa.concat_tables([c.table for c in chunks]).equals(table)
    assert all(c.table.num_rows <= 250 for c in chunks)
