"""Exchange files: each producer's rows of each shard in one file, read back per shard,
named so that a retried producer replaces its own files; through them the rows of a
snapshot split into partitions equal the one-batch reference."""

from __future__ import annotations

import zlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys_ray.build import exchange
from recsys_ray.build.writer import EXCHANGE_DIR
from recsys_ray.io import storage
from recsys_ray import schemas
from recsys_ray.stages import asof, eval_set, features, heavy, training_rows
from recsys_ray.stages.split import timestamp_micros
from tests.unit.stages.test_eval_set import cutoff_us as eval_cutoff_us
from tests.unit.stages.test_eval_set import events as eval_events
from tests.unit.stages.test_examples import EVENTS, POSITIVE, UNIFORM
from tests.unit.stages.test_training_rows import CATALOG, options

LOCAL = storage.StorageOptions()


def partitions(events, key, n):
    of = np.array([zlib.crc32(v.encode()) % n for v in events.column(key).to_pylist()])
    return [events.filter(pa.array(of == b)) for b in range(n)]


def exchange_files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.parquet"))


@pytest.mark.parametrize("shards_per_file", [0, 1, 2])
def test_each_shard_of_a_producer_is_row_groups_of_one_file_per_run_of_shards(tmp_path, shards_per_file):
    opts = options(shards={"train": 3, "test": 2})
    rows = training_rows.user_rows(EVENTS, opts)
    parts = exchange.write_parts(rows, kind="users", producer="p0", out=str(tmp_path),
                                 options=LOCAL, shards_per_file=shards_per_file)
    assert parts.schema == exchange.PARTS
    assert sum(parts["rows"].to_pylist()) == rows.num_rows
    keys = set(zip(rows["split"].to_pylist(), rows["_shard"].to_pylist()))
    assert set(zip(parts["split"].to_pylist(), parts["shard"].to_pylist())) == keys
    assert all(path.startswith(f"{EXCHANGE_DIR}/users/") for path in parts["path"].to_pylist())
    # one file per split and run of consecutive shards
    runs = {(split, shard // shards_per_file if shards_per_file else 0) for split, shard in keys}
    assert len(set(parts["path"].to_pylist())) == len(runs) == len(exchange_files(tmp_path))
    for part in parts.to_pylist():
        back = exchange.read_parts([part], opts.user_rows_schema, str(tmp_path), LOCAL)
        assert back.num_rows == part["rows"]
        assert set(back["split"].to_pylist()) == {part["split"]} and set(back["_shard"].to_pylist()) == {part["shard"]}
    for path in set(parts["path"].to_pylist()):
        in_file = parts.filter(pc.equal(parts["path"], path)).sort_by("row_group")
        assert pq.ParquetFile(tmp_path / path).metadata.num_rows == sum(in_file["rows"].to_pylist())
        starts = in_file["row_group"].to_pylist()
        assert starts[0] == 0 and starts[1:] == list(np.cumsum(in_file["row_groups"].to_pylist())[:-1])
    assert exchange.read_parts([], opts.user_rows_schema, str(tmp_path), LOCAL).num_rows == 0


def test_a_piece_larger_than_a_row_group_spans_several(tmp_path, monkeypatch):
    monkeypatch.setattr(exchange, "ROW_GROUP_ROWS", 3)
    rows = pa.table({"split": ["train"] * 7 + ["train"] * 2, "_shard": pa.array([0] * 7 + [1] * 2, pa.int32()),
                     "v": list(range(9))})
    parts = exchange.write_parts(rows, kind="users", producer="p", out=str(tmp_path), options=LOCAL)
    assert parts.select(["shard", "rows", "row_group", "row_groups"]).to_pylist() == [
        {"shard": 0, "rows": 7, "row_group": 0, "row_groups": 3},
        {"shard": 1, "rows": 2, "row_group": 3, "row_groups": 1}]
    schema = rows.schema
    assert exchange.read_parts([parts.to_pylist()[0]], schema, str(tmp_path), LOCAL)["v"].to_pylist() == list(range(7))
    assert exchange.read_parts([parts.to_pylist()[1]], schema, str(tmp_path), LOCAL)["v"].to_pylist() == [7, 8]


def test_shards_per_file_gives_files_of_about_the_target_rows():
    assert exchange.shards_per_file(1_000_000, 1) == 1
    assert exchange.shards_per_file(1_000_000, 10) == 3  # 100,000 rows per producer and shard
    per_piece = 1_000_000 / 1_280
    assert exchange.shards_per_file(1_000_000, 1_280) == int(np.ceil(exchange.EXCHANGE_FILE_ROWS / per_piece))
    assert exchange.shards_per_file(0, 4) == exchange.EXCHANGE_FILE_ROWS  # no rows expected: one file per split


def test_shard_files_are_deleted_once_every_shard_reading_them_is_written(tmp_path):
    out = str(tmp_path)
    for name in ("a", "b", "c"):
        (tmp_path / name).write_bytes(b"x")
    piece = lambda path: {"path": path, "row_group": 0, "row_groups": 1}  # noqa: E731
    plan = [{"split": "train", "shard": 0, "users": [piece("a")], "items": [piece("b")], "eval": [], "item_inputs": [],
             "catalog": []},
            {"split": "train", "shard": 1, "users": [piece("a")], "items": [piece("c")], "eval": [], "item_inputs": [],
             "catalog": []}]
    files = exchange.ShardFiles(plan)
    assert files.remaining == 3
    done = lambda shard: pa.table({"split": ["train"], "shard": pa.array([shard], pa.int32())})  # noqa: E731
    files.written(done(0), out, LOCAL)
    assert not (tmp_path / "b").exists() and (tmp_path / "a").exists() and files.remaining == 2
    files.written(done(0), out, LOCAL)  # a shard reported twice is counted once
    assert (tmp_path / "a").exists()
    files.written(done(1), out, LOCAL)
    assert not (tmp_path / "a").exists() and not (tmp_path / "c").exists() and files.remaining == 0


def test_a_retried_producer_replaces_its_files_and_partitions_never_share_names(tmp_path):
    opts = options()
    first, second = partitions(EVENTS, "user_id", 2)
    written = exchange.user_row_parts(first, options=opts, out=str(tmp_path), storage_options=LOCAL)
    before = exchange_files(tmp_path)
    again = exchange.user_row_parts(first, options=opts, out=str(tmp_path), storage_options=LOCAL)
    assert again.equals(written) and exchange_files(tmp_path) == before
    other = exchange.user_row_parts(second, options=opts, out=str(tmp_path), storage_options=LOCAL)
    assert not set(other["path"].to_pylist()) & set(written["path"].to_pylist())
    assert exchange.producer_name(first.select(["user_id"])) != exchange.producer_name(second.select(["user_id"]))
    assert exchange.user_row_parts(first.slice(0, 0), options=opts, out=str(tmp_path),
                                   storage_options=LOCAL).num_rows == 0


def test_producer_names_come_from_the_smallest_key_of_every_column():
    keys = pa.table({"item_id": ["b", "a", "a"], "_slice": pa.array([0, 2, 1], pa.int32())})
    same_smallest = pa.table({"item_id": ["a", "c"], "_slice": pa.array([1, 0], pa.int32())})
    other_slice = pa.table({"item_id": ["a"], "_slice": pa.array([2], pa.int32())})
    assert exchange.producer_name(keys) == exchange.producer_name(same_smallest)
    assert exchange.producer_name(keys) != exchange.producer_name(other_slice)


def test_each_item_partition_reads_the_catalog_rows_of_its_items(tmp_path):
    catalog = pa.table({"item_id": [f"i{n:02d}" for n in range(40)], "title": ["t"] * 40,
                        "category": [f"c{n % 3}" for n in range(40)]}).cast(
        pa.schema([schemas.ITEMS.field(n) for n in ("item_id", "title", "category")]))
    catalog = training_rows.padded(catalog, schemas.ITEMS)
    slices = ((0, 100, 200, 300),)  # i07 is heavy: four slices after its first
    heavy_items = heavy.HeavyItems(item_ids=("i07",), starts=slices)
    parts = exchange.write_catalog_parts(catalog, 3, heavy_items, str(tmp_path), LOCAL)
    assert set(parts["split"].to_pylist()) == {"items"} and len(set(parts["path"].to_pylist())) == 1
    ids = catalog["item_id"]
    home = exchange.item_partition_of(ids, pa.array(np.zeros(len(ids), np.int32)), 3)
    heavy_homes = set(exchange.item_partition_of(pa.array(["i07"] * 5), pa.array(np.arange(5, dtype=np.int32)),
                                                 3).tolist())
    for part in parts.to_pylist():
        rows = exchange.read_parts([part], exchange.CATALOG_COLUMNS, str(tmp_path), LOCAL)
        expected = {i for i, p in zip(ids.to_pylist(), home.tolist()) if p == part["shard"]}
        if part["shard"] in heavy_homes:
            expected.add("i07")
        assert sorted(rows["item_id"].to_pylist()) == sorted(expected)  # each item once
    assert exchange.write_catalog_parts(None, 3, heavy_items, str(tmp_path), LOCAL).num_rows == 0


def test_shard_plan_groups_files_by_shard_in_order():
    parts = pa.table({"kind": ["items", "users", "users", "users"], "split": ["train", "train", "test", "train"],
                      "shard": pa.array([1, 1, 0, 0], pa.int32()), "path": ["c", "b", "x", "a"],
                      "rows": pa.array([1, 2, 3, 4], pa.int64()), "row_group": pa.array([0, 1, 2, 3], pa.int32()),
                      "row_groups": pa.array([1, 1, 1, 1], pa.int32())}, schema=exchange.PARTS)
    piece = lambda path, group: {"path": path, "row_group": group, "row_groups": 1}  # noqa: E731
    assert exchange.shard_plan(parts) == [
        {"split": "test", "shard": 0, "users": [piece("x", 2)], "items": [], "eval": [], "item_inputs": [],
         "catalog": []},
        {"split": "train", "shard": 0, "users": [piece("a", 3)], "items": [], "eval": [], "item_inputs": [],
         "catalog": []},
        {"split": "train", "shard": 1, "users": [piece("b", 1)], "items": [piece("c", 0)], "eval": [],
         "item_inputs": [], "catalog": []},
    ]


@pytest.mark.parametrize("feature_time", ["event", "cutoff"])
def test_shards_from_exchange_files_equal_the_one_batch_rows(tmp_path, feature_time):
    opts = options(feature_time, shards={"train": 3, "test": 2})
    out = str(tmp_path)
    user_parts = partitions(EVENTS, "user_id", 3)
    item_partitions = 2 if feature_time == "event" else 0
    metas = [exchange.user_row_parts(p, options=opts, out=out, storage_options=LOCAL,
                                     item_partitions=item_partitions, shards_per_file=2) for p in user_parts]
    item_side = None
    if feature_time == "event":
        first_seen = np.sort(timestamp_micros(asof.user_first_seen(EVENTS).rename_columns(["user_id", "timestamp"])))
        inputs = pa.concat_tables(metas).filter(pc.equal(pa.concat_tables(metas)["kind"], exchange.ITEM_INPUTS))
        catalog_parts = exchange.write_catalog_parts(CATALOG, 2, opts.heavy_items, out, LOCAL)
        item_plan = exchange.shard_plan(pa.concat_tables([inputs, catalog_parts]))
        assert {entry["split"] for entry in item_plan} == {"items"} and len(item_plan) == 2
        assert all(entry[exchange.CATALOG] for entry in item_plan)
        item_metas = [exchange.item_partition_parts(pa.Table.from_pylist([entry]), windows=opts.windows,
                                                    user_first_seen=first_seen,
                                                    vocabularies=opts.vocabularies, carry=None, out=out,
                                                    storage_options=LOCAL, shards_per_file=2)
                      for entry in item_plan]
        for path in inputs["path"].to_pylist() + catalog_parts["path"].to_pylist():
            storage.delete(storage.join(out, path), LOCAL)
        metas = [m.filter(pc.invert(pc.equal(m["kind"], exchange.ITEM_INPUTS))) for m in metas] + item_metas
    else:  # the frozen table of item features as of the cutoff
        partials = training_rows.item_partials_for_partition(EVENTS, windows=opts.windows, **opts.split_kwargs)
        train_users = training_rows.user_features_at_cutoff(EVENTS, windows=(), history=0,
                                                            **opts.split_kwargs).num_rows
        item_side = training_rows.indexed_item_side(training_rows.item_side_at_cutoff(
            features.sum_item_partials(partials), train_users, CATALOG, opts.windows), opts.vocabularies)
    plan = exchange.shard_plan(pa.concat_tables(metas))
    files = exchange.ShardFiles(plan)
    written, metas = [], []
    for position, entry in enumerate(plan):
        meta = exchange.write_shard(pa.Table.from_pylist([entry]), out, LOCAL, opts, item_side)
        assert meta.schema == exchange.SHARD_META
        # a retried writer finds its files and writes the same shard
        assert exchange.write_shard(pa.Table.from_pylist([entry]), out, LOCAL, opts, item_side).equals(meta)
        files.written(meta, out, LOCAL)  # freed once no shard still to be written reads them
        still_read = {piece["path"] for later in plan[position + 1:] for piece in later["users"] + later["items"]}
        for piece in entry["users"] + entry["items"]:
            assert (tmp_path / piece["path"]).exists() == (piece["path"] in still_read)
        assert all((tmp_path / path).exists() for path in still_read)  # later shards keep theirs
        written.append(storage.read_table(storage.join(out, meta["path"][0].as_py()), LOCAL))
        metas.append(meta)
    assert files.remaining == 0
    assert not exchange_files(tmp_path / EXCHANGE_DIR)
    result = pa.concat_tables(written)
    assert result.equals(training_rows.one_batch_rows(EVENTS, CATALOG, opts))
    assert pc.sum(pc.equal(result["label"], 1.0)).as_py() > 0
    meta = pa.concat_tables(metas)
    assert meta["rows"].to_pylist() == [t.num_rows for t in written]
    assert meta["positives"].to_pylist() == [pc.sum(t["label"]).as_py() for t in written]


def test_eval_set_in_user_ranges_equals_the_one_batch_set_in_user_order(tmp_path):
    rng = np.random.default_rng(5)
    rows = [(f"u{rng.integers(40):02d}", f"i{rng.integers(40):02d}", str(rng.choice(["view", *POSITIVE])),
             int(rng.integers(0, 60))) for _ in range(400)]
    events = eval_events(rows)
    eval_options = {"cutoff_us": eval_cutoff_us(30), "strategy": "time", "positive_types": POSITIVE,
                    "candidates": UNIFORM, "negatives": 4, "seed": 7}
    whole = eval_set.build_eval_set(events, **eval_options)
    assert whole.num_rows >= 10
    out = str(tmp_path)
    parts = partitions(events, "user_id", 3)
    samples = pa.concat_tables([eval_set.user_sample(p, size=4) for p in parts])
    bounds = eval_set.range_bounds(samples, 3)
    assert bounds
    metas = [exchange.eval_row_parts(p, eval_options=eval_options, bounds=bounds, out=out, storage_options=LOCAL)
             for p in parts]
    plan = exchange.shard_plan(pa.concat_tables(metas))
    assert {entry["split"] for entry in plan} == {"eval"} and all(entry["eval"] for entry in plan)
    written = [exchange.write_eval_file(pa.Table.from_pylist([entry]), out, LOCAL) for entry in plan]
    files = exchange.ShardFiles(plan)
    for meta in written:
        files.written(meta, out, LOCAL)
    assert all(not path.startswith(EXCHANGE_DIR) for path in exchange_files(tmp_path))
    files = sorted(tmp_path.glob("eval/*.parquet"))
    assert [f.name for f in files] == [f"part-{entry['shard']:05d}.parquet" for entry in plan]
    assert sum(meta.column("users")[0].as_py() for meta in written) == whole.num_rows
    assert pa.concat_tables([pq.read_table(f) for f in files]).equals(whole)


def test_item_inputs_meet_by_item_and_slice_whatever_their_user_partition(tmp_path):
    opts = options("event")
    out = str(tmp_path)
    metas = pa.concat_tables([exchange.user_row_parts(p, options=opts, out=out, storage_options=LOCAL,
                                                      item_partitions=3) for p in partitions(EVENTS, "user_id", 3)])
    inputs = metas.filter(pc.equal(metas["kind"], exchange.ITEM_INPUTS))
    assert set(inputs["split"].to_pylist()) == {"items"}
    expected = pa.concat_tables([training_rows.item_events(EVENTS), training_rows.item_queries(EVENTS, opts)])
    assert sum(inputs["rows"].to_pylist()) == expected.num_rows
    seen: dict[str, int] = {}
    for entry in exchange.shard_plan(inputs):
        rows = exchange.read_parts(entry[exchange.ITEM_INPUTS], training_rows.ITEM_SHUFFLE, out, LOCAL)
        assert set(exchange.item_partition_of(rows["item_id"], rows["_slice"], 3).tolist()) == {entry["shard"]}
        for item in rows["item_id"].to_pylist():
            assert seen.setdefault(item, entry["shard"]) == entry["shard"]
    # the same (item, slice) always goes to the same partition, and slices of one item may part
    ids = pa.array(["i1", "i1", "i2", "i1"])
    assert list(exchange.item_partition_of(ids, pa.array([0, 0, 0, 0], pa.int32()), 5)) == \
        list(exchange.item_partition_of(ids, pa.array([None, 0, None, 0], pa.int32()), 5))
    spread = exchange.item_partition_of(pa.array(["hot"] * 40), pa.array(range(40), pa.int32()), 4)
    assert len(set(spread.tolist())) > 1
