"""The build's Parquet input pieces, read and validated without Ray."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_ray.build.inputs import (PARTITION_INPUT_BYTES, parquet_pieces, read_and_validate_parquet, slice_row_groups,
                                     user_partitions)
from recsys_ray.build.plan import BuildError
from recsys_ray.config import ValidationConfig
from recsys_ray.io import storage
from recsys_ray.io.formats import InputError
from recsys_ray.stages import batch as batch_stage


def events(n: int, bad_every: int = 0) -> pa.Table:
    return pa.table({
        "user_id": [f"u{i % 7}" for i in range(n)],
        "item_id": [f"i{i % 5}" for i in range(n)],
        "interaction_type": ["teleport" if bad_every and i % bad_every == 0 else "click" for i in range(n)],
        "timestamp": [1_700_000_000 + i for i in range(n)],
    })


@pytest.fixture()
def grouped_file(tmp_path):
    path = tmp_path / "events.parquet"
    pq.write_table(events(1000, bad_every=97), path, row_group_size=100)
    return storage.FileEntry(str(path), path.stat().st_size)


def test_a_large_file_is_split_along_row_groups_with_row_offsets(grouped_file):
    pieces = parquet_pieces(grouped_file, None, piece_bytes=grouped_file.size // 4)
    assert 3 <= len(pieces) <= 6
    groups = [g for p in pieces for g in p["row_groups"]]
    assert groups == list(range(10))
    assert [p["row_offset"] for p in pieces] == [100 * p["row_groups"][0] for p in pieces]


@pytest.fixture()
def one_group_file(tmp_path):
    path = tmp_path / "one_group.parquet"
    pq.write_table(events(1000, bad_every=97), path)
    return storage.FileEntry(str(path), path.stat().st_size)


def test_row_groups_are_cut_into_row_slices_only_up_to_the_cpu_count(one_group_file, grouped_file):
    pieces = slice_row_groups(parquet_pieces(one_group_file, None, piece_bytes=one_group_file.size // 2), 3)
    assert [p["row_groups"] for p in pieces] == [None] * 3
    slices = [p["row_slice"] for p in pieces]
    assert [start for start, _ in slices] == [p["row_offset"] for p in pieces]
    assert sum(length for _, length in slices) == 1000
    assert all(start + length == following for (start, length), (following, _) in zip(slices, slices[1:]))
    # enough pieces for the CPUs already: nothing is decoded twice
    per_group = parquet_pieces(grouped_file, None, piece_bytes=1)
    assert [p["group_rows"] for p in per_group] == [100] * 10
    assert slice_row_groups(per_group, len(per_group)) == per_group
    # more CPUs than row groups: each group is cut, the largest slices first
    sliced = slice_row_groups(per_group, 25)
    assert len(sliced) == 25
    assert sorted({p["row_slice"][1] for p in sliced}) == [33, 34, 50]
    assert [p["row_offset"] for p in sliced] == sorted(p["row_offset"] for p in sliced)


def test_a_row_group_is_cut_into_at_most_four_slices(one_group_file):
    pieces = slice_row_groups(parquet_pieces(one_group_file, None, piece_bytes=one_group_file.size // 2), 64)
    assert [p["row_slice"] for p in pieces] == [[0, 250], [250, 250], [500, 250], [750, 250]]


def test_slices_of_later_row_groups_keep_their_rows_numbered_from_the_start_of_the_file(tmp_path):
    path = tmp_path / "uneven.parquet"
    table = events(1000, bad_every=97)
    start = 0
    with pq.ParquetWriter(path, table.schema) as writer:
        for rows in (7, 0, 600, 393):  # one row group each
            writer.write_table(table.slice(start, rows))
            start += rows
    entry = storage.FileEntry(str(path), path.stat().st_size)
    cfg = ValidationConfig()
    sliced = slice_row_groups(parquet_pieces(entry, None, piece_bytes=1), 11)
    assert any(p["row_slice"] and p["row_offset"] > 7 for p in sliced)
    combined = pa.concat_tables([
        read_and_validate_parquet(pa.Table.from_pylist([p]), dataset="interactions", cfg=cfg, options=None)
        for p in sliced])
    assert batch_stage.rejected_rows(combined).column("row").to_pylist() == list(range(0, 1000, 97))
    assert batch_stage.valid_rows(combined, "interactions").num_rows == 1000 - len(range(0, 1000, 97))


def test_a_piece_of_several_row_groups_is_never_sliced(grouped_file):
    pieces = parquet_pieces(grouped_file, None, piece_bytes=grouped_file.size // 4)
    assert all(p["group_rows"] is None for p in pieces)
    assert slice_row_groups(pieces, 64) == pieces


def test_row_slices_validate_to_the_same_rows_as_the_whole_group(one_group_file):
    cfg = ValidationConfig()
    whole = read_and_validate_parquet(pa.Table.from_pylist(parquet_pieces(one_group_file, None, 10**9)),
                                      dataset="interactions", cfg=cfg, options=None)
    pieces = slice_row_groups(parquet_pieces(one_group_file, None, piece_bytes=one_group_file.size // 2), 3)
    assert len(pieces) == 3
    split = pa.concat_tables([
        read_and_validate_parquet(pa.Table.from_pylist([p]), dataset="interactions", cfg=cfg, options=None)
        for p in pieces])
    assert batch_stage.valid_rows(split, "interactions").equals(batch_stage.valid_rows(whole, "interactions"))
    assert batch_stage.rejected_rows(split).column("row").to_pylist() == list(range(0, 1000, 97))


def test_a_file_within_one_piece_is_read_whole(grouped_file):
    assert parquet_pieces(grouped_file, None, piece_bytes=grouped_file.size) == [
        {"uri": grouped_file.uri, "row_groups": None, "row_offset": 0, "row_slice": None,
         "group_rows": None}]


def test_pieces_validate_to_the_same_rows_as_the_whole_file(grouped_file):
    cfg = ValidationConfig()
    whole = read_and_validate_parquet(pa.Table.from_pylist(parquet_pieces(grouped_file, None, 10**9)),
                                      dataset="interactions", cfg=cfg, options=None)
    pieces = parquet_pieces(grouped_file, None, piece_bytes=grouped_file.size // 4)
    split = pa.concat_tables([
        read_and_validate_parquet(pa.Table.from_pylist([p]), dataset="interactions", cfg=cfg, options=None)
        for p in pieces])
    # each piece lists its valid rows, then its rejected ones
    assert batch_stage.valid_rows(split, "interactions").equals(batch_stage.valid_rows(whole, "interactions"))
    assert batch_stage.rejected_rows(split).equals(batch_stage.rejected_rows(whole))
    rejected = batch_stage.rejected_rows(split)
    # quarantined rows keep their position in the file, whichever piece read them
    assert rejected.column("row").to_pylist() == list(range(0, 1000, 97))
    assert set(rejected.column("reason").to_pylist()) == {"unknown_interaction_type"}
    assert batch_stage.valid_rows(split, "interactions").num_rows == 1000 - len(range(0, 1000, 97))


def test_a_file_with_parquet_magic_but_no_footer_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    with pytest.raises(BuildError, match="not a valid Parquet file"):
        parquet_pieces(storage.FileEntry(str(bad), bad.stat().st_size), None, piece_bytes=8)


def test_a_data_column_named_path_is_just_data(tmp_path):
    table = events(20, bad_every=7).append_column("path", pa.array(["/elsewhere"] * 20))
    file = tmp_path / "with_path.parquet"
    pq.write_table(table, file)
    piece = pa.Table.from_pylist([{"uri": str(file), "row_groups": None, "row_offset": 0, "row_slice": None,
         "group_rows": None}])
    combined = read_and_validate_parquet(piece, dataset="interactions", cfg=ValidationConfig(), options=None)
    rejected = batch_stage.rejected_rows(combined)
    assert rejected.column("row").to_pylist() == [0, 7, 14]
    assert set(rejected.column("source").to_pylist()) == {str(file)}


def test_an_unreadable_piece_names_its_file(tmp_path):
    bad = tmp_path / "small.parquet"
    bad.write_bytes(b"PAR1" + b"\0" * 64 + b"PAR1")
    piece = pa.Table.from_pylist([{"uri": str(bad), "row_groups": None, "row_offset": 0, "row_slice": None,
         "group_rows": None}])
    with pytest.raises(BuildError, match=f"input file {bad} could not be read as Parquet"):
        read_and_validate_parquet(piece, dataset="interactions", cfg=ValidationConfig(), options=None)


def test_a_file_of_another_dataset_is_a_whole_file_error(tmp_path):
    catalog = tmp_path / "items.parquet"
    pq.write_table(pa.table({"item_id": ["i1", "i2"], "title": ["a", "b"]}), catalog)
    piece = pa.Table.from_pylist([{"uri": str(catalog), "row_groups": None, "row_offset": 0, "row_slice": None,
                                   "group_rows": None}])
    with pytest.raises(InputError, match=r"has no column\(s\) \['user_id', 'interaction_type', 'timestamp'\]") as info:
        read_and_validate_parquet(piece, dataset="interactions", cfg=ValidationConfig(), options=None)
    assert info.value.code == "missing_columns"
    assert str(catalog) in info.value.message


def test_user_partitions_grow_with_the_input_in_whole_rounds_of_the_cpus():
    def files(*sizes, suffix="parquet"):
        return [storage.FileEntry(f"/in/part-{n}.{suffix}", size) for n, size in enumerate(sizes)]

    assert user_partitions(files(100), cpus=2) == 2
    assert user_partitions([], cpus=3) == 3
    assert user_partitions(files(PARTITION_INPUT_BYTES * 5), cpus=2) == 6
    assert user_partitions(files(PARTITION_INPUT_BYTES * 5), cpus=16) == 16
    ten_times = files(*[PARTITION_INPUT_BYTES * 5] * 10)
    assert user_partitions(ten_times, cpus=2) == 50 and user_partitions(ten_times, cpus=16) == 64
    assert user_partitions(files(PARTITION_INPUT_BYTES * 80, suffix="csv"), cpus=2) == 10
